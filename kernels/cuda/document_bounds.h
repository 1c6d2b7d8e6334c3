// Where the attention kernels look for the keys (or queries) a document mask
// leaves visible, at the granularity of segments of 16 positions.
//
// ranges[2 s], ranges[2 s + 1] are the min and max document id of segment s
// (kernels/cuda/attention.cu fills them). Two positions can see each other
// only if they hold the same id, so a segment s can only meet a segment s'
// whose id range intersects its own. The bounds of s are the first and the
// last such segment:
//   first(s) = min { s' : [lo_s', hi_s'] meets [lo_s, hi_s] }
//   last(s)  = max { s' : [lo_s', hi_s'] meets [lo_s, hi_s] }
// They hold for any ids (documents need not be contiguous or ordered); for
// packed batches they are the segments of the documents s touches. A tile of
// queries then walks only the key tiles between its segments' bounds, instead
// of testing every tile from position 0 (or to the end) one by one.
//
// Plain C++ with host and device qualifiers: the kernel computes the bounds,
// and tests/kernels/test_document_bounds.cpp checks them on the CPU.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define LIGER_HOST_DEVICE __host__ __device__
#else
#define LIGER_HOST_DEVICE
#endif

namespace liger::cuda_kernels {

constexpr int kDocumentSegment = 16;  // positions per segment

// Whether id ranges [a_lo, a_hi] and [b_lo, b_hi] share a value.
LIGER_HOST_DEVICE inline bool id_ranges_meet(int64_t a_lo, int64_t a_hi, int64_t b_lo,
                                             int64_t b_hi) {
  return a_lo <= b_hi && b_lo <= a_hi;
}

// first(s) and last(s) above, for segment s of `segments`; `ranges` as above.
// Every segment meets itself, so first <= s <= last.
LIGER_HOST_DEVICE inline void document_segment_bounds(const int64_t* ranges, int64_t segments,
                                                      int64_t s, int64_t& first, int64_t& last) {
  const int64_t lo = ranges[2 * s], hi = ranges[2 * s + 1];
  first = s;
  for (int64_t other = 0; other < s; ++other) {
    if (id_ranges_meet(lo, hi, ranges[2 * other], ranges[2 * other + 1])) {
      first = other;
      break;
    }
  }
  last = s;
  for (int64_t other = segments - 1; other > s; --other) {
    if (id_ranges_meet(lo, hi, ranges[2 * other], ranges[2 * other + 1])) {
      last = other;
      break;
    }
  }
}

}  // namespace liger::cuda_kernels
