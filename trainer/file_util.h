// File-system helpers that must not go through std::filesystem::remove_all:
// the torch wheel's libtorch.so exports its own copy of several
// std::filesystem functions, and calling remove_all through it crashes
// (seen with torch 2.11 + GCC 12). POSIX calls have no such clash.
#pragma once

#include <string>

namespace liger::trainer {

// Deletes `path` and everything under it; a missing path is not an error.
// Throws std::runtime_error naming the path when something cannot be removed.
void remove_tree(const std::string& path);

}  // namespace liger::trainer
