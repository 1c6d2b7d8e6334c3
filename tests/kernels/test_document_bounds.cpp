// The document bounds of the flash attention kernels
// (kernels/cuda/document_bounds.h), on the CPU: for packed batches, ids in
// any order, one document and all-distinct ids, no position may see a key
// (or be seen by a query) outside its segment's bounds, and for packed
// batches the bounds are exactly the segments of the documents a segment
// touches (so the kernels walk no more tiles than the mask leaves).
#include "kernels/cuda/document_bounds.h"
#include "tests/catch.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

using liger::cuda_kernels::document_segment_bounds;
using liger::cuda_kernels::kDocumentSegment;

namespace {

struct Bounds {
  std::vector<int64_t> first, last;
};

// The ranges the kernel fills (min, max id per segment), then the bounds.
Bounds bounds_of(const std::vector<int64_t>& ids) {
  const auto t = static_cast<int64_t>(ids.size());
  const int64_t segments = (t + kDocumentSegment - 1) / kDocumentSegment;
  std::vector<int64_t> ranges(2 * segments);
  for (int64_t s = 0; s < segments; ++s) {
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (int64_t p = s * kDocumentSegment; p < std::min(t, (s + 1) * kDocumentSegment); ++p) {
      lo = std::min(lo, ids[p]);
      hi = std::max(hi, ids[p]);
    }
    ranges[2 * s] = lo;
    ranges[2 * s + 1] = hi;
  }
  Bounds b{std::vector<int64_t>(segments), std::vector<int64_t>(segments)};
  for (int64_t s = 0; s < segments; ++s) {
    document_segment_bounds(ranges.data(), segments, s, b.first[s], b.last[s]);
  }
  return b;
}

// Every pair of positions with the same id lies within each other's bounds.
void check_covers(const std::string& what, const std::vector<int64_t>& ids) {
  INFO(what);
  const Bounds b = bounds_of(ids);
  const auto t = static_cast<int64_t>(ids.size());
  int64_t bad = 0;
  for (int64_t p = 0; p < t; ++p) {
    const int64_t s = p / kDocumentSegment;
    CHECK(b.first[s] <= s);
    CHECK(b.last[s] >= s);
    for (int64_t k = 0; k < t; ++k) {
      if (ids[k] != ids[p]) continue;
      const int64_t sk = k / kDocumentSegment;
      if (sk < b.first[s] || sk > b.last[s]) ++bad;
    }
  }
  CHECK(bad == 0);
}

// Packed documents of the given lengths, ids 0, 1, 2, ...
std::vector<int64_t> packed(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> ids;
  for (size_t d = 0; d < lengths.size(); ++d) ids.insert(ids.end(), lengths[d], int64_t(d));
  return ids;
}

}  // namespace

TEST_CASE("document bounds cover every visible pair, for any ids") {
  check_covers("packed, documents of length 1", packed({37, 1, 60, 1, 1, 70}));
  check_covers("one document", packed({203}));
  check_covers("a short row", packed({5}));
  std::vector<int64_t> distinct(100);
  for (int64_t i = 0; i < 100; ++i) distinct[i] = i;
  check_covers("every position its own document", distinct);
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<int64_t> ids(1 + rng() % 300);
    for (int64_t& id : ids) id = static_cast<int64_t>(rng() % 6);  // ids in any order, repeated
    check_covers("random ids, trial " + std::to_string(trial), ids);
  }
}

TEST_CASE("document bounds of packed batches are the segments of the documents touched") {
  // Documents [0, 37), [37, 38), [38, 98), [98, 99), [99, 100), [100, 170).
  const std::vector<int64_t> ids = packed({37, 1, 60, 1, 1, 70});
  const Bounds b = bounds_of(ids);
  const auto t = static_cast<int64_t>(ids.size());
  for (int64_t s = 0; s < static_cast<int64_t>(b.first.size()); ++s) {
    // The first position of the document of the segment's first position,
    // the last position of the document of its last position.
    const int64_t begin = s * kDocumentSegment;
    const int64_t end = std::min(t, begin + kDocumentSegment) - 1;
    int64_t doc_begin = begin, doc_end = end;
    while (doc_begin > 0 && ids[doc_begin - 1] == ids[begin]) --doc_begin;
    while (doc_end + 1 < t && ids[doc_end + 1] == ids[end]) ++doc_end;
    INFO("segment " << s);
    CHECK(b.first[s] == doc_begin / kDocumentSegment);
    CHECK(b.last[s] == doc_end / kDocumentSegment);
  }
  // 8 documents of 1024 in 8192 positions: a segment meets only its own document's 64 segments.
  const Bounds eight = bounds_of(packed(std::vector<int64_t>(8, 1024)));
  CHECK(eight.first[64 * 3 + 10] == 64 * 3);
  CHECK(eight.last[64 * 3 + 10] == 64 * 4 - 1);
}
