// Anchor translation unit that owns the shared precompiled header.
namespace liger {
int pch_anchor = 0;
}
