#include "data/unicode_nfc.h"

#include "data/utf8.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <vector>

namespace liger::data::unicode {

namespace {

struct CccRange {
  char32_t first, last;
  uint8_t ccc;
};
struct Decomposition {
  char32_t cp;
  uint16_t offset;
  uint8_t length;
};
struct Composition {
  char32_t first, second, composite;
};

#include "data/unicode_nfc_tables.inc"

// Hangul syllables: S = SBase + (L * VCount + V) * TCount + T.
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

uint8_t ccc(char32_t cp) {
  if (cp < 0x300) return 0;
  const auto it =
      std::upper_bound(std::begin(kCccRanges), std::end(kCccRanges), cp,
                       [](char32_t value, const CccRange& range) { return value < range.first; });
  if (it == std::begin(kCccRanges)) return 0;
  const CccRange& range = *std::prev(it);
  return cp <= range.last ? range.ccc : 0;
}

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t index = cp - kSBase;
    out.push_back(kLBase + index / kNCount);
    out.push_back(kVBase + (index % kNCount) / kTCount);
    if (index % kTCount != 0) out.push_back(kTBase + index % kTCount);
    return;
  }
  const auto it =
      std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                       [](const Decomposition& d, char32_t value) { return d.cp < value; });
  if (it != std::end(kDecompositions) && it->cp == cp) {
    out.insert(out.end(), kDecompositionData + it->offset,
               kDecompositionData + it->offset + it->length);
  } else {
    out.push_back(cp);
  }
}

// The primary composite of (first, second), or 0.
char32_t compose(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase &&
      second < kVBase + kVCount) {
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  }
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 &&
      second > kTBase && second < kTBase + kTCount) {
    return first + (second - kTBase);
  }
  const auto it = std::lower_bound(
      std::begin(kCompositions), std::end(kCompositions), Composition{first, second, 0},
      [](const Composition& a, const Composition& b) {
        return a.first != b.first ? a.first < b.first : a.second < b.second;
      });
  if (it != std::end(kCompositions) && it->first == first && it->second == second)
    return it->composite;
  return 0;
}

}  // namespace

std::string nfc(std::string_view text) {
  if (std::all_of(text.begin(), text.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
    return std::string(text);
  }
  // 1. Full canonical decomposition.
  std::vector<char32_t> cps;
  cps.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    size_t length = 0;
    decompose(utf8::decode_at(text, pos, &length), cps);
    pos += length;
  }
  // 2. Canonical ordering: stable sort of each run of non-starters by class.
  for (size_t i = 0; i < cps.size();) {
    if (ccc(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < cps.size() && ccc(cps[end]) != 0) ++end;
    std::stable_sort(cps.begin() + i, cps.begin() + end,
                     [](char32_t a, char32_t b) { return ccc(a) < ccc(b); });
    i = end;
  }
  // 3. Canonical composition: a character joins the last starter unless a
  // character between them has class 0 or a class not below its own.
  std::vector<char32_t> out;
  out.reserve(cps.size());
  std::ptrdiff_t starter = -1;
  for (const char32_t cp : cps) {
    const uint8_t cls = ccc(cp);
    if (starter >= 0) {
      const bool adjacent = static_cast<std::ptrdiff_t>(out.size()) - 1 == starter;
      const uint8_t last = ccc(out.back());
      if (adjacent || (last != 0 && last < cls)) {
        const char32_t composite = compose(out[starter], cp);
        if (composite != 0) {
          out[starter] = composite;
          continue;
        }
      }
    }
    if (cls == 0) starter = static_cast<std::ptrdiff_t>(out.size());
    out.push_back(cp);
  }
  std::string result;
  result.reserve(text.size());
  for (const char32_t cp : out) utf8::append(result, cp);
  return result;
}

}  // namespace liger::data::unicode
