// Flash attention, forward and backward, for every mask the models use:
// causal, sliding window, tanh softcap, per-document masks of packed batches,
// GQA and the end-aligned causal mask of a KV cache (kernels/cuda/launchers.h
// states the contract). Tiles of queries and keys move through shared memory
// and tensor cores (bf16/f16 in, fp32 accumulate): Hopper's warpgroup MMA
// (wgmma) at head_dim 64 and 128 on a compute-capability-9.0 device, else
// mma.sync m16n8k16; the softmax is online in fp32, so no [Tq, Tk] buffer
// ever exists.
//
// The math, per query head, with z = q k^T * scale, s = c tanh(z / c) (softcap
// c; s = z without one), masked entries -inf, in base 2 (s2 = s log2 e):
//   forward:   m = max_j s2_j, l = sum_j 2^(s2_j - m), out = sum_j 2^(s2_j - m) v_j / l,
//              lse = (m + log2 l) ln 2   (natural log-sum-exp, saved per row)
//   backward:  p = 2^(s2 - lse log2 e)           (recomputed, never stored)
//              delta = rowsum(d_out * out)        (= rowsum(p * dp))
//              dp = d_out v^T,  ds = p (dp - delta) (1 - (s / c)^2)   [softcap slope]
//              dq = ds k * scale,  dk = ds^T q * scale,  dv = p^T d_out
// dv and dk come from one kernel that owns a tile of keys and walks the
// query tiles (and the query heads of its key/value head) in a fixed order
// (deterministic); dq either from a second kernel that owns a tile of
// queries (deterministic) or, fused into the warp-specialized dk/dv pass,
// from fp32 sums of every key tile's part in the order they arrive (dq's
// last bits differ from run to run, as in FlashAttention's backward).
// p and ds are rounded to T before their products (tensor-core inputs), as
// FlashAttention does; every sum is fp32.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/document_bounds.h"
#include "kernels/cuda/stage_ring.h"
#include "kernels/cuda/tile_order.h"
#include "kernels/cuda/tma.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace liger::cuda_kernels {
namespace {

constexpr int kThreads = 128;               // 4 warps; each owns 16 rows of a tile
constexpr int kSegment = kDocumentSegment;  // positions per entry of the document ranges
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---------------------------------------------------------------------------
// Tensor-core and async-copy primitives (PTX, sm_80 and later).
// ---------------------------------------------------------------------------

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// Four 8x8 b16 matrices; lanes 8i .. 8i + 7 give the row addresses of matrix i.
// Lane l receives row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1 of each.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// The same, transposed: lane l receives rows 2 (l % 4), 2 (l % 4) + 1 of column l / 4.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// d += a b: a 16x16 (row major fragments), b 16x8, d 16x8 fp32. Fragments of
// lane l (g = l / 4, t = l % 4): a = (g, 2t..), (g + 8, 2t..), (g, 2t + 8..),
// (g + 8, 2t + 8..); b = (k 2t.., n g), (k 2t + 8.., n g); d = (g, 2t), (g, 2t + 1),
// (g + 8, 2t), (g + 8, 2t + 1).
template <typename T>
__device__ __forceinline__ void mma_16x8x16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                            uint32_t b1);
template <>
__device__ __forceinline__ void mma_16x8x16<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                           uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16x8x16<__half>(float (&d)[4], const uint32_t (&a)[4],
                                                    uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two fp32 values rounded to T (cast) in one register, lo in the low half.
template <typename T>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack_pair<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack_pair<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// 16 bytes global -> shared without registers; `valid` false writes zeros.
__device__ __forceinline__ void copy_async_16(void* shared, const void* global, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared)),
               "l"(global), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void copy_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
__device__ __forceinline__ void copy_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::);
}
// Waits for every committed group but the newest (the prefetch of the next tile).
__device__ __forceinline__ void copy_async_wait_all_but_newest() {
  asm volatile("cp.async.wait_group 1;\n" ::);
}
// Waits for every committed group but the newest two.
__device__ __forceinline__ void copy_async_wait_all_but_newest_two() {
  asm volatile("cp.async.wait_group 2;\n" ::);
}

// 2^x (2^-inf = 0), tanh and log2 on the special-function unit: relative
// errors about 2^-22, 2^-11 and 2^-22, far below the bf16 rounding of p.
__device__ __forceinline__ float exp2_fast(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float tanh_fast(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// ---------------------------------------------------------------------------
// Shared-memory tiles: R rows of D elements, each row 16-byte chunks stored at
// chunk ^ (row % 8), so the 8 rows an ldmatrix reads hit 8 different banks.
// ---------------------------------------------------------------------------

template <int D>
__device__ __forceinline__ int tile_offset(int row, int col) {  // col: a multiple of 8
  return row * D + ((((col >> 3) ^ (row & 7))) << 3);
}

// Tiles for wgmma: [R, D] as D / 64 panels of [R, 64], each row of a panel
// 128 bytes with its 16-byte chunks at chunk ^ (row % 8) (the 128-byte
// swizzle, a panel 1024-byte aligned). At D = 64 this is tile_offset<64>.
template <int D, int R>
__device__ __forceinline__ int panel_offset(int row, int col) {  // col: a multiple of 8
  const int panel = col / 64, chunk = (col % 64) / 8;
  return panel * R * 64 + row * 64 + ((chunk ^ (row & 7)) << 3);
}

// Shared memory written by this thread's copies, made visible to the tensor
// cores' (asynchronous proxy) reads; a barrier then publishes every thread's.
// Before sm_90 there is no asynchronous proxy: nothing to fence.
__device__ __forceinline__ void fence_copies_for_tensor_cores() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Rows [first, first + R) of a [rows_total, D] matrix whose rows are `stride`
// elements apart, into a tile of either layout: kPanels, the warpgroup-MMA
// panels (panel_offset), else the mma.sync layout (tile_offset); rows past
// rows_total read as zeros.
template <typename T, int D, int R, bool kPanels>
__device__ __forceinline__ void load_rows(T* tile, const T* matrix, int64_t first,
                                          int64_t rows_total, int64_t stride) {
  constexpr int kChunks = D / 8;
  for (int i = threadIdx.x; i < R * kChunks; i += kThreads) {
    const int row = i / kChunks, col = (i % kChunks) * 8;
    const bool valid = first + row < rows_total;
    const T* src = matrix + (valid ? (first + row) * stride + col : 0);
    const int at = kPanels ? panel_offset<D, R>(row, col) : tile_offset<D>(row, col);
    copy_async_16(tile + at, src, valid);
  }
}

// This thread's landed copies made visible to every thread (a barrier) and,
// for panel tiles, to the tensor cores' asynchronous-proxy reads first.
template <bool kPanels>
__device__ __forceinline__ void publish_copies() {
  if constexpr (kPanels) fence_copies_for_tensor_cores();
  __syncthreads();
}

// The block's first tile in dynamic shared memory: for panel tiles at a
// 1024-byte boundary (the 128-byte swizzle's period; their launchers add
// 1 KiB of slack), else at the start.
template <typename T, bool kPanels>
__device__ __forceinline__ T* first_tile(unsigned char* bytes) {
  if constexpr (!kPanels) return reinterpret_cast<T*>(bytes);
  const uint32_t raw = shared_address(bytes);
  return reinterpret_cast<T*>(bytes + (((raw + 1023) & ~1023u) - raw));
}

// The fragment address of lane l for an A operand (16 x 16 at row0, col0) or
// a transposed-B operand stored [k, n] (16 k x 16 n): matrices in the order
// (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15).
template <typename T, int D>
__device__ __forceinline__ uint32_t a_address(const T* tile, int row0, int col0, int lane) {
  const int row = row0 + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int col = col0 + (lane >> 4) * 8;
  return shared_address(tile + tile_offset<D>(row, col));
}
// For a B operand stored [n, k] (rows are n): two n tiles of 8 at row0 and
// row0 + 8, k 16 from col0: registers (b0, b1) of the first n tile, then the second's.
template <typename T, int D>
__device__ __forceinline__ uint32_t b_address(const T* tile, int row0, int col0, int lane) {
  const int row = row0 + (lane & 7) + (lane >> 4) * 8;
  const int col = col0 + ((lane >> 3) & 1) * 8;
  return shared_address(tile + tile_offset<D>(row, col));
}

template <int N>
__device__ __forceinline__ void zero(float (&acc)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
}

// ---------------------------------------------------------------------------
// Masks
// ---------------------------------------------------------------------------

struct Mask {
  bool causal;
  int window;
  int offset;  // Tk - Tq: query row r is position r + offset
  int tk;
  const int64_t* documents;  // this batch row's [T] ids, or nullptr
  const int64_t* ranges;     // this batch row's [ceil(T / 16), 2] min/max, or nullptr
  const int64_t* bounds;     // this batch row's [ceil(T / 16), 2] first/last segment it meets

  // Whether query `position` (of document query_document) sees `key` (of
  // document key_document, read by the caller: once for the rows that share it).
  __device__ __forceinline__ bool visible_given(int position, int key, int64_t query_document,
                                                int64_t key_document) const {
    if (key >= tk) return false;
    if (causal && key > position) return false;
    if (window > 0 && position - key >= window) return false;
    if (documents != nullptr && key_document != query_document) return false;
    return true;
  }
  // A key's document id (keys past Tk: the last one's; visible_given rejects them).
  __device__ __forceinline__ int64_t key_document(int key) const {
    return documents != nullptr ? __ldg(documents + min(key, tk - 1)) : 0;
  }

  // This mask for batch row b of a batch with Tk = tk: its document ids,
  // ranges and bounds start at that row's.
  __device__ __forceinline__ void select_batch_row(int64_t b) {
    if (documents == nullptr) return;
    const int64_t segments = (tk + kSegment - 1) / kSegment;
    documents += b * tk;
    ranges += 2 * b * segments;
    bounds += 2 * b * segments;
  }

  // Positions [first, last] (documents: Tq == Tk) can see keys only in
  // [begin, end): their segments' bounds (kernels/cuda/document_bounds.h).
  // The same holds for the queries that can see keys [first, last].
  __device__ __forceinline__ void document_span(int first, int last, int& begin, int& end) const {
    int64_t lo = INT64_MAX, hi = -1;
    for (int s = first / kSegment; s <= last / kSegment; ++s) {
      lo = min(lo, __ldg(bounds + 2 * s));
      hi = max(hi, __ldg(bounds + 2 * s + 1));
    }
    begin = static_cast<int>(lo) * kSegment;
    end = static_cast<int>(hi + 1) * kSegment;
  }

  // Min and max document id of positions [first, last] (whole segments).
  __device__ __forceinline__ void document_range(int first, int last, int64_t& lo,
                                                 int64_t& hi) const {
    lo = INT64_MAX;
    hi = INT64_MIN;
    for (int s = first / kSegment; s <= last / kSegment; ++s) {
      lo = min(lo, __ldg(ranges + 2 * s));
      hi = max(hi, __ldg(ranges + 2 * s + 1));
    }
  }
};

// The min and max document id of a span of positions (whole segments of 16).
struct DocumentRange {
  int64_t lo, hi;
};
__device__ __forceinline__ DocumentRange document_range_of(const Mask& m, int first, int last) {
  DocumentRange r;
  m.document_range(first, min(last, m.tk - 1), r.lo, r.hi);
  return r;
}

// Query positions [q_first, q_last] against keys [k_first, k_last]: whether
// no pair is visible (skip the tile), whether every pair is (no mask to apply).
// With documents, the side that stays fixed over a walk may pass its range
// (q_docs or k_docs, read once); the other is read here.
struct TileVisibility {
  bool empty, full;
};
__device__ __forceinline__ TileVisibility tile_visibility(const Mask& m, int q_first, int q_last,
                                                          int k_first, int k_last,
                                                          const DocumentRange* q_docs = nullptr,
                                                          const DocumentRange* k_docs = nullptr) {
  TileVisibility v{false, true};
  if (k_last >= m.tk) v.full = false;
  if (m.causal) {
    if (k_first > q_last) v.empty = true;
    if (k_last > q_first) v.full = false;
  }
  if (m.window > 0) {
    if (q_first - k_last >= m.window) v.empty = true;
    if (q_last - k_first >= m.window) v.full = false;
  }
  if (m.documents != nullptr && !v.empty) {
    // Document ids are per position; with documents Tq == Tk (offset 0).
    const DocumentRange q = q_docs ? *q_docs : document_range_of(m, q_first, q_last);
    const DocumentRange k = k_docs ? *k_docs : document_range_of(m, k_first, k_last);
    if (q.hi < k.lo || k.hi < q.lo) v.empty = true;
    if (!(q.lo == q.hi && k.lo == k.hi && q.lo == k.lo)) v.full = false;
  }
  return v;
}

// The key tiles of BN keys that queries [q_first, q_last] (positions) walk:
// keys [begin, end) that the causal mask, the window and the documents leave,
// and from there the tiles the mask does not empty.
template <int BN>
struct KeyTileWalk {
  Mask mask;
  int q_first, q_last, begin, end;
  DocumentRange q_docs;  // the queries' document ids (with documents)

  __device__ __forceinline__ KeyTileWalk(const Mask& m, int first, int last)
      : mask(m), q_first(first), q_last(last), q_docs{0, 0} {
    end = m.causal ? min(m.tk, last + 1) : m.tk;
    begin = m.window > 0 ? max(0, first - m.window + 1) : 0;
    if (m.documents != nullptr) {  // keys outside these queries' documents: never visible
      int doc_begin, doc_end;
      m.document_span(first, last, doc_begin, doc_end);
      begin = max(begin, doc_begin);
      end = min(end, doc_end);
      q_docs = document_range_of(m, first, last);
    }
  }
  // Whether keys [n, n + BN) are visible to none / to all of the queries.
  __device__ __forceinline__ TileVisibility visibility(int n) const {
    return tile_visibility(mask, q_first, q_last, n, n + BN - 1, &q_docs);
  }
  // The first tile at or after key n that the mask does not empty (end: none).
  __device__ __forceinline__ int next(int n) const {
    for (; n < end; n += BN) {
      if (!visibility(n).empty) return n;
    }
    return end;
  }
  __device__ __forceinline__ int first_tile() const { return next((begin / BN) * BN); }
  // The same, also giving the visibility of the tile found (vis: unset at end),
  // so that a walk need not test the tile again (with documents, table reads).
  __device__ __forceinline__ int next(int n, TileVisibility& vis) const {
    for (; n < end; n += BN) {
      vis = visibility(n);
      if (!vis.empty) return n;
    }
    return end;
  }
  __device__ __forceinline__ int first_tile(TileVisibility& vis) const {
    return next((begin / BN) * BN, vis);
  }
  // For query rows [m0, m0 + rows) of Tq (their positions: row + the mask's offset).
  __device__ __forceinline__ static KeyTileWalk of_query_rows(const Mask& m, int m0, int rows,
                                                              int64_t tq) {
    return KeyTileWalk(m, m0 + m.offset, static_cast<int>(min64(m0 + rows, tq)) - 1 + m.offset);
  }
};

// Two K/V buffers in shared memory after `base`: buffer i holds its keys
// [BN, D] at base + 2 i BN D and its values right after. Addresses come from
// arithmetic on the buffer index, so no array of pointers goes to local memory.
template <typename T, int D, int BN>
struct KeyValueBuffers {
  T* base;
  __device__ __forceinline__ T* keys(int buf) const { return base + buf * 2 * BN * D; }
  __device__ __forceinline__ T* values(int buf) const { return base + (buf * 2 + 1) * BN * D; }
};

// Walks the key tiles of `walk` through the two K/V buffers, the next
// tile's copy running while body(n0, keys, values, visibility) computes on
// this one; the query tile's copies, committed before, arrive with the first
// tile. Returns when every copy has landed (also when no tile was walked).
// kPanels: the tiles in the warpgroup-MMA layout (load_rows, publish_copies).
template <typename T, int D, int BN, bool kPanels, typename Body>
__device__ __forceinline__ void walk_key_tiles(const KeyTileWalk<BN>& walk,
                                               const KeyValueBuffers<T, D, BN>& kv, const T* k,
                                               const T* v, int64_t tk, int64_t stride,
                                               Body&& body) {
  auto load = [&](int buf, int first) {  // keys [first, first + BN) of k and v
    load_rows<T, D, BN, kPanels>(kv.keys(buf), k, first, tk, stride);
    load_rows<T, D, BN, kPanels>(kv.values(buf), v, first, tk, stride);
  };
  int n0 = walk.first_tile();
  if (n0 < walk.end) load(0, n0);
  copy_async_commit();
  for (int buf = 0; n0 < walk.end; buf ^= 1) {
    const int n1 = walk.next(n0 + BN);
    if (n1 < walk.end) load(buf ^ 1, n1);  // the other buffer's readers passed the last barrier
    copy_async_commit();
    copy_async_wait_all_but_newest();  // the queries and this tile have arrived
    publish_copies<kPanels>();
    body(n0, kv.keys(buf), kv.values(buf), walk.visibility(n0));
    __syncthreads();  // every warp is done with this buffer before it is refilled
    n0 = n1;
  }
  copy_async_wait_all();  // when every key tile was skipped, the queries' copies are still pending
}

// The forward's walk with two key buffers and ONE value buffer (FlashAttention-2's
// order), for less shared memory and so more blocks per SM: per tile, the
// copy of its values and of the next tile's keys start, the scores run on
// the keys (scores(n0, keys, visibility)) while the values arrive, then
// values_pass(values) takes the values. The value buffer's last readers
// passed the previous tile's final barrier before it is refilled.
template <typename T, int D, int BN>
struct KeysValueBuffers {
  T* base;  // keys [BN, D] x 2, then values [BN, D]
  __device__ __forceinline__ T* keys(int buf) const { return base + buf * BN * D; }
  __device__ __forceinline__ T* values() const { return base + 2 * BN * D; }
};

// kPanels: the tiles in the warpgroup-MMA layout (load_rows), which the
// tensor cores read through the asynchronous proxy: each thread fences its
// landed copies before the barrier. Else the mma.sync layout.
template <typename T, int D, int BN, bool kPanels, typename Scores, typename ValuesPass>
__device__ __forceinline__ void walk_key_tiles_one_value_buffer(
    const KeyTileWalk<BN>& walk, const KeysValueBuffers<T, D, BN>& kv, const T* k, const T* v,
    int64_t tk, int64_t stride, Scores&& scores, ValuesPass&& values_pass) {
  auto load = [&](T* tile, const T* matrix, int first) {
    load_rows<T, D, BN, kPanels>(tile, matrix, first, tk, stride);
  };
  int n0 = walk.first_tile();
  if (n0 < walk.end) load(kv.keys(0), k, n0);
  copy_async_commit();  // with the query tile's copies, committed before
  for (int buf = 0; n0 < walk.end; buf ^= 1) {
    load(kv.values(), v, n0);
    copy_async_commit();
    const int n1 = walk.next(n0 + BN);
    if (n1 < walk.end) load(kv.keys(buf ^ 1), k, n1);
    copy_async_commit();
    copy_async_wait_all_but_newest_two();  // the queries and this tile's keys have arrived
    publish_copies<kPanels>();
    scores(n0, kv.keys(buf), walk.visibility(n0));
    copy_async_wait_all_but_newest();  // this tile's values have arrived
    publish_copies<kPanels>();
    values_pass(kv.values());
    __syncthreads();  // every warp is done with the values and these keys before refills
    n0 = n1;
  }
  copy_async_wait_all();
}

// Scores to the base-2 domain: s2 = s log2 e with s = z (no softcap) or
// c tanh(z / c), z = acc * scale, taken in two halves: to_base2_unit turns
// acc into u with s2 = base2_factor() u (u = acc without a softcap, tanh(z / c)
// with one), and the exponent takes the factor, 2^(s2 - m) = 2^(fma(u, factor,
// -m)): one fused multiply-add per score instead of a multiply and then a
// subtract. The factors are formed once on the host (score_transform), so no
// element divides.
struct ScoreTransform {
  float scale, softcap;
  float scale_log2e;         // scale log2 e (no softcap)
  float scale_over_softcap;  // scale / c
  float softcap_log2e;       // c log2 e
  float inv_softcap_log2e;   // 1 / (c log2 e)

  // Every score of a warp's tile [16, 8N] (accumulator fragments), in place:
  // u = tanh(acc scale / c) under a softcap, else left as it is. The softcap
  // branch is taken once per tile, not per element.
  template <int N>
  __device__ __forceinline__ void to_base2_unit(float (&s)[N][4]) const {
    if (softcap > 0.f) {
#pragma unroll
      for (int j = 0; j < N; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = tanh_fast(s[j][e] * scale_over_softcap);
      }
    }
  }
  // s2 / u, positive (the launcher takes scale > 0, a softcap > 0).
  __device__ __forceinline__ float base2_factor() const {
    return softcap > 0.f ? softcap_log2e : scale_log2e;
  }
  // d s / d z under a softcap from u = tanh(z / c) (to_base2_unit): 1 - u^2.
  __device__ __forceinline__ static float softcap_slope_of_unit(float u) {
    return 1.f - u * u;
  }
  // d s / d z at a base-2 score s2 under a softcap: 1 - tanh(z / c)^2.
  __device__ __forceinline__ float softcap_slope(float s2) const {
    const float t = s2 * inv_softcap_log2e;  // tanh(z / c)
    return 1.f - t * t;
  }
};

ScoreTransform score_transform(float scale, float softcap) {
  ScoreTransform t{};
  t.scale = scale;
  t.softcap = softcap;
  t.scale_log2e = scale * kLog2e;
  if (softcap > 0.f) {
    t.scale_over_softcap = scale / softcap;
    t.softcap_log2e = softcap * kLog2e;
    t.inv_softcap_log2e = 1.f / (softcap * kLog2e);
  }
  return t;
}

struct Geometry {
  int64_t batch, tq, tk, heads_q, heads_k;
  int groups;  // heads_q / heads_k
};

// A query-tile block's place (its block id decoded by tile_of_block: the
// last, heaviest query tiles first, heads in groups of kKeyValueHeadsPerGroup
// key/value heads) and where its rows start: query head `head` of batch row b
// in q-shaped tensors ([B, Tq, Hq, D], rows q_stride apart), its key/value
// head in k and v ([B, Tk, Hk, D], rows k_stride apart).
template <int D>
struct QueryBlock {
  int m0, head, head_k;
  int64_t b, q_stride, k_stride;

  __device__ __forceinline__ QueryBlock(const Geometry& geo, int block_rows)
      : q_stride(geo.heads_q * D), k_stride(geo.heads_k * D) {
    const int tiles = static_cast<int>((geo.tq + block_rows - 1) / block_rows);
    const int heads = static_cast<int>(geo.heads_q);
    const TilePlace place = tile_of_block(blockIdx.x, tiles, heads,
                                          min(kKeyValueHeadsPerGroup * geo.groups, heads), true);
    m0 = place.tile * block_rows;
    head = place.head;
    head_k = head / geo.groups;
    b = place.batch;
  }
  template <typename T>
  __device__ __forceinline__ const T* query_rows(const T* t, const Geometry& geo) const {
    return t + (b * geo.tq * geo.heads_q + head) * D;
  }
  template <typename T>
  __device__ __forceinline__ const T* key_rows(const T* t, const Geometry& geo) const {
    return t + (b * geo.tk * geo.heads_k + head_k) * D;
  }
};

// ---------------------------------------------------------------------------
// Forward: one block per (query tile of BM rows, query head, batch row). Each
// warp owns MT tiles of 16 query rows (BM = 64 MT): every K and V fragment it
// reads from shared memory feeds the products of all MT tiles, so MT = 2
// halves the shared-memory reads per product (the bound at MT = 1).
// ---------------------------------------------------------------------------

// acc[m][j] and acc[m][j + 1] += a[m] times the two n tiles of 8 in b (b[0],
// b[1] the first, b[2], b[3] the second), for every row tile m.
template <typename T, int MT, int N>
__device__ __forceinline__ void mma_rows(float (&acc)[MT][N][4], const uint32_t (&a)[MT][4],
                                         const uint32_t (&b)[4], int j) {
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    mma_16x8x16<T>(acc[m][j], a[m], b[0], b[1]);
    mma_16x8x16<T>(acc[m][j + 1], a[m], b[2], b[3]);
  }
}

// acc[m][16 x 8N] += A_m[16 x 16K] B^T for the MT row tiles A_m (rows row0 +
// 16 m of tile_a); B's N*8 rows in tile_b, both [rows, D], D = 16K. Each B
// fragment is loaded once for all MT tiles.
template <typename T, int D, int N, int MT>
__device__ __forceinline__ void product_abt_rows(float (&acc)[MT][N][4], const T* tile_a, int row0,
                                                 const T* tile_b, int lane) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int m = 0; m < MT; ++m)
      ldmatrix_x4(a[m], a_address<T, D>(tile_a, row0 + 16 * m, kk * 16, lane));
#pragma unroll
    for (int nn = 0; nn < N / 2; ++nn) {
      uint32_t b[4];
      ldmatrix_x4(b, b_address<T, D>(tile_b, nn * 16, kk * 16, lane));
      mma_rows<T>(acc, a, b, 2 * nn);
    }
  }
}

// The A fragment of k step kk (16 columns) from accumulator fragments of
// 8N columns, rounded to T (cast): the accumulator layout of n tiles 2 kk
// and 2 kk + 1 is the A layout of one k step (mma.sync m16n8k16 and wgmma alike).
template <typename T, int N>
__device__ __forceinline__ void pack_a_fragment(const float (&p)[N][4], int kk, uint32_t (&a)[4]) {
  a[0] = pack_pair<T>(p[2 * kk][0], p[2 * kk][1]);
  a[1] = pack_pair<T>(p[2 * kk][2], p[2 * kk][3]);
  a[2] = pack_pair<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
  a[3] = pack_pair<T>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
}

// acc[m][16 x D] += P_m[16 x 8N] M[8N x D] for the MT row tiles: P_m from
// accumulator fragments (rounded to T), M's rows in tile ([8N, D], read
// transposed once for all MT tiles).
template <typename T, int D, int N, int MT>
__device__ __forceinline__ void product_pm_rows(float (&acc)[MT][D / 8][4],
                                                const float (&p)[MT][N][4], const T* tile,
                                                int lane) {
#pragma unroll
  for (int kk = 0; kk < N / 2; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int m = 0; m < MT; ++m) pack_a_fragment<T>(p[m], kk, a[m]);
#pragma unroll
    for (int dd = 0; dd < D / 16; ++dd) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, a_address<T, D>(tile, kk * 16, dd * 16, lane));
      mma_rows<T>(acc, a, b, 2 * dd);
    }
  }
}

// The same for one row tile: acc[16 x 8N] += A[16 x 16K] B^T (A's rows from
// row0 in tile_a, B's N*8 rows in tile_b) and acc[16 x D] += P[16 x 8N] M[8N x D].
template <typename T, int D, int N>
__device__ __forceinline__ void product_abt(float (&acc)[N][4], const T* tile_a, int row0,
                                            const T* tile_b, int lane) {
  product_abt_rows<T, D, N, 1>(reinterpret_cast<float(&)[1][N][4]>(acc), tile_a, row0, tile_b,
                               lane);
}
template <typename T, int D, int N>
__device__ __forceinline__ void product_pm(float (&acc)[D / 8][4], const float (&p)[N][4],
                                           const T* tile, int lane) {
  product_pm_rows<T, D, N, 1>(reinterpret_cast<float(&)[1][D / 8][4]>(acc),
                              reinterpret_cast<const float(&)[1][N][4]>(p), tile, lane);
}

// The two query rows of one thread in one 16-row tile (g and g + 8): their
// rows, positions (row + the mask's offset) and document ids.
struct QueryRowPair {
  int row_lo, row_hi, pos_lo, pos_hi;
  int64_t doc_lo, doc_hi;

  __device__ __forceinline__ void set(int row, const Mask& mask, int64_t tq) {
    row_lo = row;
    row_hi = row + 8;
    pos_lo = row_lo + mask.offset;
    pos_hi = row_hi + mask.offset;
    doc_lo = mask.documents ? __ldg(mask.documents + min64(row_lo, tq - 1)) : 0;
    doc_hi = mask.documents ? __ldg(mask.documents + min64(row_hi, tq - 1)) : 0;
  }
};

// Masked scores of a warp's tile [16 query rows, 8N keys from n0] set to
// -inf: a thread's elements e < 2 belong to query row r.lo, the others to
// r.hi; key n0 + 8 j + 2 t4 + (e & 1). Only for tiles the mask cuts.
template <int N>
__device__ __forceinline__ void mask_scores(float (&s)[N][4], const Mask& mask,
                                            const QueryRowPair& r, int n0, int t4) {
#pragma unroll
  for (int j = 0; j < N; ++j) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {  // elements c (row lo) and 2 + c (row hi) share their key
      const int key = n0 + j * 8 + t4 * 2 + c;
      const int64_t key_doc = mask.key_document(key);
      if (!mask.visible_given(r.pos_lo, key, r.doc_lo, key_doc)) s[j][c] = -INFINITY;
      if (!mask.visible_given(r.pos_hi, key, r.doc_hi, key_doc)) s[j][2 + c] = -INFINITY;
    }
  }
}

// The keys a query position sees by position alone, [first, last]: up to
// the position (causal) and below Tk, from position - window + 1 (a window;
// as Mask::visible_given).
struct VisibleKeys {
  int first, last;
};
__device__ __forceinline__ VisibleKeys visible_keys_of(const Mask& mask, int position) {
  // in 64 bits: a negative position (Tq > Tk) less a wide window stays exact
  const int64_t first = int64_t{position} - mask.window + 1;
  return VisibleKeys{
      mask.window > 0 ? static_cast<int>(first > INT_MIN ? first : INT_MIN) : INT_MIN,
      mask.causal ? min(position, mask.tk - 1) : mask.tk - 1};
}

// mask_scores from the rows' visible key ranges (lo, hi) and, kCodes, the
// keys' document codes codes[k - n0] against the rows' (code_lo, code_hi):
// compares and selects only, no branches and no global loads.
template <bool kCodes, int N>
__device__ __forceinline__ void mask_scores_in_range(float (&s)[N][4], VisibleKeys lo,
                                                     VisibleKeys hi, int n0, int t4,
                                                     const int* codes, int code_lo, int code_hi) {
#pragma unroll
  for (int j = 0; j < N; ++j) {
    int2 key_codes = make_int2(0, 0);
    if constexpr (kCodes) key_codes = *reinterpret_cast<const int2*>(codes + j * 8 + t4 * 2);
#pragma unroll
    for (int c = 0; c < 2; ++c) {  // elements c (row lo) and 2 + c (row hi) share their key
      const int key = n0 + j * 8 + t4 * 2 + c;
      const int key_code = c == 0 ? key_codes.x : key_codes.y;
      const bool seen_lo = key >= lo.first && key <= lo.last && (!kCodes || key_code == code_lo);
      const bool seen_hi = key >= hi.first && key <= hi.last && (!kCodes || key_code == code_hi);
      s[j][c] = seen_lo ? s[j][c] : -INFINITY;
      s[j][2 + c] = seen_hi ? s[j][2 + c] : -INFINITY;
    }
  }
}

// Writes one thread's share of a 16-row tile's accumulator [16, D] to the
// rows of `r` in `out` ([B, Tq, H, D]), row lo times scale_lo and row hi
// times scale_hi, rounded to T (cast); rows past Tq are left alone.
template <typename T, int D>
__device__ __forceinline__ void store_row_pair(T* out, const QueryRowPair& r, const Geometry& geo,
                                               int64_t b, int head, const float (&acc)[D / 8][4],
                                               float scale_lo, float scale_hi, int t4) {
  if (r.row_lo < geo.tq) {
    T* row = out + ((b * geo.tq + r.row_lo) * geo.heads_q + head) * D;
#pragma unroll
    for (int d = 0; d < D / 8; ++d) {
      *reinterpret_cast<uint32_t*>(row + d * 8 + t4 * 2) =
          pack_pair<T>(acc[d][0] * scale_lo, acc[d][1] * scale_lo);
    }
  }
  if (r.row_hi < geo.tq) {
    T* row = out + ((b * geo.tq + r.row_hi) * geo.heads_q + head) * D;
#pragma unroll
    for (int d = 0; d < D / 8; ++d) {
      *reinterpret_cast<uint32_t*>(row + d * 8 + t4 * 2) =
          pack_pair<T>(acc[d][2] * scale_hi, acc[d][3] * scale_hi);
    }
  }
}

// ... and their online-softmax state in the forward.
struct RowPairState : QueryRowPair {
  float max_lo, max_hi, sum_lo, sum_hi;

  __device__ __forceinline__ void start() {
    max_lo = max_hi = -INFINITY;
    sum_lo = sum_hi = 0.f;
  }

  // One key tile of the online softmax: u (rows lo and hi, masked ones -inf)
  // with base-2 scores s2 = factor u (factor > 0: ScoreTransform::to_base2_unit)
  // becomes p = 2^(s2 - m) with m the new running max, the running sums take p;
  // returns in rescale_lo/hi the factor 2^(m_old - m) that the running output
  // must be multiplied by first (exactly 1 where the max did not move).
  template <int N>
  __device__ __forceinline__ void step(float (&u)[N][4], float factor, float& rescale_lo,
                                       float& rescale_hi) {
    float tile_max_lo = -INFINITY, tile_max_hi = -INFINITY;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      tile_max_lo = fmaxf(tile_max_lo, fmaxf(u[j][0], u[j][1]));
      tile_max_hi = fmaxf(tile_max_hi, fmaxf(u[j][2], u[j][3]));
    }
    // A row's 8N scores are spread over the 4 lanes of its quad.
#pragma unroll
    for (int o = 1; o < 4; o *= 2) {
      tile_max_lo = fmaxf(tile_max_lo, __shfl_xor_sync(0xffffffffu, tile_max_lo, o));
      tile_max_hi = fmaxf(tile_max_hi, __shfl_xor_sync(0xffffffffu, tile_max_hi, o));
    }
    // Rounding is monotonic, so factor times the max of u is the max of the rounded s2.
    const float new_max_lo = fmaxf(max_lo, tile_max_lo * factor);
    const float new_max_hi = fmaxf(max_hi, tile_max_hi * factor);
    // A row with nothing visible yet keeps max -inf: subtract 0 instead (no NaN).
    const float base_lo = new_max_lo == -INFINITY ? 0.f : new_max_lo;
    const float base_hi = new_max_hi == -INFINITY ? 0.f : new_max_hi;
    // A row whose max did not move keeps its output as it is: factor exactly 1.
    rescale_lo = new_max_lo == max_lo ? 1.f : exp2_fast(max_lo - base_lo);
    rescale_hi = new_max_hi == max_hi ? 1.f : exp2_fast(max_hi - base_hi);
    max_lo = new_max_lo;
    max_hi = new_max_hi;
    float part_lo = 0.f, part_hi = 0.f;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      // 2^(factor u - m) with one rounding before the exponent (-inf stays -inf: p = 0)
      u[j][0] = exp2_fast(fmaf(u[j][0], factor, -base_lo));
      u[j][1] = exp2_fast(fmaf(u[j][1], factor, -base_lo));
      u[j][2] = exp2_fast(fmaf(u[j][2], factor, -base_hi));
      u[j][3] = exp2_fast(fmaf(u[j][3], factor, -base_hi));
      part_lo += u[j][0] + u[j][1];
      part_hi += u[j][2] + u[j][3];
    }
    // Per-lane partial sums: the quad's lanes share the rescale, summed at the end.
    sum_lo = sum_lo * rescale_lo + part_lo;
    sum_hi = sum_hi * rescale_hi + part_hi;
  }

  // After the last tile: out = acc / sum per row, rounded to T (cast), and
  // lse = (m + log2 sum) ln 2; a row that saw nothing gets lse = +inf
  // (backward's p = 2^(s2 - inf) = 0) and zeros.
  template <typename T, int D>
  __device__ __forceinline__ void finish(T* out, float* lse, const Geometry& geo, int64_t b,
                                         int head, const float (&acc)[D / 8][4], int t4) {
#pragma unroll
    for (int o = 1; o < 4; o *= 2) {
      sum_lo += __shfl_xor_sync(0xffffffffu, sum_lo, o);
      sum_hi += __shfl_xor_sync(0xffffffffu, sum_hi, o);
    }
    const float inv_lo = sum_lo > 0.f ? 1.f / sum_lo : 0.f;
    const float inv_hi = sum_hi > 0.f ? 1.f / sum_hi : 0.f;
    store_row_pair<T, D>(out, *this, geo, b, head, acc, inv_lo, inv_hi, t4);
    if (t4 == 0) {
      float* lse_h = lse + (b * geo.heads_q + head) * geo.tq;
      if (row_lo < geo.tq)
        lse_h[row_lo] = sum_lo > 0.f ? (max_lo + log2f(sum_lo)) * kLn2 : INFINITY;
      if (row_hi < geo.tq)
        lse_h[row_hi] = sum_hi > 0.f ? (max_hi + log2f(sum_hi)) * kLn2 : INFINITY;
    }
  }
};

// acc (a thread's share of 16 rows' output) times rescale_lo on row lo, rescale_hi on row hi.
template <int N>
__device__ __forceinline__ void rescale_rows(float (&acc)[N][4], float rescale_lo,
                                             float rescale_hi) {
#pragma unroll
  for (int d = 0; d < N; ++d) {
    acc[d][0] *= rescale_lo;
    acc[d][1] *= rescale_lo;
    acc[d][2] *= rescale_hi;
    acc[d][3] *= rescale_hi;
  }
}

// The same, skipped when no row of the warp took a new max (every factor 1, and x * 1 = x):
// past the first tiles of a walk the running max seldom moves, and the skip saves D / 2
// multiplies per thread and tile. The vote keeps the branch uniform over the warp. Not for
// the overlapped walk: a branch there, between products in flight on acc, serializes them.
template <int N>
__device__ __forceinline__ void rescale_rows_that_moved(float (&acc)[N][4], float rescale_lo,
                                                        float rescale_hi) {
  if (__all_sync(0xffffffffu, rescale_lo == 1.f && rescale_hi == 1.f)) return;
  rescale_rows(acc, rescale_lo, rescale_hi);
}

// kOneValueBuffer: the walk with one value buffer (shared memory BM + 3 BN
// rows of D instead of BM + 4 BN); kMinBlocks: the blocks per SM the
// registers must allow (launch bounds).
template <typename T, int D, int BM, int BN, int MT, bool kOneValueBuffer, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    attention_forward_kernel(const T* __restrict__ q, const T* __restrict__ k,
                             const T* __restrict__ v, T* __restrict__ out, float* __restrict__ lse,
                             Geometry geo, Mask mask, ScoreTransform score) {
  static_assert(BM == 16 * MT * (kThreads / 32), "each warp owns MT tiles of 16 query rows");
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* tile_q = reinterpret_cast<T*>(shared_bytes);

  const QueryBlock<D> blk(geo, BM);
  const int m0 = blk.m0, head = blk.head;
  const int64_t b = blk.b, q_stride = blk.q_stride, k_stride = blk.k_stride;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4;
  const T* q_b = blk.query_rows(q, geo);
  const T* k_b = blk.key_rows(k, geo);
  const T* v_b = blk.key_rows(v, geo);
  mask.select_batch_row(b);

  load_rows<T, D, BM, false>(tile_q, q_b, m0, geo.tq, q_stride);
  copy_async_commit();

  // This warp's rows: tiles warp_row0 + 16 m, m < MT.
  const int warp_row0 = warp * 16 * MT;
  RowPairState rows[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    rows[m].set(m0 + warp_row0 + 16 * m + g, mask, geo.tq);
    rows[m].start();
  }

  // The keys any row of the tile may see.
  const KeyTileWalk<BN> walk = KeyTileWalk<BN>::of_query_rows(mask, m0, BM, geo.tq);

  float acc_o[MT][D / 8][4];
#pragma unroll
  for (int m = 0; m < MT; ++m) zero(acc_o[m]);

  // One tile: the scores s = q k^T to probabilities (online softmax, acc_o
  // rescaled), then acc_o += p v.
  float s[MT][BN / 8][4];
  auto scores = [&](int n0, const T* keys, TileVisibility vis) {
#pragma unroll
    for (int m = 0; m < MT; ++m) zero(s[m]);
    product_abt_rows<T, D, BN / 8, MT>(s, tile_q, warp_row0, keys, lane);

#pragma unroll
    for (int m = 0; m < MT; ++m) {
      RowPairState& r = rows[m];
      score.to_base2_unit(s[m]);
      if (!vis.full) mask_scores(s[m], mask, r, n0, t4);
      float rescale_lo, rescale_hi;
      r.step(s[m], score.base2_factor(), rescale_lo, rescale_hi);
      rescale_rows_that_moved(acc_o[m], rescale_lo, rescale_hi);
    }
  };
  auto values_pass = [&](const T* values) {
    product_pm_rows<T, D, BN / 8, MT>(acc_o, s, values, lane);
  };
  if constexpr (kOneValueBuffer) {
    const KeysValueBuffers<T, D, BN> kv{tile_q + BM * D};
    walk_key_tiles_one_value_buffer<T, D, BN, false>(walk, kv, k_b, v_b, geo.tk, k_stride, scores,
                                                     values_pass);
  } else {
    // Two K/V buffers: the next tile's copy runs while this one is computed.
    const KeyValueBuffers<T, D, BN> kv{tile_q + BM * D};
    walk_key_tiles<T, D, BN, false>(
        walk, kv, k_b, v_b, geo.tk, k_stride,
        [&](int n0, const T* keys, const T* values, TileVisibility vis) {
          scores(n0, keys, vis);
          values_pass(values);
        });
  }

#pragma unroll
  for (int m = 0; m < MT; ++m) rows[m].template finish<T, D>(out, lse, geo, b, head, acc_o[m], t4);
}

// ---------------------------------------------------------------------------
// Forward on Hopper's warpgroup MMA (sm_90a), head_dim 64 and 128: one
// warpgroup (the block's 4 warps) per 64 query rows, key tiles of 64.
//   s = q k^T:  wgmma m64n64k16, q and k both read from shared memory
//               (K-major: a row's head_dim elements contiguous);
//   o += p v:   wgmma m64n64k16 per 64 columns of head_dim, p from registers
//               (the score accumulators rounded to T, the same fragments as
//               the mma.sync path's), v from shared memory (MN-major: the
//               64 columns contiguous in a row, transposed by the instruction).
// The online softmax, masks and stores are the mma.sync forward's: a warp's
// accumulator rows are its 16 rows g and g + 8, n8 tile j at registers
// [j][0..3], as with mma.sync m16n8. The values are copied while the scores
// run (one value buffer, two key buffers), as in the head_dim-128 forward.
// The default where the device takes it (set_attention_forward_wgmma turns it off).
// ---------------------------------------------------------------------------

// A shared-memory matrix descriptor for the 128-byte swizzle: start address,
// the stride between 8-row groups (SBO, 1024 bytes: 8 rows of 128) and the
// leading offset (LBO: unused for K-major swizzled operands, and for
// MN-major ones the stride to the next 64 elements of N, which no n64
// instruction reads; a wider N would need the panel stride there), in
// 16-byte units, and the swizzle mode (1 = 128 bytes) in bits 62-63.
__device__ __forceinline__ uint64_t swizzled_descriptor(const void* start) {
  const uint64_t address = shared_address(start);
  constexpr uint64_t kGroup = 1024 >> 4;
  return ((address & 0x3FFFF) >> 4) | (kGroup << 16) | (kGroup << 32) | (uint64_t{1} << 62);
}

// A barrier of the 128 threads of one warpgroup (named barrier kId, 1 to 15;
// 0 is the block's __syncthreads). The id an immediate: a register id would
// reserve all 16 barriers.
template <int kId>
__device__ __forceinline__ void warpgroup_barrier() {
  static_assert(kId >= 1 && kId <= 15, "named barriers 1 to 15");
  asm volatile("bar.sync %0, 128;\n" ::"n"(kId) : "memory");
}
// FlashAttention-3's ping-pong of two consumer warpgroups: each has a named
// barrier of 256 threads (kTurnBarrier + consumer) that its own 128 threads
// sync on and the other's 128 arrive on. A consumer waits for its turn before
// issuing its products and passes the turn on once they are issued, so the
// tensor cores alternate between the two while the other runs its softmax.
// Predicated on the consumer (0 or 1), not branched: the ids stay immediates.
constexpr int kTurnBarrier = 3;  // and 4; 1 and 2 are warpgroup_barrier's
__device__ __forceinline__ void wait_for_turn(int consumer) {
  asm volatile(
      "{\n .reg .pred first;\n setp.eq.s32 first, %0, 0;\n"
      " @first bar.sync %1, 256;\n @!first bar.sync %2, 256;\n}\n" ::"r"(consumer),
      "n"(kTurnBarrier), "n"(kTurnBarrier + 1)
      : "memory");
}
__device__ __forceinline__ void pass_turn(int consumer) {  // to the other consumer
  asm volatile(
      "{\n .reg .pred first;\n setp.eq.s32 first, %0, 0;\n"
      " @first bar.arrive %2, 256;\n @!first bar.arrive %1, 256;\n}\n" ::"r"(consumer),
      "n"(kTurnBarrier), "n"(kTurnBarrier + 1)
      : "memory");
}

// The fused dq's barriers: both consumer warpgroups (256 threads), and one
// consumer's own (warpgroup_barrier 1 or 2, predicated on it: the ids stay
// immediates).
constexpr int kConsumersBarrier = 5;
__device__ __forceinline__ void both_consumers_barrier() {
  asm volatile("bar.sync %0, 256;\n" ::"n"(kConsumersBarrier) : "memory");
}
__device__ __forceinline__ void warpgroup_barrier_of(int consumer) {
  asm volatile(
      "{\n .reg .pred first;\n setp.eq.s32 first, %0, 0;\n"
      " @first bar.sync 1, 128;\n @!first bar.sync 2, 128;\n}\n" ::"r"(consumer)
      : "memory");
}

// The warpgroup-MMA fence, commit and waits (warpgroup_wait_all_but_newest:
// for every committed group but the newest); in a build for another
// architecture traps (the launchers never select these kernels there).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void warpgroup_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void warpgroup_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void warpgroup_wait_all() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
__device__ __forceinline__ void warpgroup_wait_all_but_newest() {
  asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
}
#else
__device__ __forceinline__ void warpgroup_fence() {
  __trap();
}
__device__ __forceinline__ void warpgroup_commit() {
  __trap();
}
__device__ __forceinline__ void warpgroup_wait_all() {
  __trap();
}
__device__ __forceinline__ void warpgroup_wait_all_but_newest() {
  __trap();
}
#endif
// d[8][4] (+)= A[64 x 16] B[16 x 64]: A and B from shared-memory descriptors
// (K-major); scale_d 0 overwrites d.
template <typename T>
__device__ __forceinline__ void wgmma_ss_m64n64k16(float (&d)[8][4], uint64_t desc_a,
                                                   uint64_t desc_b, int scale_d);
// d[8][4] += A[64 x 16] B[16 x 64]: A from this thread's fragments (as
// mma.sync m16n8k16's A), B from a descriptor, transposed (MN-major).
template <typename T>
__device__ __forceinline__ void wgmma_rs_m64n64k16(float (&d)[8][4], const uint32_t (&a)[4],
                                                   uint64_t desc_b);

// d[16][4] (+)= A[64 x 16] B[16 x 128]: the same with 128 columns (both K-major).
template <typename T>
__device__ __forceinline__ void wgmma_ss_m64n128k16(float (&d)[16][4], uint64_t desc_a,
                                                    uint64_t desc_b, int scale_d);
// d[8][4] (+)= A[64 x 16] B[16 x 64] with both operands from descriptors
// read MN-major (transposed): A stored [16 k rows][64 m], B [16 k rows][64 n]
// (the fused dq's dq = ds k from ds^T and k as they lie in shared memory).
template <typename T>
__device__ __forceinline__ void wgmma_ss_m64n64k16_transposed(float (&d)[8][4], uint64_t desc_a,
                                                              uint64_t desc_b, int scale_d);
// d[4][4] (+)= A[64 x 16] B[16 x 32], both read MN-major: the fused dq's half
// of head_dim 64 (B's 32 columns may start mid-row of the 128-byte swizzle:
// the swizzle is applied to the whole address).
template <typename T>
__device__ __forceinline__ void wgmma_ss_m64n32k16_transposed(float (&d)[4][4], uint64_t desc_a,
                                                              uint64_t desc_b, int scale_d);
// A warpgroup's register budget per thread, moved to N (a multiple of 8, 24
// to 256) by every thread of the warpgroup: the warp-specialized forward's
// producer gives registers up and its consumers take them.
template <int N>
__device__ __forceinline__ void warpgroup_release_registers();
template <int N>
__device__ __forceinline__ void warpgroup_claim_registers();

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The 32 fp32 accumulators of one thread, as asm operands %0 .. %31.
#define LIGER_WGMMA_D_LIST                                                                 \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, " \
  "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define LIGER_WGMMA_D_OPERANDS(d)                                                               \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),     \
      "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
      "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), \
      "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
      "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), \
      "+f"(d[7][2]), "+f"(d[7][3])
// SS (both operands from descriptors): NAME<CTYPE>(d, desc_a, desc_b,
// scale_d) for m64nNk16, the N / 2 accumulators %0 .. (LIST, OPERANDS), then
// a-desc A, b-desc B and scale-d from S (as asm operand names); scale-a 1,
// scale-b 1, TRANSPOSES: "tnsp-a, tnsp-b" (1: that operand read MN-major).
#define LIGER_WGMMA_SS(NAME, N, TYPE, CTYPE, LIST, OPERANDS, A, B, S, TRANSPOSES)                \
  template <>                                                                                    \
  __device__ __forceinline__ void NAME<CTYPE>(float(&d)[N / 8][4], uint64_t desc_a,              \
                                              uint64_t desc_b, int scale_d) {                    \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " S                                           \
                 ", 0;\n"                                                                        \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TYPE "." TYPE " " LIST ", " A \
                 ", " B ", p, 1, 1, " TRANSPOSES ";\n}\n"                                        \
                 : OPERANDS(d)                                                                   \
                 : "l"(desc_a), "l"(desc_b), "r"(scale_d));                                      \
  }
// RS: d, a registers %32-%35, b-desc %36, scale-d from %37 (1); b transposed (MN-major).
#define LIGER_WGMMA_RS(TYPE, CTYPE)                                                        \
  template <>                                                                              \
  __device__ __forceinline__ void wgmma_rs_m64n64k16<CTYPE>(                               \
      float(&d)[8][4], const uint32_t(&a)[4], uint64_t desc_b) {                           \
    asm volatile(                                                                          \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                       \
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " " LIGER_WGMMA_D_LIST \
        ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"                                    \
        : LIGER_WGMMA_D_OPERANDS(d)                                                        \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));                \
  }
// The 64 accumulators of m64n128k16 as %0 .. %63: n8 tiles 0-7, then 8-15.
#define LIGER_WGMMA_D128_LIST                                                                   \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "  \
  "%56, %57, %58, %59, %60, %61, %62, %63}"
// The 64 accumulators of m64n128k16 as asm operands.
#define LIGER_WGMMA_D128_OPERANDS(d) LIGER_WGMMA_D_OPERANDS(d), LIGER_WGMMA_D_OPERANDS((d + 8))
// The 16 accumulators of m64n32k16 as %0 .. %15.
#define LIGER_WGMMA_D32_LIST \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define LIGER_WGMMA_D32_OPERANDS(d)                                                             \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),     \
      "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
      "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
#define LIGER_WGMMA_SS64(CTYPE, TYPE, NAME, TRANSPOSES)                                           \
  LIGER_WGMMA_SS(NAME, 64, TYPE, CTYPE, LIGER_WGMMA_D_LIST, LIGER_WGMMA_D_OPERANDS, "%32", "%33", \
                 "%34", TRANSPOSES)
LIGER_WGMMA_SS64(__nv_bfloat16, "bf16", wgmma_ss_m64n64k16, "0, 0")
LIGER_WGMMA_SS64(__half, "f16", wgmma_ss_m64n64k16, "0, 0")
LIGER_WGMMA_SS64(__nv_bfloat16, "bf16", wgmma_ss_m64n64k16_transposed, "1, 1")
LIGER_WGMMA_SS64(__half, "f16", wgmma_ss_m64n64k16_transposed, "1, 1")
LIGER_WGMMA_SS(wgmma_ss_m64n32k16_transposed, 32, "bf16", __nv_bfloat16, LIGER_WGMMA_D32_LIST,
               LIGER_WGMMA_D32_OPERANDS, "%16", "%17", "%18", "1, 1")
LIGER_WGMMA_SS(wgmma_ss_m64n32k16_transposed, 32, "f16", __half, LIGER_WGMMA_D32_LIST,
               LIGER_WGMMA_D32_OPERANDS, "%16", "%17", "%18", "1, 1")
LIGER_WGMMA_SS(wgmma_ss_m64n128k16, 128, "bf16", __nv_bfloat16, LIGER_WGMMA_D128_LIST,
               LIGER_WGMMA_D128_OPERANDS, "%64", "%65", "%66", "0, 0")
LIGER_WGMMA_SS(wgmma_ss_m64n128k16, 128, "f16", __half, LIGER_WGMMA_D128_LIST,
               LIGER_WGMMA_D128_OPERANDS, "%64", "%65", "%66", "0, 0")
LIGER_WGMMA_RS("bf16", __nv_bfloat16)
LIGER_WGMMA_RS("f16", __half)
#undef LIGER_WGMMA_SS
#undef LIGER_WGMMA_SS64
#undef LIGER_WGMMA_RS
#undef LIGER_WGMMA_D128_OPERANDS
#undef LIGER_WGMMA_D_OPERANDS
#undef LIGER_WGMMA_D_LIST
#undef LIGER_WGMMA_D128_LIST
#undef LIGER_WGMMA_D32_OPERANDS
#undef LIGER_WGMMA_D32_LIST
template <int N>
__device__ __forceinline__ void warpgroup_release_registers() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void warpgroup_claim_registers() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
#else
template <typename T>
__device__ __forceinline__ void wgmma_ss_m64n64k16(float (&)[8][4], uint64_t, uint64_t, int) {
  __trap();  // built without sm_90a: the launcher never selects this kernel
}
template <typename T>
__device__ __forceinline__ void wgmma_rs_m64n64k16(float (&)[8][4], const uint32_t (&)[4],
                                                   uint64_t) {
  __trap();
}
template <typename T>
__device__ __forceinline__ void wgmma_ss_m64n128k16(float (&)[16][4], uint64_t, uint64_t, int) {
  __trap();
}
template <typename T>
__device__ __forceinline__ void wgmma_ss_m64n64k16_transposed(float (&)[8][4], uint64_t, uint64_t,
                                                              int) {
  __trap();
}
template <typename T>
__device__ __forceinline__ void wgmma_ss_m64n32k16_transposed(float (&)[4][4], uint64_t, uint64_t,
                                                              int) {
  __trap();
}
template <int N>
__device__ __forceinline__ void warpgroup_release_registers() {
  __trap();
}
template <int N>
__device__ __forceinline__ void warpgroup_claim_registers() {
  __trap();
}
#endif

// The products of a 64-row tile on warpgroup MMA, for head_dim 64 and 128
// and tiles in the panel layout. The accumulators are the mma.sync
// products' (a warp's rows 16 w + g and 16 w + g + 8, n8 tile j at [j]), so
// the kernels' softmax, masks and stores serve both.
//   wgmma_abt:       acc[64 x 64] += A B^T, A and B [64, D] (K-major: rows
//                    of D), in D / 16 steps of 16 columns (a step's start
//                    moves 32 bytes within a panel; the swizzle applies to
//                    the address bits);
//   wgmma_fragments: acc[64 x D] += P M, P [64 x 64] as the A fragments of
//                    its 4 k steps, M [64, D] read MN-major (transposed), per
//                    64-column panel 4 steps of 16 rows (2048 bytes a step);
//   wgmma_pm:        the same with P from accumulators, rounded to T (cast).
// The wgmma_issue_ forms only start the products: the caller commits them,
// waits, and then pins the registers they wrote and read (pin_registers), so
// that nothing touches them while the tensor cores run (the overlapped
// schedules work on other registers meanwhile).
//
// pin_registers: an empty asm that reads and writes each register, so the
// compiler keeps every instruction on them before it and every use after it
// in place: the warpgroup fence then orders the accumulators' and
// fragments' last writes before the wgmma, and their reads after the wait.
template <int N>
__device__ __forceinline__ void pin_registers(float (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(r[i][e])::"memory");
  }
}
template <int N>
__device__ __forceinline__ void pin_registers(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(r[i][e])::"memory");
  }
}

// kOverwrite: acc = A B^T (the first step ignores acc's values, so the
// caller need not zero it), else acc += A B^T.
// RA, RB: the rows of A's and B's tiles (their panels' depth: the
// warp-specialized dk/dv reads its 64 keys out of a 128-row tile).
template <typename T, int D, bool kOverwrite = false, int RA = 64, int RB = 64>
__device__ __forceinline__ void wgmma_issue_abt(float (&acc)[8][4], const T* tile_a,
                                                const T* tile_b) {
  pin_registers(acc);
  warpgroup_fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int column = (kk % 4) * 16;  // elements: the panel kk / 4, then 16 columns
    wgmma_ss_m64n64k16<T>(acc, swizzled_descriptor(tile_a + (kk / 4) * RA * 64 + column),
                          swizzled_descriptor(tile_b + (kk / 4) * RB * 64 + column),
                          kOverwrite && kk == 0 ? 0 : 1);
  }
}
template <typename T, int D>
__device__ __forceinline__ void wgmma_abt(float (&acc)[8][4], const T* tile_a, const T* tile_b) {
  wgmma_issue_abt<T, D>(acc, tile_a, tile_b);
  warpgroup_commit();
  warpgroup_wait_all();
  pin_registers(acc);
}
// K: the rows of M (64, or 128 in the warp-specialized forward: P [64 x K]
// as K / 16 k steps, M's panels K rows deep).
template <typename T, int D, int K = 64>
__device__ __forceinline__ void wgmma_issue_fragments(float (&acc)[D / 8][4],
                                                      uint32_t (&a)[K / 16][4], const T* tile) {
  // the accumulator as D / 64 panels of 8 n8 tiles (panel p's tiles at 8 p ..)
  auto& panels = reinterpret_cast<float(&)[D / 64][8][4]>(acc);
  pin_registers(acc);
  pin_registers(a);
  warpgroup_fence();
#pragma unroll
  for (int p = 0; p < D / 64; ++p) {
#pragma unroll
    for (int kk = 0; kk < K / 16; ++kk) {
      wgmma_rs_m64n64k16<T>(panels[p], a[kk],
                            swizzled_descriptor(tile + p * K * 64 + kk * 16 * 64));
    }
  }
}
template <typename T, int D, int K = 64>
__device__ __forceinline__ void wgmma_fragments(float (&acc)[D / 8][4], uint32_t (&a)[K / 16][4],
                                                const T* tile) {
  wgmma_issue_fragments<T, D, K>(acc, a, tile);
  warpgroup_commit();
  warpgroup_wait_all();
  pin_registers(acc);
}
template <typename T, int D>
__device__ __forceinline__ void wgmma_pm(float (&acc)[D / 8][4], const float (&p)[8][4],
                                         const T* tile) {
  uint32_t a[4][4];
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) pack_a_fragment<T>(p, kk, a[kk]);
  wgmma_fragments<T, D>(acc, a, tile);
}

// The backward kernels' products of one tile on either path: kWgmma, the
// warpgroup's (N = 8, the tiles' 64 rows; row0 is then the warp's own 16
// w), else this warp's mma.sync products (product_abt, product_pm).
template <typename T, int D, int N, bool kWgmma>
__device__ __forceinline__ void tile_abt(float (&acc)[N][4], const T* tile_a, int row0,
                                         const T* tile_b, int lane) {
  if constexpr (kWgmma) {
    static_assert(N == 8, "warpgroup products: tiles of 64 rows");
    wgmma_abt<T, D>(acc, tile_a, tile_b);
  } else {
    product_abt<T, D, N>(acc, tile_a, row0, tile_b, lane);
  }
}
template <typename T, int D, int N, bool kWgmma>
__device__ __forceinline__ void tile_pm(float (&acc)[D / 8][4], const float (&p)[N][4],
                                        const T* tile, int lane) {
  if constexpr (kWgmma) {
    static_assert(N == 8, "warpgroup products: tiles of 64 rows");
    wgmma_pm<T, D>(acc, p, tile);
  } else {
    product_pm<T, D, N>(acc, p, tile, lane);
  }
}

// The overlapped forward's walk (FlashAttention-3's order within one
// warpgroup): tile j's scores run on the tensor cores together with tile
// j - 1's o += p v, and tile j's softmax waits only for its scores:
//   issue s_j = q k_j^T;  issue o += p_{j-1} v_{j-1};  wait for s_j;
//   softmax of tile j -> p_j;  wait for o;  o *= 2^(m_{j-1} - m_j)
// and after the last tile o += p_last v_last. Keys and values each in two
// buffers (KeyValueBuffers): at tile j the copies of keys j + 1 and values
// j start (their buffers' last readers, s_{j-1} and o += p_{j-2} v_{j-2},
// completed before the barrier that opens tile j) and land by tile j + 1.
// The callables: issue_scores(keys) and issue_values(values) start a
// product (this walk commits each as a group and waits for it);
// softmax(n0, visibility) runs once the scores have landed, and
// finish_values() once o has (it rescales o). The query tile's copies,
// committed before, arrive with the first tile.
template <typename T, int D, int BN, typename IssueScores, typename IssueValues, typename Softmax,
          typename FinishValues>
__device__ __forceinline__ void walk_key_tiles_overlapped(
    const KeyTileWalk<BN>& walk, const KeyValueBuffers<T, D, BN>& kv, const T* k, const T* v,
    int64_t tk, int64_t stride, IssueScores&& issue_scores, IssueValues&& issue_values,
    Softmax&& softmax, FinishValues&& finish_values) {
  auto load = [&](T* tile, const T* matrix, int first) {
    load_rows<T, D, BN, true>(tile, matrix, first, tk, stride);
  };
  TileVisibility vis0{}, vis1{};  // of tiles n0 and n1, found by the walk's next
  int n0 = walk.first_tile(vis0);
  if (n0 < walk.end) load(kv.keys(0), k, n0);
  copy_async_commit();
  copy_async_wait_all();  // the queries and the first keys (with no tile to walk, the queries)
  if (n0 >= walk.end) return;
  // The first tile: its scores alone. Every later tile issues both products
  // unconditionally, so no branch joins registers that a product in flight
  // writes (the compiler would copy them there and serialize the products).
  publish_copies<true>();
  issue_scores(kv.keys(0));
  warpgroup_commit();
  int n1 = walk.next(n0 + BN, vis1);
  if (n1 < walk.end) load(kv.keys(1), k, n1);
  load(kv.values(0), v, n0);
  copy_async_commit();
  warpgroup_wait_all();
  softmax(n0, vis0);
  finish_values();
  int buf = 1;  // tile n1's keys; the previous tile's values in the other buffer
  for (n0 = n1, vis0 = vis1; n0 < walk.end; buf ^= 1) {
    copy_async_wait_all();  // keys n0 and the previous tile's values
    publish_copies<true>();
    issue_scores(kv.keys(buf));
    warpgroup_commit();
    issue_values(kv.values(buf ^ 1));
    warpgroup_commit();
    n1 = walk.next(n0 + BN, vis1);
    if (n1 < walk.end) load(kv.keys(buf ^ 1), k, n1);
    load(kv.values(buf), v, n0);
    copy_async_commit();
    warpgroup_wait_all_but_newest();  // the scores; o += p v may still run
    softmax(n0, vis0);
    warpgroup_wait_all();
    finish_values();
    n0 = n1;
    vis0 = vis1;
  }
  copy_async_wait_all();  // the last tile's values
  publish_copies<true>();
  issue_values(kv.values(buf ^ 1));
  warpgroup_commit();
  warpgroup_wait_all();
}

// The passes' copies on the tensor memory accelerator (kernels/cuda/tma.cuh)
// instead of every thread's cp.async: thread 0 issues a tile's boxes (a
// predicated instruction, not a branch) and every thread waits on that buffer's barrier, so the
// copies cost the other threads no instructions and a tile no barrier to publish them (the TMA
// writes through the same asynchronous proxy the tensor cores read from). One block barrier per
// tile remains: no buffer is refilled before every warp is done with it. The barriers, in static
// shared memory: the queries, then the two key buffers, then the two value buffers.
enum TmaBarrier { kQueriesBarrier = 0, kKeysBarrier = 1, kValuesBarrier = 3, kTmaBarriers = 5 };

struct TmaTileBarriers {
  uint64_t* bars;
  uint32_t phases;  // bit i: the parity barrier i completes next

  __device__ __forceinline__ uint64_t* at(int i) const { return bars + i; }
  __device__ __forceinline__ void wait(int i) {
    barrier_wait(bars + i, (phases >> i) & 1u);
    phases ^= 1u << i;
  }
};

// Where a block's keys and values come from: maps of k and v, its key/value
// head and batch row.
template <typename T, int D, int BN>
struct TmaKeyValueSource {
  const CUtensorMap* keys;
  const CUtensorMap* values;
  int head, batch;

  // Issued by thread 0 (every thread calls them: tma_copy_rows).
  __device__ __forceinline__ void copy_keys(T* tile, int first, uint64_t* bar) const {
    tma_copy_rows<T, D, BN>(tile, keys, head, first, batch, bar, threadIdx.x == 0);
  }
  __device__ __forceinline__ void copy_values(T* tile, int first, uint64_t* bar) const {
    tma_copy_rows<T, D, BN>(tile, values, head, first, batch, bar, threadIdx.x == 0);
  }
};

// walk_key_tiles' order with TMA copies (dq): the keys and values of a tile
// share one barrier (two arrivals), kKeysBarrier + buffer; the query-side
// tiles' copies, issued before on kQueriesBarrier, are awaited first.
template <typename T, int D, int BN, typename Body>
__device__ __forceinline__ void walk_key_tiles_tma(const KeyTileWalk<BN>& walk,
                                                   const KeyValueBuffers<T, D, BN>& kv,
                                                   const TmaKeyValueSource<T, D, BN>& src,
                                                   TmaTileBarriers& bars, Body&& body) {
  auto copy = [&](int buf, int first) {  // keys [first, first + BN) of k and v
    src.copy_keys(kv.keys(buf), first, bars.at(kKeysBarrier + buf));
    src.copy_values(kv.values(buf), first, bars.at(kKeysBarrier + buf));
  };
  int n0 = walk.first_tile();
  if (n0 < walk.end) copy(0, n0);
  bars.wait(kQueriesBarrier);
  for (int buf = 0; n0 < walk.end; buf ^= 1) {
    const int n1 = walk.next(n0 + BN);
    if (n1 < walk.end) copy(buf ^ 1, n1);  // the other buffer's readers passed the last barrier
    bars.wait(kKeysBarrier + buf);
    body(n0, kv.keys(buf), kv.values(buf), walk.visibility(n0));
    __syncthreads();  // every warp is done with this buffer before it is refilled
    n0 = n1;
  }
}

// walk_key_tiles_one_value_buffer's order with TMA copies: per tile, the
// copies of its values and of the next tile's keys start, the scores run on
// its keys while the values arrive, then values_pass takes them. The query
// tile's copy, issued before on kQueriesBarrier, is awaited first.
template <typename T, int D, int BN, typename Scores, typename ValuesPass>
__device__ __forceinline__ void walk_key_tiles_tma_one_value_buffer(
    const KeyTileWalk<BN>& walk, const KeysValueBuffers<T, D, BN>& kv,
    const TmaKeyValueSource<T, D, BN>& src, TmaTileBarriers& bars, Scores&& scores,
    ValuesPass&& values_pass) {
  int n0 = walk.first_tile();
  if (n0 < walk.end) src.copy_keys(kv.keys(0), n0, bars.at(kKeysBarrier));
  bars.wait(kQueriesBarrier);
  for (int buf = 0; n0 < walk.end; buf ^= 1) {
    // the value buffer's and the other key buffer's readers passed the last barrier
    src.copy_values(kv.values(), n0, bars.at(kValuesBarrier));
    const int n1 = walk.next(n0 + BN);
    if (n1 < walk.end) src.copy_keys(kv.keys(buf ^ 1), n1, bars.at(kKeysBarrier + (buf ^ 1)));
    bars.wait(kKeysBarrier + buf);
    scores(n0, kv.keys(buf), walk.visibility(n0));
    bars.wait(kValuesBarrier);
    values_pass(kv.values());
    __syncthreads();  // every warp is done with the values and these keys before refills
    n0 = n1;
  }
}

// walk_key_tiles_overlapped's order with TMA copies (two key and two value
// buffers): tile j's scores on the tensor cores with tile j - 1's o += p v.
template <typename T, int D, int BN, typename IssueScores, typename IssueValues, typename Softmax,
          typename FinishValues>
__device__ __forceinline__ void walk_key_tiles_tma_overlapped(
    const KeyTileWalk<BN>& walk, const KeyValueBuffers<T, D, BN>& kv,
    const TmaKeyValueSource<T, D, BN>& src, TmaTileBarriers& bars, IssueScores&& issue_scores,
    IssueValues&& issue_values, Softmax&& softmax, FinishValues&& finish_values) {
  TileVisibility vis0{}, vis1{};  // of tiles n0 and n1, found by the walk's next
  int n0 = walk.first_tile(vis0);
  if (n0 < walk.end) src.copy_keys(kv.keys(0), n0, bars.at(kKeysBarrier));
  bars.wait(kQueriesBarrier);
  if (n0 >= walk.end) return;
  // The first tile: its scores alone (as walk_key_tiles_overlapped).
  bars.wait(kKeysBarrier);
  issue_scores(kv.keys(0));
  warpgroup_commit();
  int n1 = walk.next(n0 + BN, vis1);
  // buffers no product has read yet
  if (n1 < walk.end) src.copy_keys(kv.keys(1), n1, bars.at(kKeysBarrier + 1));
  src.copy_values(kv.values(0), n0, bars.at(kValuesBarrier));
  warpgroup_wait_all();
  softmax(n0, vis0);
  finish_values();
  int buf = 1;  // tile n1's keys; the previous tile's values in the other buffer
  for (n0 = n1, vis0 = vis1; n0 < walk.end; buf ^= 1) {
    bars.wait(kKeysBarrier + buf);          // keys n0
    bars.wait(kValuesBarrier + (buf ^ 1));  // the previous tile's values
    // Every warp is past the previous tile, whose products read the buffers
    // refilled below (keys buf ^ 1 by s_{j-1}, values buf by o += p_{j-2} v_{j-2}).
    __syncthreads();
    issue_scores(kv.keys(buf));
    warpgroup_commit();
    issue_values(kv.values(buf ^ 1));
    warpgroup_commit();
    n1 = walk.next(n0 + BN, vis1);
    if (n1 < walk.end) src.copy_keys(kv.keys(buf ^ 1), n1, bars.at(kKeysBarrier + (buf ^ 1)));
    src.copy_values(kv.values(buf), n0, bars.at(kValuesBarrier + buf));
    warpgroup_wait_all_but_newest();  // the scores; o += p v may still run
    softmax(n0, vis0);
    warpgroup_wait_all();
    finish_values();
    n0 = n1;
    vis0 = vis1;
  }
  bars.wait(kValuesBarrier + (buf ^ 1));  // the last tile's values
  issue_values(kv.values(buf ^ 1));
  warpgroup_commit();
  warpgroup_wait_all();
}

// At most 168 registers: 3 blocks share an SM (64 KiB of shared memory each
// at head_dim 128). kOverlap: the overlapped walk (walk_key_tiles_overlapped;
// at head_dim 128 its 80 KiB let 2 blocks share an SM, so up to 255 registers).
// kTma: the tiles copied by the tensor memory accelerator from the maps of q,
// k and v (the walk_key_tiles_tma_ forms), else by every thread's cp.async
// (the maps unused).
template <typename T, int D, bool kOverlap, bool kTma>
__global__ void __launch_bounds__(kThreads, kOverlap&& D == 128 ? 2 : 3)
    attention_forward_wgmma_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                   const T* __restrict__ v, T* __restrict__ out,
                                   float* __restrict__ lse, Geometry geo, Mask mask,
                                   ScoreTransform score, const __grid_constant__ CUtensorMap q_map,
                                   const __grid_constant__ CUtensorMap k_map,
                                   const __grid_constant__ CUtensorMap v_map) {
  static_assert(D == 64 || D == 128, "wgmma forward: head_dim 64 or 128");
  constexpr int BM = 64, BN = 64;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* tile_q = first_tile<T, true>(shared_bytes);
  __shared__ uint64_t tma_barriers[kTmaBarriers];

  const QueryBlock<D> blk(geo, BM);
  const int m0 = blk.m0, head = blk.head;
  const int64_t b = blk.b, q_stride = blk.q_stride, k_stride = blk.k_stride;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4;
  const T* q_b = blk.query_rows(q, geo);
  const T* k_b = blk.key_rows(k, geo);
  const T* v_b = blk.key_rows(v, geo);
  mask.select_batch_row(b);

  TmaTileBarriers bars{tma_barriers, 0u};
  const TmaKeyValueSource<T, D, BN> tma_source{&k_map, &v_map, blk.head_k, static_cast<int>(b)};
  if constexpr (kTma) {
    if (threadIdx.x == 0) {
      for (int i = 0; i < kTmaBarriers; ++i) barrier_init(bars.at(i), 1);
      barrier_init_fence();
    }
    __syncthreads();  // the barriers initialized before any thread waits on them
    tma_copy_rows<T, D, BM>(tile_q, &q_map, head, m0, static_cast<int>(b), bars.at(kQueriesBarrier),
                            threadIdx.x == 0);
  } else {
    load_rows<T, D, BM, true>(tile_q, q_b, m0, geo.tq, q_stride);
    copy_async_commit();
  }

  RowPairState r;
  r.set(m0 + warp * 16 + g, mask, geo.tq);
  r.start();
  const KeyTileWalk<BN> walk = KeyTileWalk<BN>::of_query_rows(mask, m0, BM, geo.tq);

  float acc_o[D / 8][4];
  zero(acc_o);

  // One tile's online softmax on its scores s: p rounded to T (cast) as the
  // A fragments `a` of o += p v, and the factors 2^(m_old - m) of the running o.
  auto softmax = [&](float(&s)[BN / 8][4], int n0, TileVisibility vis, uint32_t(&a)[BN / 16][4],
                     float& rescale_lo, float& rescale_hi) {
    score.to_base2_unit(s);
    if (!vis.full) mask_scores(s, mask, r, n0, t4);
    r.step(s, score.base2_factor(), rescale_lo, rescale_hi);
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) pack_a_fragment<T>(s, kk, a[kk]);
  };
  if constexpr (kOverlap) {
    float s[BN / 8][4];
    uint32_t p_now[BN / 16][4] = {};  // p of the tile whose o += p v is in flight
    uint32_t p_next[BN / 16][4];      // p of the tile whose scores were just taken
    float rescale_lo = 1.f, rescale_hi = 1.f;
    const KeyValueBuffers<T, D, BN> kv{tile_q + BM * D};  // two key and two value buffers
    auto issue_scores = [&](const T* keys) { wgmma_issue_abt<T, D, true>(s, tile_q, keys); };
    auto issue_values = [&](const T* values) { wgmma_issue_fragments<T, D>(acc_o, p_now, values); };
    auto take_scores = [&](int n0, TileVisibility vis) {
      pin_registers(s);
      softmax(s, n0, vis, p_next, rescale_lo, rescale_hi);
    };
    auto finish_values = [&]() {
      pin_registers(acc_o);
      pin_registers(p_now);
      rescale_rows(acc_o, rescale_lo, rescale_hi);
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
        for (int e = 0; e < 4; ++e) p_now[kk][e] = p_next[kk][e];
      }
    };
    if constexpr (kTma) {
      walk_key_tiles_tma_overlapped<T, D, BN>(walk, kv, tma_source, bars, issue_scores,
                                              issue_values, take_scores, finish_values);
    } else {
      walk_key_tiles_overlapped<T, D, BN>(walk, kv, k_b, v_b, geo.tk, k_stride, issue_scores,
                                          issue_values, take_scores, finish_values);
    }
    pin_registers(acc_o);
  } else {
    // One tile: s = q k^T, the online softmax and o rescaled, then o += p v.
    uint32_t a[BN / 16][4];
    auto scores = [&](int n0, const T* keys, TileVisibility vis) {
      float s[BN / 8][4];
      zero(s);
      wgmma_abt<T, D>(s, tile_q, keys);
      float rescale_lo, rescale_hi;
      softmax(s, n0, vis, a, rescale_lo, rescale_hi);
      rescale_rows_that_moved(acc_o, rescale_lo, rescale_hi);
    };
    auto values_pass = [&](const T* values) { wgmma_fragments<T, D>(acc_o, a, values); };
    // two key buffers and one value buffer after q, as the mma.sync forward at head_dim 128
    const KeysValueBuffers<T, D, BN> kv{tile_q + BM * D};
    if constexpr (kTma) {
      walk_key_tiles_tma_one_value_buffer<T, D, BN>(walk, kv, tma_source, bars, scores,
                                                    values_pass);
    } else {
      walk_key_tiles_one_value_buffer<T, D, BN, true>(walk, kv, k_b, v_b, geo.tk, k_stride, scores,
                                                      values_pass);
    }
  }
  r.template finish<T, D>(out, lse, geo, b, head, acc_o, t4);
}

// ---------------------------------------------------------------------------
// Forward, warp-specialized (FlashAttention-3's division of labour, our code):
// a block of 128 query rows is three warpgroups.
//   producer (warpgroup 0, WarpSpecializedRegisters): one thread walks the key tiles the
//     block's queries see and copies each tile's 128 keys and 128 values by
//     TMA into a ring of kStages stages, refilling a stage's keys (values)
//     only once every consumer warp has released them;
//   consumers (warpgroups 1 and 2, the rest of the registers, setmaxnreg): 64 query
//     rows each; per tile s = q k^T (m64n128k16: each product reads the
//     query panel once for 128 keys, half the shared-memory reads per score
//     of 64-key tiles), the online softmax, o += p v. A stage's keys are
//     released as soon as the scores are taken, its values once o += p v
//     has read them, so the next keys land while the values are still in use.
// Both consumers read every stage, so a key/value tile is copied once per 128
// queries, not once per 64. kOverlap: the consumers' products in
// FlashAttention-3's order (tile j's scores on the tensor cores together
// with tile j - 1's o += p v, as walk_key_tiles_overlapped); else one
// product at a time, and a consumer skips both products of a tile none of
// its own rows see (past its rows' diagonal, another document), still
// releasing the stage. The overlapped order computes such tiles fully masked
// (p = 0): a branch between products in flight would serialize them. The
// producer writes each stage's StageTile (where the tile starts, what each
// consumer's rows see of it; an end marker after the last), so the
// consumers keep no walk of their own.
// The barriers (static shared memory): the queries', then per stage keys
// landed, values landed, keys free and values free (the last two: 8
// arrivals, each consumer warp's lane 0 once its products that read them
// completed).
// ---------------------------------------------------------------------------

constexpr int kWarpSpecializedThreads = 3 * kThreads;
constexpr int kConsumerWarps = 8;
// The registers per thread of the producer's and the consumers' warpgroups
// (128 x producer + 256 x consumer <= 128 x 168 x 3, the launch bounds'
// share). At head_dim 64 the consumers need 224 at most and 56 keep the
// producer's walk in registers; at 128 the consumers' accumulators take 240
// and the producer's walk fits in 24 (spilling a few bytes in dk/dv).
template <int D>
struct WarpSpecializedRegisters {
  static constexpr int kProducer = D == 64 ? 56 : 24;
  static constexpr int kConsumer = D == 64 ? 224 : 240;
  static_assert(128 * kProducer + 256 * kConsumer <= 3 * 128 * 168, "the block's registers");
};
// The warp-specialized dk/dv's: as above, but query tiles of 128 (BM) hold
// twice the scores (s^T and dp^T 64 registers each), so its consumers take 240.
template <int D, int BM>
struct DkdvWarpSpecializedRegisters {
  static constexpr int kProducer = BM == 128 ? 24 : WarpSpecializedRegisters<D>::kProducer;
  static constexpr int kConsumer = BM == 128 ? 240 : WarpSpecializedRegisters<D>::kConsumer;
  static_assert(128 * kProducer + 256 * kConsumer <= 3 * 128 * 168, "the block's registers");
};

// acc[64 x 128] = A B^T: A [64, D] (panels RA rows deep, the warpgroup's rows
// from tile_a), B [128, D] (panels RB rows deep), in D / 16 steps of 16
// columns; overwrites acc (the first step's scale-d is 0). Only starts the
// products, as wgmma_issue_abt; wgmma_scores_128 also waits for them.
template <typename T, int D, int RA, int RB>
__device__ __forceinline__ void wgmma_issue_scores_128(float (&acc)[16][4], const T* tile_a,
                                                       const T* tile_b) {
  pin_registers(acc);
  warpgroup_fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int column = (kk % 4) * 16;  // within the panel kk / 4
    wgmma_ss_m64n128k16<T>(acc, swizzled_descriptor(tile_a + (kk / 4) * RA * 64 + column),
                           swizzled_descriptor(tile_b + (kk / 4) * RB * 64 + column),
                           kk == 0 ? 0 : 1);
  }
}
template <typename T, int D, int RA, int RB>
__device__ __forceinline__ void wgmma_scores_128(float (&acc)[16][4], const T* tile_a,
                                                 const T* tile_b) {
  wgmma_issue_scores_128<T, D, RA, RB>(acc, tile_a, tile_b);
  warpgroup_commit();
  warpgroup_wait_all();
  pin_registers(acc);
}

// What the producer tells the consumers about the tile in a stage, stored
// before the stage's landed barrier is arrived on (whose release makes it
// visible to their wait): where the tile starts (first < 0: the walk is
// over, and the stage holds no tile), the query head (dk/dv), and whether
// each consumer's rows (keys) see none / all of it. The consumers then keep
// no walk of their own, which frees their registers for the products.
struct StageTile {
  int first, head;
  TileVisibility vis[2];
};

// With documents, the warp-specialized forward's key tiles' document ids as
// 32-bit codes in shared memory, stored by the producer warp's lanes while
// the keys' copy flies, only for the tiles some consumer masks (the only
// ones whose codes are read): code = id - base for the ids in
// [base, base + span] (the block's rows' documents), else -1 (a document no
// row of the block is in).
// The consumers compare them with their rows' codes (id - base): no global
// loads, and half the registers, in the softmax of a tile the mask cuts.
// Only where the rows' span fits (staged; else the ids are read as
// mask_scores does). Two buffers per stage, by the parity of the stage's use:
// the overlapped order masks tile i after releasing its keys, so tile
// i + kStages's codes (written once those keys are released) must not
// overwrite tile i's; tile i + 2 kStages's wait for tile i + kStages's keys,
// released only after tile i was masked.
template <int kStages, int BN>
struct KeyDocumentCodes {
  int codes[2 * kStages][BN];
  int64_t base, span;
  bool staged;
  __device__ __forceinline__ int* of_tile(int i) {
    return codes[2 * ring_stage(i, kStages) + (i / kStages) % 2];
  }
  // The code of document id `id` (unsigned: no overflow for any int64 ids).
  __device__ __forceinline__ int code_of(int64_t id) const {
    const uint64_t from_base = static_cast<uint64_t>(id) - static_cast<uint64_t>(base);
    return from_base <= static_cast<uint64_t>(span) ? static_cast<int>(from_base) : -1;
  }
};

// The ring of stages after the query tile, and its barriers; tile i of a
// walk goes to stage i % kStages as that stage's use i / kStages (the phase
// arithmetic: kernels/cuda/stage_ring.h).
template <typename T, int D, int kStages>
struct StageRing {
  static constexpr int kRows = 128;  // keys per stage
  static constexpr int kBarriers = 1 + 4 * kStages;
  KeyValueBuffers<T, D, kRows> tiles;
  uint64_t* bars;  // [0] queries, then keys landed, values landed, keys free, values free

  __device__ __forceinline__ uint64_t* queries() const { return bars; }
  __device__ __forceinline__ uint64_t* keys_landed(int s) const { return bars + 1 + s; }
  __device__ __forceinline__ uint64_t* values_landed(int s) const { return bars + 1 + kStages + s; }
  __device__ __forceinline__ uint64_t* keys_free(int s) const { return bars + 1 + 2 * kStages + s; }
  __device__ __forceinline__ uint64_t* values_free(int s) const {
    return bars + 1 + 3 * kStages + s;
  }
  __device__ __forceinline__ static int stage(int i) { return ring_stage(i, kStages); }
  // The parity of use i / kStages of a stage: that use's completion of its landed barriers.
  __device__ __forceinline__ static uint32_t parity(int i) {
    return ring_landed_parity(i, kStages);
  }

  // Consumers: waits for tile i's keys (values); releases them (each warp's
  // lane 0 arrives, once the warp's lanes are past their reads of the stage).
  __device__ __forceinline__ void wait_keys(int i) const {
    barrier_wait(keys_landed(stage(i)), parity(i));
  }
  __device__ __forceinline__ void wait_values(int i) const {
    barrier_wait(values_landed(stage(i)), parity(i));
  }
  __device__ __forceinline__ void release_keys(int i, int lane) const {
    __syncwarp();
    barrier_arrive(keys_free(stage(i)), lane == 0);
  }
  __device__ __forceinline__ void release_values(int i, int lane) const {
    __syncwarp();
    barrier_arrive(values_free(stage(i)), lane == 0);
  }
  // Producer: before tile i's copy into its stage, the previous use's
  // release (use u > 0 waits for the u-th completion: parity (u - 1) & 1).
  __device__ __forceinline__ void wait_free(uint64_t* bar, int i) const {
    if (ring_reuses_stage(i, kStages)) barrier_wait(bar, ring_free_parity(i, kStages));
  }
};

template <typename T, int D, int kStages, bool kOverlap, bool kPingPong>
__global__ void __launch_bounds__(kWarpSpecializedThreads, 1)
    attention_forward_ws_kernel(T* __restrict__ out, float* __restrict__ lse, Geometry geo,
                                Mask mask, ScoreTransform score,
                                const __grid_constant__ CUtensorMap q_map,
                                const __grid_constant__ CUtensorMap k_map,
                                const __grid_constant__ CUtensorMap v_map) {
  static_assert(D == 64 || D == 128, "warp-specialized forward: head_dim 64 or 128");
  static_assert(!kPingPong || kOverlap, "the consumers take turns in the overlapped order");
  constexpr int BM = 128, BN = 128, kRowsPerConsumer = 64;
  using Ring = StageRing<T, D, kStages>;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  __shared__ uint64_t barriers[Ring::kBarriers];
  __shared__ StageTile stage_tiles[kStages];
  __shared__ KeyDocumentCodes<kStages, BN> doc_codes;
  T* tile_q = first_tile<T, true>(shared_bytes);
  const Ring ring{KeyValueBuffers<T, D, BN>{tile_q + BM * D}, barriers};

  const QueryBlock<D> blk(geo, BM);
  const int batch = static_cast<int>(blk.b);
  mask.select_batch_row(blk.b);
  if (threadIdx.x == 0) {
    barrier_init(ring.queries(), 1);
    for (int s = 0; s < kStages; ++s) {
      barrier_init(ring.keys_landed(s), 1 + 32);  // the keys' copy; the producer warp's lanes
      barrier_init(ring.values_landed(s), 1);
      barrier_init(ring.keys_free(s), kConsumerWarps);
      barrier_init(ring.values_free(s), kConsumerWarps);
    }
    barrier_init_fence();
  }
  __syncthreads();  // the barriers initialized before any thread waits on them

  const int warpgroup = threadIdx.x / kThreads;
  if (warpgroup == 0) {
    warpgroup_release_registers<WarpSpecializedRegisters<D>::kProducer>();
    if (threadIdx.x >= 32) return;
    // Warp 0: lane 0 issues the copies and writes the tiles' records; each
    // lane stores 4 of each tile's 128 key document codes.
    const int lane = threadIdx.x;
    const bool issuer = lane == 0;
    const KeyTileWalk<BN> walk = KeyTileWalk<BN>::of_query_rows(mask, blk.m0, BM, geo.tq);
    tma_copy_rows<T, D, BM>(tile_q, &q_map, blk.head, blk.m0, batch, ring.queries(), issuer);
    // With documents, each consumer's rows' document ids read once (Tq == Tk:
    // positions = rows), kept in shared memory: the producer's registers are
    // few. Their span sets the key codes' base (consumer 0's rows are all
    // below Tq; consumer 1's where any is).
    __shared__ DocumentRange q_docs[2];
    if (issuer) {
      for (int c = 0; c < 2; ++c) {
        const int rows0 = blk.m0 + kRowsPerConsumer * c;
        q_docs[c] = mask.documents != nullptr && rows0 < geo.tq
                        ? document_range_of(mask, rows0, rows0 + kRowsPerConsumer - 1)
                        : DocumentRange{0, 0};
      }
      const bool both = blk.m0 + kRowsPerConsumer < geo.tq;
      const int64_t lo = both ? min(q_docs[0].lo, q_docs[1].lo) : q_docs[0].lo;
      const int64_t hi = both ? max(q_docs[0].hi, q_docs[1].hi) : q_docs[0].hi;
      // hi - lo unsigned: exact for any int64 ids (hi >= lo)
      const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
      doc_codes.base = lo;
      doc_codes.span = span < INT32_MAX ? static_cast<int64_t>(span) : INT32_MAX;
      doc_codes.staged = mask.documents != nullptr && span < INT32_MAX;  // the codes fit
    }
    __syncwarp();
    const bool stage_codes = doc_codes.staged;
    // Every tile of the walk's span: the issuer forms each consumer's
    // visibility (with documents one read of the tile's range, before the
    // stage is free), which also skips the tiles no consumer's rows see.
    int i = 0;
    for (int n = (walk.begin / BN) * BN; n < walk.end; n += BN) {
      TileVisibility vis[2];
      int wanted = 0;  // bit 0: some consumer's rows see part of it; bit 1: some consumer masks it
      if (issuer) {
        const DocumentRange k_docs = mask.documents != nullptr
                                         ? document_range_of(mask, n, n + BN - 1)
                                         : DocumentRange{0, 0};
        for (int c = 0; c < 2; ++c) {  // each consumer's rows; rows all past Tq see nothing
          const int rows0 = blk.m0 + kRowsPerConsumer * c;
          const int q_last = static_cast<int>(min64(rows0 + kRowsPerConsumer, geo.tq)) - 1;
          vis[c] = rows0 < geo.tq ? tile_visibility(mask, rows0 + mask.offset, q_last + mask.offset,
                                                    n, n + BN - 1, &q_docs[c], &k_docs)
                                  : TileVisibility{true, false};
          if (!vis[c].empty) wanted |= 1;
          // one its rows see in part; in the overlapped order also one they
          // see none of (computed, then masked whole)
          if (!vis[c].full && (kOverlap || !vis[c].empty)) wanted |= 2;
        }
      }
      wanted = __shfl_sync(0xffffffffu, wanted, 0);
      if ((wanted & 1) == 0) continue;
      const int s = Ring::stage(i);
      ring.wait_free(ring.keys_free(s), i);  // also: the consumers have read the stage's tile
      if (issuer) {
        StageTile& tile = stage_tiles[s];
        tile.first = n;
        tile.vis[0] = vis[0];
        tile.vis[1] = vis[1];
      }
      // The keys' copy first, so that it flies while the lanes read the ids.
      tma_copy_rows<T, D, BN>(ring.tiles.keys(s), &k_map, blk.head_k, n, batch, ring.keys_landed(s),
                              issuer);
      // Codes only for a tile some consumer masks: the others' are never
      // read. Keys past Tk: the last one's (the mask rejects them).
      if (stage_codes && (wanted & 2) != 0) {
        int* codes = doc_codes.of_tile(i);
        for (int k = lane; k < BN; k += 32) {
          codes[k] = doc_codes.code_of(__ldg(mask.documents + min64(n + k, geo.tk - 1)));
        }
      }
      barrier_arrive(ring.keys_landed(s), true);  // releases the codes and the record
      // Only the issuer waits for the values' release: it alone advances that
      // barrier (by the copy), so another lane could fall a phase behind.
      if (issuer) ring.wait_free(ring.values_free(s), i);
      tma_copy_rows<T, D, BN>(ring.tiles.values(s), &v_map, blk.head_k, n, batch,
                              ring.values_landed(s), issuer);
      ++i;
    }
    // The end of the walk: a stage with no tile (its keys' 33 arrivals without bytes).
    const int s = Ring::stage(i);
    ring.wait_free(ring.keys_free(s), i);
    if (issuer) stage_tiles[s].first = -1;
    barrier_arrive(ring.keys_landed(s), true);
    barrier_arrive(ring.keys_landed(s), issuer);
    return;
  }
  warpgroup_claim_registers<WarpSpecializedRegisters<D>::kConsumer>();

  const int consumer = warpgroup - 1;
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4;
  // this consumer's rows in each 64-column panel of the query tile (BM rows deep)
  const T* my_queries = tile_q + kRowsPerConsumer * consumer * 64;
  RowPairState r;
  r.set(blk.m0 + kRowsPerConsumer * consumer + warp * 16 + g, mask, geo.tq);
  r.start();
  float acc_o[D / 8][4];
  zero(acc_o);
  // Tile i's place and visibility to this consumer, once its keys have landed.
  struct Tile {
    int first;
    TileVisibility vis;
  };
  auto tile_of = [&](int i) {
    ring.wait_keys(i);
    const StageTile& t = stage_tiles[Ring::stage(i)];
    return Tile{t.first, t.vis[consumer]};
  };
  // The mask on tile i's scores (a tile it cuts): by the rows' visible key
  // ranges, with documents also the keys' codes from shared memory
  // (KeyDocumentCodes, read once tile 0's keys landed); where the codes could
  // not be formed, as mask_scores.
  const VisibleKeys seen_lo = visible_keys_of(mask, r.pos_lo);
  const VisibleKeys seen_hi = visible_keys_of(mask, r.pos_hi);
  auto mask_tile = [&](float(&sc)[BN / 8][4], const Tile& t, int i) {
    if (mask.documents == nullptr) {
      mask_scores_in_range<false>(sc, seen_lo, seen_hi, t.first, t4, nullptr, 0, 0);
    } else if (doc_codes.staged) {
      // the rows' codes (in range for rows below Tq; the others are never stored)
      const int code_lo = static_cast<int>(r.doc_lo - doc_codes.base);
      const int code_hi = static_cast<int>(r.doc_hi - doc_codes.base);
      mask_scores_in_range<true>(sc, seen_lo, seen_hi, t.first, t4, doc_codes.of_tile(i), code_lo,
                                 code_hi);
    } else {
      mask_scores(sc, mask, r, t.first, t4);
    }
  };

  barrier_wait(ring.queries(), 0);
  // kPingPong: each issue of products below is one turn (wait_for_turn ...
  // pass_turn). Both consumers walk the same tiles, so they take the same
  // number of turns; consumer 1 hands consumer 0 the first. The last turn
  // passed is never waited for, which a block's exit allows.
  auto take_turn = [&] {
    if constexpr (kPingPong) wait_for_turn(consumer);
  };
  auto end_turn = [&] {
    if constexpr (kPingPong) pass_turn(consumer);
  };
  if constexpr (kPingPong) {
    if (consumer == 1) pass_turn(consumer);
  }
  if constexpr (kOverlap) {
    // The softmax leaves p in sc (fp32) while o += p v of the previous tile
    // runs on p_now; sc is rounded into p_now only once that product is done
    // (no second set of fragments: registers, and no copies between products).
    float sc[BN / 8][4];
    uint32_t p_now[BN / 16][4];  // p of the tile whose o += p v is in flight
    auto softmax_in_place = [&](const Tile& t, int i, float& rescale_lo, float& rescale_hi) {
      score.to_base2_unit(sc);
      if (!t.vis.full) mask_tile(sc, t, i);
      r.step(sc, score.base2_factor(), rescale_lo, rescale_hi);
    };
    auto round_p = [&]() {
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) pack_a_fragment<T>(sc, kk, p_now[kk]);
    };
    Tile tile = tile_of(0);
    if (tile.first >= 0) {
      // The first tile: its scores alone.
      take_turn();
      wgmma_issue_scores_128<T, D, BM, BN>(sc, my_queries, ring.tiles.keys(0));
      warpgroup_commit();
      end_turn();
      warpgroup_wait_all();
      pin_registers(sc);
      ring.release_keys(0, lane);
      float rescale_lo, rescale_hi;
      softmax_in_place(tile, 0, rescale_lo, rescale_hi);  // o is still zero: no rescale
      round_p();
      int i = 1;  // the tile whose scores start; tile i - 1's o += p v runs beside them
      for (tile = tile_of(1); tile.first >= 0; tile = tile_of(++i)) {
        ring.wait_values(i - 1);
        take_turn();
        wgmma_issue_scores_128<T, D, BM, BN>(sc, my_queries, ring.tiles.keys(Ring::stage(i)));
        warpgroup_commit();
        wgmma_issue_fragments<T, D, BN>(acc_o, p_now, ring.tiles.values(Ring::stage(i - 1)));
        warpgroup_commit();
        end_turn();
        warpgroup_wait_all_but_newest();  // the scores; o += p v may still run
        pin_registers(sc);
        ring.release_keys(i, lane);
        softmax_in_place(tile, i, rescale_lo, rescale_hi);
        warpgroup_wait_all();
        pin_registers(acc_o);
        pin_registers(p_now);
        ring.release_values(i - 1, lane);
        rescale_rows(acc_o, rescale_lo, rescale_hi);
        round_p();
      }
      // The last tile's o += p v.
      ring.wait_values(i - 1);
      take_turn();
      wgmma_issue_fragments<T, D, BN>(acc_o, p_now, ring.tiles.values(Ring::stage(i - 1)));
      warpgroup_commit();
      end_turn();
      warpgroup_wait_all();
      pin_registers(acc_o);
    }
  } else {
    for (int i = 0;; ++i) {
      const Tile tile = tile_of(i);
      if (tile.first < 0) break;
      uint32_t a[BN / 16][4];  // p rounded to T (cast): the A fragments of o += p v
      if (!tile.vis.empty) {
        float sc[BN / 8][4];
        wgmma_scores_128<T, D, BM, BN>(sc, my_queries, ring.tiles.keys(Ring::stage(i)));
        score.to_base2_unit(sc);
        if (!tile.vis.full) mask_tile(sc, tile, i);
        float rescale_lo, rescale_hi;
        r.step(sc, score.base2_factor(), rescale_lo, rescale_hi);
        rescale_rows_that_moved(acc_o, rescale_lo, rescale_hi);
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) pack_a_fragment<T>(sc, kk, a[kk]);
      }
      ring.release_keys(i, lane);  // this warp's score products completed (or none ran)
      ring.wait_values(i);
      if (!tile.vis.empty) {
        wgmma_fragments<T, D, BN>(acc_o, a, ring.tiles.values(Ring::stage(i)));
      }
      ring.release_values(i, lane);
    }
  }
  r.template finish<T, D>(out, lse, geo, blk.b, blk.head, acc_o, t4);
}

// ---------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------

// delta[b, h, r] = sum_d d_out[b, r, h, d] * out[b, r, h, d] in fp32; one warp per row.
template <typename T, int D>
__global__ void attention_delta_kernel(const T* __restrict__ out, const T* __restrict__ d_out,
                                       float* __restrict__ delta, Geometry geo) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= geo.batch * geo.tq * geo.heads_q) return;
  // row enumerates (b, r, h) in memory order
  const int64_t head = row % geo.heads_q, r = (row / geo.heads_q) % geo.tq,
                b = row / (geo.heads_q * geo.tq);
  float sum = 0.f;
  for (int d = lane * 8; d < D; d += 32 * 8) {
    float o[8], g[8];
    load<T, 8>(out + row * D + d, o);
    load<T, 8>(d_out + row * D + d, g);
#pragma unroll
    for (int i = 0; i < 8; ++i) sum += o[i] * g[i];
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0) delta[(b * geo.heads_q + head) * geo.tq + r] = sum;
}

// dq: one block per (query tile, query head, batch row), walking the key
// tiles the queries see. dq = sum over tiles of ds k * scale. Each warp owns
// MT tiles of 16 query rows (BM = 64 MT), as in the forward. kWgmma: the
// products on warpgroup MMA (MT = 1, tiles of 64, head_dim 64 or 128, the
// tiles in the panel layout), the rest unchanged; kOverlap (with kWgmma):
// a tile's two score products (s and dp) issued as one group; kTma (with
// kWgmma): the tiles copied by the tensor memory accelerator from the maps
// (walk_key_tiles_tma), else by cp.async (the maps unused).
struct DqRowPair : QueryRowPair {
  float lse2_lo, lse2_hi, delta_lo, delta_hi;  // their log-sum-exp (base 2) and delta
};

template <typename T, int D, int BM, int BN, int MT, bool kWgmma, bool kOverlap, bool kTma>
__global__ void __launch_bounds__(kThreads)
    attention_dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                        const T* __restrict__ d_out, const float* __restrict__ lse,
                        const float* __restrict__ delta, T* __restrict__ dq, Geometry geo,
                        Mask mask, ScoreTransform score, const __grid_constant__ CUtensorMap q_map,
                        const __grid_constant__ CUtensorMap k_map,
                        const __grid_constant__ CUtensorMap v_map,
                        const __grid_constant__ CUtensorMap d_out_map) {
  static_assert(BM == 16 * MT * (kThreads / 32), "each warp owns MT tiles of 16 query rows");
  static_assert(!kWgmma || (MT == 1 && BN == 64 && D <= 128), "warpgroup dq: 64 x 64 tiles");
  static_assert(!kOverlap || kWgmma, "the overlapped schedule is warpgroup MMA's");
  static_assert(!kTma || kWgmma, "TMA copies fill the warpgroup-MMA panel layout");
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* tile_q = first_tile<T, kWgmma>(shared_bytes);
  __shared__ uint64_t tma_barriers[kTmaBarriers];
  T* tile_do = tile_q + BM * D;
  const KeyValueBuffers<T, D, BN> kv{tile_do + BM * D};  // two buffers, as forward

  const QueryBlock<D> blk(geo, BM);
  const int m0 = blk.m0, head = blk.head;
  const int64_t b = blk.b, q_stride = blk.q_stride, k_stride = blk.k_stride;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4;
  const T* q_b = blk.query_rows(q, geo);
  const T* do_b = blk.query_rows(d_out, geo);
  const T* k_b = blk.key_rows(k, geo);
  const T* v_b = blk.key_rows(v, geo);
  mask.select_batch_row(b);

  TmaTileBarriers bars{tma_barriers, 0u};
  const TmaKeyValueSource<T, D, BN> tma_source{&k_map, &v_map, blk.head_k, static_cast<int>(b)};
  if constexpr (kTma) {
    if (threadIdx.x == 0) {  // two arrivals each: q and d_out, a tile's keys and values
      for (int i = kQueriesBarrier; i < kKeysBarrier + 2; ++i) barrier_init(bars.at(i), 2);
      barrier_init_fence();
    }
    __syncthreads();  // the barriers initialized before any thread waits on them
    tma_copy_rows<T, D, BM>(tile_q, &q_map, head, m0, static_cast<int>(b), bars.at(kQueriesBarrier),
                            threadIdx.x == 0);
    tma_copy_rows<T, D, BM>(tile_do, &d_out_map, head, m0, static_cast<int>(b),
                            bars.at(kQueriesBarrier), threadIdx.x == 0);
  } else {
    load_rows<T, D, BM, kWgmma>(tile_q, q_b, m0, geo.tq, q_stride);
    load_rows<T, D, BM, kWgmma>(tile_do, do_b, m0, geo.tq, q_stride);
    copy_async_commit();
  }

  const float* lse_h = lse + (b * geo.heads_q + head) * geo.tq;
  const float* delta_h = delta + (b * geo.heads_q + head) * geo.tq;
  const int warp_row0 = warp * 16 * MT;  // this warp's rows: tiles warp_row0 + 16 m
  DqRowPair rows[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    DqRowPair& r = rows[m];
    r.set(m0 + warp_row0 + 16 * m + g, mask, geo.tq);
    // Rows past Tq: lse +inf makes their p zero.
    r.lse2_lo = r.row_lo < geo.tq ? lse_h[r.row_lo] * kLog2e : INFINITY;
    r.lse2_hi = r.row_hi < geo.tq ? lse_h[r.row_hi] * kLog2e : INFINITY;
    r.delta_lo = r.row_lo < geo.tq ? delta_h[r.row_lo] : 0.f;
    r.delta_hi = r.row_hi < geo.tq ? delta_h[r.row_hi] : 0.f;
  }

  const KeyTileWalk<BN> walk = KeyTileWalk<BN>::of_query_rows(mask, m0, BM, geo.tq);

  float acc_dq[MT][D / 8][4];
#pragma unroll
  for (int m = 0; m < MT; ++m) zero(acc_dq[m]);
  auto tile = [&](int n0, const T* keys, const T* values, TileVisibility vis) {
    float p[MT][BN / 8][4], dp[MT][BN / 8][4];
    if constexpr (!kOverlap) {
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        zero(p[m]);
        zero(dp[m]);
      }
    }
    if constexpr (kOverlap) {  // s and dp in one group (overwritten: no zeros needed)
      wgmma_issue_abt<T, D, true>(p[0], tile_q, keys);
      wgmma_issue_abt<T, D, true>(dp[0], tile_do, values);
      warpgroup_commit();
      warpgroup_wait_all();
      pin_registers(p[0]);
      pin_registers(dp[0]);
    } else if constexpr (kWgmma) {
      wgmma_abt<T, D>(p[0], tile_q, keys);
      wgmma_abt<T, D>(dp[0], tile_do, values);
    } else {
      product_abt_rows<T, D, BN / 8, MT>(p, tile_q, warp_row0, keys, lane);
      product_abt_rows<T, D, BN / 8, MT>(dp, tile_do, warp_row0, values, lane);
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      const DqRowPair& r = rows[m];
      score.to_base2_unit(p[m]);
      if (!vis.full) mask_scores(p[m], mask, r, n0, t4);
      const float factor = score.base2_factor();
      // p = 2^(s2 - lse2) with s2 = factor u (0 where masked: 2^-inf),
      // ds = p (dp - delta) d s / d z.
      if (score.softcap > 0.f) {
#pragma unroll
        for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const bool lo = e < 2;
            const float u = p[m][j][e];
            const float prob = exp2_fast(fmaf(u, factor, -(lo ? r.lse2_lo : r.lse2_hi)));
            // the slope only where p is defined (a masked u is -inf)
            p[m][j][e] = prob > 0.f ? prob * (dp[m][j][e] - (lo ? r.delta_lo : r.delta_hi)) *
                                          ScoreTransform::softcap_slope_of_unit(u)
                                    : 0.f;
          }
        }
      } else {
#pragma unroll
        for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const bool lo = e < 2;
            const float prob = exp2_fast(fmaf(p[m][j][e], factor, -(lo ? r.lse2_lo : r.lse2_hi)));
            p[m][j][e] = prob * (dp[m][j][e] - (lo ? r.delta_lo : r.delta_hi));
          }
        }
      }
    }
    if constexpr (kWgmma) {
      wgmma_pm<T, D>(acc_dq[0], p[0], keys);
    } else {
      product_pm_rows<T, D, BN / 8, MT>(acc_dq, p, keys, lane);
    }
  };
  if constexpr (kTma) {
    walk_key_tiles_tma<T, D, BN>(walk, kv, tma_source, bars, tile);
  } else {
    walk_key_tiles<T, D, BN, kWgmma>(walk, kv, k_b, v_b, geo.tk, k_stride, tile);
  }

#pragma unroll
  for (int m = 0; m < MT; ++m) {
    store_row_pair<T, D>(dq, rows[m], geo, b, head, acc_dq[m], score.scale, score.scale, t4);
  }
}

// The dk/dv kernels' steps on a warp's transposed tile p^T [16 keys x N
// queries] (accumulator fragments; a thread's elements e < 2 are key_lo's,
// the others key_hi's; query column 8 j + 2 t4 + (e & 1) of the tile at m0),
// with the tile's rows' lse (base 2), delta and document ids from shared memory.
struct TransposedKeys {
  int key_lo, key_hi;
  int64_t doc_lo, doc_hi;
};
// A thread's keys lo and hi = lo + 8, with their document ids (0 without documents).
__device__ __forceinline__ TransposedKeys transposed_keys(const Mask& mask, int key_lo) {
  return TransposedKeys{key_lo, key_lo + 8, mask.key_document(key_lo),
                        mask.key_document(key_lo + 8)};
}
// A thread's rows of dk (times the scale) and dv (its keys lo and hi, columns
// 8 d + 2 t4 and + 1) rounded to T (cast) into [B, Tk, Hk, D]; keys past Tk
// are left alone. kDk / kDv: which of the two the accumulators hold.
template <typename T, int D, bool kDk, bool kDv, int NK, int NV>
__device__ __forceinline__ void store_key_gradients(T* dk, T* dv, const float (&acc_dk)[NK][4],
                                                    const float (&acc_dv)[NV][4],
                                                    const Geometry& geo, int64_t b, int head_k,
                                                    const TransposedKeys& keys, float scale,
                                                    int t4) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int key = half == 0 ? keys.key_lo : keys.key_hi;
    if (key >= geo.tk) continue;
    const int64_t at = ((b * geo.tk + key) * geo.heads_k + head_k) * D;
    if constexpr (kDk) {
#pragma unroll
      for (int d = 0; d < D / 8; ++d) {
        *reinterpret_cast<uint32_t*>(dk + at + d * 8 + t4 * 2) =
            pack_pair<T>(acc_dk[d][2 * half] * scale, acc_dk[d][2 * half + 1] * scale);
      }
    }
    if constexpr (kDv) {
#pragma unroll
      for (int d = 0; d < D / 8; ++d) {
        *reinterpret_cast<uint32_t*>(dv + at + d * 8 + t4 * 2) =
            pack_pair<T>(acc_dv[d][2 * half], acc_dv[d][2 * half + 1]);
      }
    }
  }
}
// Scores the mask hides set to -inf (only for tiles the mask cuts).
template <int N>
__device__ __forceinline__ void mask_transposed_scores(float (&p)[N][4], const Mask& mask,
                                                       const TransposedKeys& keys, int m0,
                                                       const int64_t* doc_t, int t4) {
#pragma unroll
  for (int j = 0; j < N; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = j * 8 + t4 * 2 + (e & 1);  // query row within the tile
      const int key = e < 2 ? keys.key_lo : keys.key_hi;
      const int64_t key_doc = e < 2 ? keys.doc_lo : keys.doc_hi;
      if (!mask.visible_given(m0 + col + mask.offset, key, doc_t[col], key_doc)) {
        p[j][e] = -INFINITY;
      }
    }
  }
}
// u (s2 = factor u) -> p = 2^(s2 - lse2): 0 where masked (2^-inf).
template <int N>
__device__ __forceinline__ void probabilities_from_lse(float (&p)[N][4], float factor,
                                                       const float* lse2_t, int t4) {
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const float2 lse2 = *reinterpret_cast<const float2*>(lse2_t + j * 8 + t4 * 2);
    p[j][0] = exp2_fast(fmaf(p[j][0], factor, -lse2.x));
    p[j][1] = exp2_fast(fmaf(p[j][1], factor, -lse2.y));
    p[j][2] = exp2_fast(fmaf(p[j][2], factor, -lse2.x));
    p[j][3] = exp2_fast(fmaf(p[j][3], factor, -lse2.y));
  }
}
// dp <- (dp - delta) times the softcap's slope at u = tanh(z / c) (u still
// in p: taken before u turns into p; 0 where masked), so that ds = p dp
// later costs one product per element.
template <int N>
__device__ __forceinline__ void dp_minus_delta(float (&dp)[N][4], const float (&u)[N][4],
                                               const ScoreTransform& score, const float* delta_t,
                                               int t4) {
  if (score.softcap > 0.f) {
#pragma unroll
    for (int j = 0; j < N; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = j * 8 + t4 * 2 + (e & 1);
        dp[j][e] = u[j][e] > -INFINITY
                       ? (dp[j][e] - delta_t[col]) * ScoreTransform::softcap_slope_of_unit(u[j][e])
                       : 0.f;
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float2 delta2 = *reinterpret_cast<const float2*>(delta_t + j * 8 + t4 * 2);
      dp[j][0] -= delta2.x;
      dp[j][1] -= delta2.y;
      dp[j][2] -= delta2.x;
      dp[j][3] -= delta2.y;
    }
  }
}

// The query tiles of BM rows that keys [n0, k_last] are seen by, in order:
// for each query head of the group, the tiles from row_begin on. first() and
// after(t) give the first such tile at or after the start / after t that the
// mask does not empty (group == groups: none left).
struct QueryTile {
  int group, m0;
};
template <int BM>
struct QueryTileWalk {
  Mask mask;
  int n0, k_last, groups, row_begin, row_end;
  int64_t tq;
  DocumentRange k_docs;  // the keys' document ids, read once (with documents)

  __device__ __forceinline__ QueryTileWalk(const Mask& m, int first_key, int last_key,
                                           const Geometry& geo)
      : mask(m), n0(first_key), k_last(last_key), groups(geo.groups), tq(geo.tq), k_docs{0, 0} {
    row_begin = m.causal ? max(0, n0 - m.offset) : 0;
    row_end = m.window > 0 ? static_cast<int>(min64(geo.tq, k_last + m.window - m.offset))
                           : static_cast<int>(geo.tq);
    if (m.documents != nullptr) {  // queries outside these keys' documents: never visible
      int doc_begin, doc_end;
      m.document_span(n0, min(k_last, m.tk - 1), doc_begin, doc_end);
      row_begin = max(row_begin, doc_begin);
      row_end = min(row_end, doc_end);
      k_docs = document_range_of(m, n0, k_last);
    }
  }
  __device__ __forceinline__ QueryTile next(QueryTile t) const {
    for (; t.group < groups; ++t.group, t.m0 = (row_begin / BM) * BM) {
      for (; t.m0 < row_end; t.m0 += BM) {
        const int q_first = t.m0 + mask.offset;
        const int q_last = static_cast<int>(min64(t.m0 + BM, tq)) - 1 + mask.offset;
        if (!tile_visibility(mask, q_first, q_last, n0, k_last, nullptr, &k_docs).empty) return t;
      }
    }
    return t;
  }
  __device__ __forceinline__ QueryTile first() const {
    return next(QueryTile{0, (row_begin / BM) * BM});
  }
  __device__ __forceinline__ QueryTile after(QueryTile t) const {
    t.m0 += BM;
    return next(t);
  }
};

// dk and dv: one block per (key tile of BN keys, key/value head, batch row),
// walking the G query heads of its key/value head and the query tiles that
// see its keys. Computed transposed (rows = keys): s^T = k q^T, dp^T = v d_out^T,
//   dv += p^T d_out,  dk += ds^T q * scale.
// kWant: 1 = dv only, 2 = dk only, 3 = both (head_dim 256 runs 1 and 2
// separately to keep the accumulators in registers). kWgmma: the products
// on warpgroup MMA (tiles of 64, head_dim 64 or 128, in the panel layout);
// a warp's rows of the 64 are still its 16 keys. kOverlap (with kWgmma, both
// gradients): s^T and dp^T issued as one group, so dp - delta and the
// softcap's slope are formed from the score itself (u = tanh(z / c); no log2
// of p), and dv += p^T d_out runs on the tensor cores while ds = p (dp -
// delta) slope is formed (registers it does not touch), then dk += ds^T q;
// both complete before the next tile.
template <typename T, int D, int BM, int BN, int kWant, bool kWgmma, bool kOverlap, bool kTma>
__global__ void __launch_bounds__(kThreads)
    attention_dkdv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                          const T* __restrict__ d_out, const float* __restrict__ lse,
                          const float* __restrict__ delta, T* __restrict__ dk, T* __restrict__ dv,
                          Geometry geo, Mask mask, ScoreTransform score,
                          const __grid_constant__ CUtensorMap q_map,
                          const __grid_constant__ CUtensorMap k_map,
                          const __grid_constant__ CUtensorMap v_map,
                          const __grid_constant__ CUtensorMap d_out_map) {
  static_assert(BN == 16 * (kThreads / 32), "one warp per 16 keys");
  static_assert(!kWgmma || (BM == 64 && D <= 128), "warpgroup dk/dv: 64 x 64 tiles");
  static_assert(!kOverlap || (kWgmma && kWant == 3), "overlapped dk/dv: warpgroup MMA, both");
  static_assert(!kTma || kWgmma, "TMA copies fill the warpgroup-MMA panel layout");
  constexpr bool kDv = (kWant & 1) != 0, kDk = (kWant & 2) != 0;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* tile_k = first_tile<T, kWgmma>(shared_bytes);
  // kTma: barrier 0 takes the block's keys and values, 1 + buf the query-side
  // tiles (q and d_out) of buffer buf; two arrivals each.
  constexpr int kOwnTilesBarrier = 0, kQueryTilesBarrier = 1;
  __shared__ uint64_t tma_barriers[3];
  TmaTileBarriers bars{tma_barriers, 0u};
  T* tile_v = tile_k + BN * D;
  // Two buffers of the query-side tiles: the next one is copied while this
  // one is computed. Buffer `buf` of each from arithmetic on buf (an array
  // of pointers would live in local memory).
  T* const q_base = tile_v + BN * D;       // q [BM, D], buffers 0 and 1
  T* const do_base = q_base + 2 * BM * D;  // d_out [BM, D]
  float* const lse2_base = reinterpret_cast<float*>(do_base + 2 * BM * D);    // [BM]
  float* const delta_base = lse2_base + 2 * BM;                               // [BM]
  int64_t* const doc_base = reinterpret_cast<int64_t*>(delta_base + 2 * BM);  // query rows' ids
  auto tile_q = [&](int buf) { return q_base + buf * BM * D; };
  auto tile_do = [&](int buf) { return do_base + buf * BM * D; };
  auto tile_lse2 = [&](int buf) { return lse2_base + buf * BM; };
  auto tile_delta = [&](int buf) { return delta_base + buf * BM; };
  auto tile_doc = [&](int buf) { return doc_base + buf * BM; };

  // the first, heaviest key tiles first (tile_order.h)
  const int heads_k = static_cast<int>(geo.heads_k);
  const TilePlace place = tile_of_block(blockIdx.x, static_cast<int>((geo.tk + BN - 1) / BN),
                                        heads_k, min(kKeyValueHeadsPerGroup, heads_k), false);
  const int n0 = place.tile * BN, head_k = place.head;
  const int64_t b = place.batch;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t4 = lane % 4;
  const int64_t q_stride = geo.heads_q * D, k_stride = geo.heads_k * D;
  const T* k_b = k + (b * geo.tk * geo.heads_k + head_k) * D;
  const T* v_b = v + (b * geo.tk * geo.heads_k + head_k) * D;
  mask.select_batch_row(b);
  if constexpr (kTma) {
    if (threadIdx.x == 0) {
      for (int i = 0; i < 3; ++i) barrier_init(bars.at(i), 2);
      barrier_init_fence();
    }
    __syncthreads();  // the barriers initialized before any thread waits on them
    tma_copy_rows<T, D, BN>(tile_k, &k_map, head_k, n0, static_cast<int>(b),
                            bars.at(kOwnTilesBarrier), threadIdx.x == 0);
    tma_copy_rows<T, D, BN>(tile_v, &v_map, head_k, n0, static_cast<int>(b),
                            bars.at(kOwnTilesBarrier), threadIdx.x == 0);
  } else {
    load_rows<T, D, BN, kWgmma>(tile_k, k_b, n0, geo.tk, k_stride);
    load_rows<T, D, BN, kWgmma>(tile_v, v_b, n0, geo.tk, k_stride);
    copy_async_commit();
  }

  // This thread's two keys (rows g and g + 8 of its warp's 16).
  const TransposedKeys my_keys = transposed_keys(mask, n0 + warp * 16 + g);
  // Query rows that may see a key of the tile.
  const int k_last = n0 + BN - 1;
  const QueryTileWalk<BM> walk(mask, n0, k_last, geo);

  float acc_dk[kDk ? D / 8 : 1][4], acc_dv[kDv ? D / 8 : 1][4];
  zero(acc_dk);
  zero(acc_dv);
  // Copies query tile t into buffer `buf`: q and d_out asynchronously (kTma:
  // by the tensor memory accelerator, on barrier kQueryTilesBarrier + buf),
  // the rows' lse (base 2), delta and document ids by plain loads.
  auto load_query_tile = [&](QueryTile t, int buf) {
    const int head = head_k * geo.groups + t.group;
    if constexpr (kTma) {
      tma_copy_rows<T, D, BM>(tile_q(buf), &q_map, head, t.m0, static_cast<int>(b),
                              bars.at(kQueryTilesBarrier + buf), threadIdx.x == 0);
      tma_copy_rows<T, D, BM>(tile_do(buf), &d_out_map, head, t.m0, static_cast<int>(b),
                              bars.at(kQueryTilesBarrier + buf), threadIdx.x == 0);
    } else {
      load_rows<T, D, BM, kWgmma>(tile_q(buf), q + (b * geo.tq * geo.heads_q + head) * D, t.m0,
                                  geo.tq, q_stride);
      load_rows<T, D, BM, kWgmma>(tile_do(buf), d_out + (b * geo.tq * geo.heads_q + head) * D, t.m0,
                                  geo.tq, q_stride);
    }
    const float* lse_h = lse + (b * geo.heads_q + head) * geo.tq;
    const float* delta_h = delta + (b * geo.heads_q + head) * geo.tq;
    for (int i = threadIdx.x; i < BM; i += kThreads) {
      const bool in = t.m0 + i < geo.tq;
      tile_lse2(buf)[i] = in ? lse_h[t.m0 + i] * kLog2e : INFINITY;  // rows past Tq: p = 0
      tile_delta(buf)[i] = in ? delta_h[t.m0 + i] : 0.f;
      tile_doc(buf)[i] = mask.documents ? mask.documents[min64(t.m0 + i, geo.tq - 1)] : 0;
    }
  };
  QueryTile tile = walk.first();
  if (tile.group < geo.groups) load_query_tile(tile, 0);
  if constexpr (kTma) {
    bars.wait(kOwnTilesBarrier);  // k and v (also when no query tile is walked)
  } else {
    copy_async_commit();
  }
  for (int buf = 0; tile.group < geo.groups; buf ^= 1) {
    const QueryTile following = walk.after(tile);
    if (following.group < geo.groups) load_query_tile(following, buf ^ 1);
    if constexpr (kTma) {
      bars.wait(kQueryTilesBarrier + buf);  // this tile's q and d_out
      __syncthreads();                      // and its rows' lse, delta and ids, stored by all
    } else {
      copy_async_commit();
      copy_async_wait_all_but_newest();  // k, v and this tile have arrived
      publish_copies<kWgmma>();
    }
    const int m0 = tile.m0;
    const int q_first = m0 + mask.offset;
    const int q_last = static_cast<int>(min64(m0 + BM, geo.tq)) - 1 + mask.offset;
    const TileVisibility vis =
        tile_visibility(mask, q_first, q_last, n0, k_last, nullptr, &walk.k_docs);
    const float* lse2_t = tile_lse2(buf);
    const float* delta_t = tile_delta(buf);
    const int64_t* doc_t = tile_doc(buf);

    // p^T [16 keys x BM queries] per warp; a thread's elements e < 2 are key_lo's
    float p[BM / 8][4], dp[BM / 8][4];
    if constexpr (kOverlap) {  // s^T and dp^T = v d_out^T in one group (overwritten: no zeros)
      wgmma_issue_abt<T, D, true>(p, tile_k, tile_q(buf));
      wgmma_issue_abt<T, D, true>(dp, tile_v, tile_do(buf));
      warpgroup_commit();
      warpgroup_wait_all();
      pin_registers(p);
      pin_registers(dp);
    } else {
      zero(p);
      tile_abt<T, D, BM / 8, kWgmma>(p, tile_k, warp * 16, tile_q(buf), lane);
    }
    // u with s2 = factor u (ScoreTransform::to_base2_unit); masked ones -inf
    score.to_base2_unit(p);
    const float factor = score.base2_factor();
    if (!vis.full) mask_transposed_scores(p, mask, my_keys, m0, doc_t, t4);
    // dp arrived with s (kOverlap): dp - delta and the softcap's slope now, so
    // ds = p dp later costs one product per element while dv's product runs.
    if constexpr (kOverlap) dp_minus_delta(dp, p, score, delta_t, t4);
    probabilities_from_lse(p, factor, lse2_t, t4);
    uint32_t a_p[BM / 16][4];  // kOverlap: p rounded to T (cast), read by dv's product in flight
    if constexpr (kOverlap) {
#pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk) pack_a_fragment<T>(p, kk, a_p[kk]);
      wgmma_issue_fragments<T, D>(acc_dv, a_p, tile_do(buf));
      warpgroup_commit();
    } else if constexpr (kDv) {
      tile_pm<T, D, BM / 8, kWgmma>(acc_dv, p, tile_do(buf), lane);
    }
    if constexpr (kOverlap) {  // ds = p dp, then dk += ds^T q; both products complete
#pragma unroll
      for (int j = 0; j < BM / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) p[j][e] *= dp[j][e];
      }
      uint32_t a_ds[BM / 16][4];
#pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk) pack_a_fragment<T>(p, kk, a_ds[kk]);
      wgmma_issue_fragments<T, D>(acc_dk, a_ds, tile_q(buf));
      warpgroup_commit();
      warpgroup_wait_all();
      pin_registers(acc_dv);
      pin_registers(a_p);
      pin_registers(acc_dk);
      pin_registers(a_ds);
    } else if constexpr (kDk) {
      zero(dp);
      tile_abt<T, D, BM / 8, kWgmma>(dp, tile_v, warp * 16, tile_do(buf), lane);
      if (score.softcap > 0.f) {
#pragma unroll
        for (int j = 0; j < BM / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = j * 8 + t4 * 2 + (e & 1);
            const float prob = p[j][e];
            // ds = p (dp - delta) times the softcap's slope, from p itself:
            // s2 = log2 p + lse2 (only where p > 0)
            p[j][e] = prob > 0.f ? prob * (dp[j][e] - delta_t[col]) *
                                       score.softcap_slope(__log2f(prob) + lse2_t[col])
                                 : 0.f;
          }
        }
      } else {
#pragma unroll
        for (int j = 0; j < BM / 8; ++j) {
          const float2 delta2 = *reinterpret_cast<const float2*>(delta_t + j * 8 + t4 * 2);
          p[j][0] *= dp[j][0] - delta2.x;  // ds = p (dp - delta)
          p[j][1] *= dp[j][1] - delta2.y;
          p[j][2] *= dp[j][2] - delta2.x;
          p[j][3] *= dp[j][3] - delta2.y;
        }
      }
      tile_pm<T, D, BM / 8, kWgmma>(acc_dk, p, tile_q(buf), lane);
    }
    __syncthreads();  // every warp is done with this buffer before it is refilled
    tile = following;
  }
  if constexpr (!kTma) {
    copy_async_wait_all();
  }

  store_key_gradients<T, D, kDk, kDv>(dk, dv, acc_dk, acc_dv, geo, b, head_k, my_keys, score.scale,
                                      t4);
}

// The fused dq's steps (attention_dkdv_ws_kernel<kFusedDq>).
//
// A warp's ds^T fragments a_ds (rows: its keys 16 w + g and + 8; columns:
// the tile's 16 N queries) into the consumer's rows of the block's ds^T
// [128 keys, 16 N queries] as it lies in the accumulators: per 64 queries a
// panel [128 keys, 64 queries] (16 KiB apart), in it row r at 128 bytes, its
// 16-byte chunk c at c ^ (r % 8) (the 128-byte swizzle the descriptors
// read). a_ds[kk] holds (row g, columns 16 kk + 2 t4, + 1), (row g + 8,
// same), (row g, + 8), (row g + 8, + 8). Within a warp the swizzle spreads
// the 8 rows of each store over all banks.
template <typename T, int N>
__device__ __forceinline__ void store_transposed_ds(T* ds, const uint32_t (&a_ds)[N][4], int warp,
                                                    int g, int t4) {
  unsigned char* const bytes = reinterpret_cast<unsigned char*>(ds);
#pragma unroll
  for (int kk = 0; kk < N; ++kk) {
    unsigned char* const panel = bytes + (kk / 4) * 128 * 128;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = warp * 16 + g + (e & 1) * 8;
      const int chunk = 2 * (kk % 4) + (e >> 1);  // 8 columns a chunk
      *reinterpret_cast<uint32_t*>(panel + row * 128 + ((chunk ^ (row % 8)) * 16) + t4 * 4) =
          a_ds[kk][e];
    }
  }
}

// The fused dq's layout of dq_accum (fp32): per (batch row, query head, tile
// of 64 queries) a chunk of 64 x D sums, its two column halves (consumer c's
// D / 2 columns) one after the other, each as its warpgroup's accumulators
// lie in registers: float4 j * 128 + t holds thread t's acc[j][0..3] (rows
// 16 w + g and + 8, columns 8 j + 2 t4 and + 1 of the half; w, g, t4 of t).
// A half is then one contiguous 16 (8) KiB range, reduced into dq_accum by a
// single bulk copy, and attention_dq_from_accumulator_kernel undoes the order.
template <int D>
__host__ __device__ constexpr int64_t dq_accum_chunk_floats() {
  return int64_t{64} * D;
}
__host__ __device__ inline int64_t dq_accum_tiles(int64_t tq) {
  return (tq + 63) / 64;
}

// acc[64 queries x D / 2] = ds k over the block's 128 keys, for column half
// `half` of D: A = ds from the two consumers' ds^T tiles (stacked: [128 keys,
// 64 queries], MN-major, the queries contiguous), B = k [128 keys, D] as the
// block's k tile holds it (MN-major panels 128 rows deep), 8 steps of 16 keys
// (2048 bytes a step in both). Head_dim 128: half h is panel h (m64n64);
// head_dim 64: columns 32 h of the one panel (m64n32).
template <typename T, int D>
__device__ __forceinline__ void wgmma_issue_ds_k_half(float (&acc)[D / 16][4], const T* ds,
                                                      const T* keys, int half) {
  static_assert(D == 64 || D == 128, "the fused dq: head_dim 64 or 128");
  constexpr int kKeys = 128;
  pin_registers(acc);
  warpgroup_fence();
  const T* const b = D == 128 ? keys + half * kKeys * 64 : keys + half * 32;
#pragma unroll
  for (int kk = 0; kk < kKeys / 16; ++kk) {
    const uint64_t desc_a = swizzled_descriptor(ds + kk * 16 * 64);
    const uint64_t desc_b = swizzled_descriptor(b + kk * 16 * 64);
    if constexpr (D == 128) {
      wgmma_ss_m64n64k16_transposed<T>(acc, desc_a, desc_b, kk == 0 ? 0 : 1);
    } else {
      wgmma_ss_m64n32k16_transposed<T>(acc, desc_a, desc_b, kk == 0 ? 0 : 1);
    }
  }
}

// acc[64 queries x 64] = ds k over the block's 128 keys for the 64 queries
// of one panel of ds^T (the fused dq at head_dim 64 with query tiles of
// 128: each consumer takes 64 of the queries and all of dq's columns): A =
// the panel [128 keys, 64 queries] (MN-major), B = k [128 keys, 64] (the
// block's one panel, MN-major), 8 steps of 16 keys (m64n64k16).
template <typename T>
__device__ __forceinline__ void wgmma_issue_ds_k_rows(float (&acc)[8][4], const T* ds_panel,
                                                      const T* keys) {
  pin_registers(acc);
  warpgroup_fence();
#pragma unroll
  for (int kk = 0; kk < 8; ++kk) {
    wgmma_ss_m64n64k16_transposed<T>(acc, swizzled_descriptor(ds_panel + kk * 16 * 64),
                                     swizzled_descriptor(keys + kk * 16 * 64), kk == 0 ? 0 : 1);
  }
}

// This thread's (t of its warpgroup) accumulators [N n8 tiles] into its
// warpgroup's part of the tile's dq in shared memory, in dq_accum's order
// (float4 stores, the warp's 32 consecutive: no bank conflicts). N = D / 16:
// a column half; N = D / 8 (64 queries, all columns): its two halves, as
// acc[4 h + j] is half h's j-th (head_dim 64).
template <int N>
__device__ __forceinline__ void store_dq_part(float* part, const float (&acc)[N][4], int t) {
#pragma unroll
  for (int j = 0; j < N; ++j) {
    reinterpret_cast<float4*>(part)[j * 128 + t] =
        make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
  }
}

// global[0, bytes) += shared[0, bytes) in fp32 by one bulk asynchronous copy
// (16-byte aligned, bytes a multiple of 16), committed as this thread's bulk
// group; the shared memory written before must be fenced for the
// asynchronous proxy (fence_copies_for_tensor_cores) and published.
// Waits until this thread's bulk copies have read their shared memory
// (bulk_wait_reads) or completed (bulk_wait_all).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void bulk_reduce_add_f32(float* global, const float* shared,
                                                    uint32_t bytes) {
  asm volatile(
      "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n"
      "cp.async.bulk.commit_group;\n" ::"l"(global),
      "r"(shared_address(shared)), "r"(bytes)
      : "memory");
}
__device__ __forceinline__ void bulk_wait_reads() {
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}
__device__ __forceinline__ void bulk_wait_all() {
  asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
}
#else
__device__ __forceinline__ void bulk_reduce_add_f32(float*, const float*, uint32_t) {
  __trap();  // built without sm_90a: the launcher never selects the fused dq
}
__device__ __forceinline__ void bulk_wait_reads() {
  __trap();
}
__device__ __forceinline__ void bulk_wait_all() {
  __trap();
}
#endif

// dq [B, Tq, Hq, D] = dq_accum (the fused dq's order, above) * scale,
// rounded to T (cast): one float4 a thread, rows 16 w + g and + 8 of the
// tile; rows past Tq are dropped. n4: dq_accum's float4s.
template <typename T, int D>
__global__ void attention_dq_from_accumulator_kernel(const float* __restrict__ dq_accum,
                                                     T* __restrict__ dq, int64_t n4, int64_t tq,
                                                     int64_t heads_q, float scale) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n4) return;
  const float4 a = reinterpret_cast<const float4*>(dq_accum)[i];
  constexpr int64_t kChunk4 = dq_accum_chunk_floats<D>() / 4, kHalf4 = kChunk4 / 2;
  const int64_t chunk = i / kChunk4;
  const int in_chunk = static_cast<int>(i - chunk * kChunk4);
  const int half = in_chunk / static_cast<int>(kHalf4);
  const int in_half = in_chunk - half * static_cast<int>(kHalf4);
  const int j = in_half / 128, t = in_half % 128;
  const int w = t / 32, g = (t % 32) / 4, t4 = t % 4;
  const int64_t tiles = dq_accum_tiles(tq);
  const int64_t bh = chunk / tiles;  // batch row * Hq + head
  const int64_t b = bh / heads_q, head = bh - b * heads_q;
  const int64_t row = (chunk - bh * tiles) * 64 + 16 * w + g;
  const int col = half * (D / 2) + 8 * j + 2 * t4;
  if (row < tq) {
    *reinterpret_cast<uint32_t*>(dq + ((b * tq + row) * heads_q + head) * D + col) =
        pack_pair<T>(a.x * scale, a.y * scale);
  }
  if (row + 8 < tq) {
    *reinterpret_cast<uint32_t*>(dq + ((b * tq + row + 8) * heads_q + head) * D + col) =
        pack_pair<T>(a.z * scale, a.w * scale);
  }
}

// dk and dv, warp-specialized (as attention_forward_ws_kernel): one block
// per (tile of 128 keys, key/value head, batch row), three warpgroups.
//   producer (warpgroup 0; warp 0 works, the others leave): copies the
//     block's k and v once, then walks the query tiles of 64 rows that see
//     the keys (QueryTileWalk, every query head of the group); per tile lane
//     0 copies q and d_out by TMA into a ring of kStages stages and the
//     warp's lanes store the rows' lse (base 2), delta and document ids
//     beside them, and lane 0 the tile's StageTile (its rows, query head and
//     what each consumer's keys see of it; an end marker after the last),
//     refilling a stage only once every consumer warp released it;
//   consumers (warpgroups 1 and 2): 64 keys each; per query tile the
//     overlapped products of attention_dkdv_kernel<kOverlap>: s^T = k q^T and
//     dp^T = v d_out^T as one group, dv += p^T d_out on the tensor cores while
//     ds = p (dp - delta) is formed, then dk += ds^T q; then the stage's release.
//     A consumer skips the products of a tile its own keys are not seen by.
// Each query tile is copied once per 128 keys instead of once per 64, and no
// block barrier stops the consumers. The barriers (static shared memory): k
// and v landed (2 arrivals: its two copies), then per stage landed (34: the
// producer warp's 32 lanes once their stores are done, and lane 0's two
// copies with their bytes) and free (8: each consumer warp's lane 0).
//
// kFusedDq: dq too, so that no dq pass recomputes s and dp (5 products per
// tile instead of 7 over both passes; FlashAttention-3's backward). Each
// consumer stores its ds^T [64 keys x 64 queries] (rounded to T) into shared
// memory as it lies (rows = keys, the 128-byte swizzle; zeros where none of
// its keys is seen), the two stacked as ds^T of the block's 128 keys. After
// a barrier of both consumers, consumer c takes columns [c D / 2, (c + 1) D /
// 2) of the tile's dq = ds k over all 128 keys (warpgroup MMA, both operands
// read transposed), writes them into shared memory in dq_accum's order and
// one thread adds them into dq_accum by a bulk reduction (fp32, zeroed
// before; scaled and rounded after): one 16 (8) KiB reduction per consumer
// and tile, the copy engine doing the adds while the consumers go on. Two ds
// buffers alternate over the tiles the block computes: a buffer is rewritten
// two tiles later, once both consumers passed the next tile's barrier, so
// after both products on it completed. A consumer's dq half in shared memory
// is rewritten once its previous bulk reduction has read it.
// (Issuing a tile's dq product in the next tile's step instead, beside that
// tile's softmax, measured 1.28-1.39x slower backward at head_dim 64 on an
// H100, even with its products kept asynchronous, and its registers spill at
// 128.)
//
// BM: the query tiles' rows, 64, or 128 for the fused dq at head_dim 64
// (FlashAttention-3's tile there): twice the work between the consumers'
// barriers, s^T and dp^T as m64n128 products, dv's and dk's with 128-deep
// k, the ds^T buffers two panels of 64 queries, and consumer c takes dq's
// rows [64 c, 64 c + 64) over all columns (wgmma_issue_ds_k_rows): a whole
// 64-query chunk of dq_accum a bulk reduction (none past Tq).
template <typename T, int D, int kStages, bool kFusedDq, int BM, bool kMayCap>
__global__ void __launch_bounds__(kWarpSpecializedThreads, 1)
    attention_dkdv_ws_kernel(const float* __restrict__ lse, const float* __restrict__ delta,
                             T* __restrict__ dk, T* __restrict__ dv, float* __restrict__ dq_accum,
                             Geometry geo, Mask mask, ScoreTransform score,
                             const __grid_constant__ CUtensorMap q_map,
                             const __grid_constant__ CUtensorMap k_map,
                             const __grid_constant__ CUtensorMap v_map,
                             const __grid_constant__ CUtensorMap d_out_map) {
  static_assert(D == 64 || D == 128, "warp-specialized dk/dv: head_dim 64 or 128");
  static_assert(
      BM == 64 || (BM == 128 && D == 64 && kFusedDq),
      "warp-specialized dk/dv: query tiles of 64, or 128 for the fused dq at head_dim 64");
  constexpr int BN = 128, kKeysPerConsumer = 64;
  using Registers = DkdvWarpSpecializedRegisters<D, BM>;
  if constexpr (!kMayCap) score.softcap = 0.f;  // known here: the softcap's code drops out
  constexpr uint32_t kLandedArrivals = 32 + 2;
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  __shared__ uint64_t barriers[1 + 2 * kStages];  // k and v; landed x kStages; free x kStages
  __shared__ StageTile stage_tiles[kStages];
  T* const tile_k = first_tile<T, true>(shared_bytes);
  T* const tile_v = tile_k + BN * D;
  T* const stages = tile_v + BN * D;  // stage s: q [BM, D], then d_out [BM, D]
  // kFusedDq: ds^T buffers [128 keys, BM queries] (BM / 64 panels; consumer
  // c's keys rows 64 c ..), buffer b of alternation b; then each consumer's
  // part of a tile's dq fp32: a column half of 64 queries (BM 64) or 64
  // queries' every column (BM 128), BM x D / 2 floats either way
  T* const ds_base = stages + kStages * 2 * BM * D;
  constexpr int kDsBuffers = kFusedDq ? 2 : 0;
  float* const dq_part_base =
      reinterpret_cast<float*>(ds_base + kDsBuffers * 2 * kKeysPerConsumer * BM);
  constexpr int kDqPartFloats = BM * D / 2;
  // each [kStages, BM]: the rows' lse (base 2), delta and document ids
  float* const lse2_base = dq_part_base + (kFusedDq ? 2 * kDqPartFloats : 0);
  float* const delta_base = lse2_base + kStages * BM;
  int64_t* const doc_base = reinterpret_cast<int64_t*>(delta_base + kStages * BM);
  uint64_t* const own_landed = barriers;
  // (a stage's tiles and barriers from arithmetic on s: no arrays of pointers in local memory)
  auto tile_q = [&](int s) { return stages + s * 2 * BM * D; };
  auto tile_do = [&](int s) { return stages + (s * 2 + 1) * BM * D; };
  auto landed = [&](int s) { return barriers + 1 + s; };
  auto free_stage = [&](int s) { return barriers + 1 + kStages + s; };

  // the first, heaviest key tiles first, over all heads and batch rows (tile_order.h)
  const TilePlace place =
      tile_of_block_by_rank(blockIdx.x, static_cast<int>((geo.tk + BN - 1) / BN),
                            static_cast<int>(geo.heads_k), static_cast<int>(geo.batch), false);
  const int n0 = place.tile * BN, head_k = place.head;
  const int64_t b = place.batch;
  mask.select_batch_row(b);
  if (threadIdx.x == 0) {
    barrier_init(own_landed, 2);
    for (int s = 0; s < kStages; ++s) {
      barrier_init(landed(s), kLandedArrivals);
      barrier_init(free_stage(s), kConsumerWarps);
    }
    barrier_init_fence();
  }
  __syncthreads();  // the barriers initialized before any thread waits on them

  const int warpgroup = threadIdx.x / kThreads;
  const int lane = threadIdx.x % 32;
  if (warpgroup == 0) {
    warpgroup_release_registers<Registers::kProducer>();
    if (threadIdx.x >= 32) return;
    const bool issuer = lane == 0;
    tma_copy_rows<T, D, BN>(tile_k, &k_map, head_k, n0, static_cast<int>(b), own_landed, issuer);
    tma_copy_rows<T, D, BN>(tile_v, &v_map, head_k, n0, static_cast<int>(b), own_landed, issuer);
    const QueryTileWalk<BM> walk(mask, n0, n0 + BN - 1, geo);
    // With documents, each consumer's keys' document ids read once, kept in
    // shared memory (lane 0's: it alone forms the stage's tile record).
    __shared__ DocumentRange k_docs[2];
    if (issuer) {
      for (int c = 0; c < 2; ++c) {
        const int k_first = n0 + kKeysPerConsumer * c;
        k_docs[c] = mask.documents != nullptr && k_first < geo.tk
                        ? document_range_of(mask, k_first, k_first + kKeysPerConsumer - 1)
                        : DocumentRange{0, 0};
      }
    }
    int i = 0;  // tiles copied (the ring's phases: kernels/cuda/stage_ring.h)
    for (QueryTile t = walk.first(); t.group < geo.groups; t = walk.after(t), ++i) {
      const int s = ring_stage(i, kStages);
      if (ring_reuses_stage(i, kStages)) barrier_wait(free_stage(s), ring_free_parity(i, kStages));
      const int head = head_k * geo.groups + t.group;
      if (issuer) {  // the tile's place, and whether each consumer's keys are seen by none / all
        StageTile& tile = stage_tiles[s];
        tile.first = t.m0;
        tile.head = head;
        const int q_last = static_cast<int>(min64(t.m0 + BM, geo.tq)) - 1;
        const DocumentRange q_docs =
            mask.documents != nullptr ? document_range_of(mask, t.m0, q_last) : DocumentRange{0, 0};
        for (int c = 0; c < 2; ++c) {
          const int k_first = n0 + kKeysPerConsumer * c;
          tile.vis[c] =
              k_first < geo.tk
                  ? tile_visibility(mask, t.m0 + mask.offset, q_last + mask.offset, k_first,
                                    k_first + kKeysPerConsumer - 1, &q_docs, &k_docs[c])
                  : TileVisibility{true, false};
        }
      }
      tma_copy_rows<T, D, BM>(tile_q(s), &q_map, head, t.m0, static_cast<int>(b), landed(s),
                              issuer);
      tma_copy_rows<T, D, BM>(tile_do(s), &d_out_map, head, t.m0, static_cast<int>(b), landed(s),
                              issuer);
      const float* lse_h = lse + (b * geo.heads_q + head) * geo.tq;
      const float* delta_h = delta + (b * geo.heads_q + head) * geo.tq;
      for (int r = lane; r < BM; r += 32) {
        const bool in = t.m0 + r < geo.tq;
        lse2_base[s * BM + r] = in ? lse_h[t.m0 + r] * kLog2e : INFINITY;  // rows past Tq: p = 0
        delta_base[s * BM + r] = in ? delta_h[t.m0 + r] : 0.f;
        doc_base[s * BM + r] = mask.documents ? mask.documents[min64(t.m0 + r, geo.tq - 1)] : 0;
      }
      barrier_arrive(landed(s), true);  // releases the stores above to the consumers
    }
    // The end of the walk: a stage with no tile (its 34 arrivals without bytes).
    const int s = ring_stage(i, kStages);
    if (ring_reuses_stage(i, kStages)) barrier_wait(free_stage(s), ring_free_parity(i, kStages));
    if (issuer) stage_tiles[s].first = -1;
    barrier_arrive(landed(s), true);
    barrier_arrive(landed(s), issuer);
    barrier_arrive(landed(s), issuer);
    return;
  }
  warpgroup_claim_registers<Registers::kConsumer>();

  const int consumer = warpgroup - 1;
  const int warp = (threadIdx.x / 32) % 4;
  const int g = lane / 4, t4 = lane % 4;
  const int my_first = n0 + kKeysPerConsumer * consumer;  // this consumer's keys
  // its rows in each 64-column panel of k and v (BN rows deep)
  const T* my_k = tile_k + kKeysPerConsumer * consumer * 64;
  const T* my_v = tile_v + kKeysPerConsumer * consumer * 64;
  const int key_lo = my_first + warp * 16 + g, key_hi = key_lo + 8;
  // (the keys' document ids read where a tile is masked, not kept in
  // registers through the loop: at query tiles of 128 they would spill)
  const TransposedKeys my_keys{key_lo, key_hi, 0, 0};
  const float factor = score.base2_factor();

  float acc_dk[D / 8][4], acc_dv[D / 8][4];
  zero(acc_dk);
  zero(acc_dv);
  int computed = 0;  // tiles the block computed (kFusedDq: the ds buffers alternate over them)
  const int wg_thread = threadIdx.x % kThreads;  // this thread in its warpgroup
  barrier_wait(own_landed, 0);
  for (int i = 0;; ++i) {
    const int s = ring_stage(i, kStages);
    barrier_wait(landed(s), ring_landed_parity(i, kStages));
    const int m0 = stage_tiles[s].first;
    if (m0 < 0) break;
    const TileVisibility vis = stage_tiles[s].vis[consumer];
    // kFusedDq: both consumers take part in every tile either one computes
    // (the dq of each column half sums over all 128 keys)
    const bool computes =
        kFusedDq ? !(stage_tiles[s].vis[0].empty && stage_tiles[s].vis[1].empty) : !vis.empty;
    if (computes) {
      uint32_t a_p[BM / 16][4];   // p rounded to T (cast)
      uint32_t a_ds[BM / 16][4];  // ds rounded to T (cast)
      // kFusedDq: this tile's ds^T buffer (its 128 keys), this consumer's rows
      T* const ds_pair = ds_base + 2 * (computed % 2) * kKeysPerConsumer * BM;
      [[maybe_unused]] T* const ds = ds_pair + consumer * kKeysPerConsumer * 64;
      if (!vis.empty) {
        const float* lse2_t = lse2_base + s * BM;
        const float* delta_t = delta_base + s * BM;
        // p^T [16 keys x BM queries] per warp, s^T and dp^T (overwritten: no zeros)
        float p[BM / 8][4], dp[BM / 8][4];
        // s^T and dp^T as two groups: without a softcap, p is formed while
        // dp^T's product still runs (head_dim 128: 1-3% faster forward +
        // backward on an H100; head_dim 64 at tiles of 128, in the kernel
        // built without the softcap's code: 1-2%, no more spills than one wait).
        // Under a softcap dp's slope needs u (the tanh of the scores) beside
        // dp, and where the softcap's code is built in at tiles of 128 the
        // registers spill (11% slower), so there both are waited for first.
        if constexpr (BM == 128) {
          wgmma_issue_scores_128<T, D, BN, BM>(p, my_k, tile_q(s));
          warpgroup_commit();
          wgmma_issue_scores_128<T, D, BN, BM>(dp, my_v, tile_do(s));
        } else {
          wgmma_issue_abt<T, D, true, BN, BM>(p, my_k, tile_q(s));
          warpgroup_commit();
          wgmma_issue_abt<T, D, true, BN, BM>(dp, my_v, tile_do(s));
        }
        warpgroup_commit();
        if ((BM == 128 && kMayCap) || score.softcap > 0.f) {  // the same in every warp
          warpgroup_wait_all();
          pin_registers(p);
          pin_registers(dp);
          score.to_base2_unit(p);  // u with s2 = factor u; masked ones -inf
          if (!vis.full) {
            mask_transposed_scores(p, mask, transposed_keys(mask, key_lo), m0, doc_base + s * BM,
                                   t4);
          }
          dp_minus_delta(dp, p, score, delta_t, t4);
          probabilities_from_lse(p, factor, lse2_t, t4);
        } else {
          warpgroup_wait_all_but_newest();  // s^T's products
          pin_registers(p);
          if (!vis.full) {
            mask_transposed_scores(p, mask, transposed_keys(mask, key_lo), m0, doc_base + s * BM,
                                   t4);
          }
          probabilities_from_lse(p, factor, lse2_t, t4);
          warpgroup_wait_all();
          pin_registers(dp);
          dp_minus_delta(dp, p, score, delta_t, t4);
        }
        // dv += p^T d_out on the tensor cores while ds = p dp is formed, then dk += ds^T q
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk) pack_a_fragment<T>(p, kk, a_p[kk]);
        wgmma_issue_fragments<T, D, BM>(acc_dv, a_p, tile_do(s));
        warpgroup_commit();
#pragma unroll
        for (int j = 0; j < BM / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) p[j][e] *= dp[j][e];
        }
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk) pack_a_fragment<T>(p, kk, a_ds[kk]);
        // kFusedDq: ds^T stored while dv's product runs, before dk's product
        // takes a_ds (a product's fragments are not to be read while it runs)
        if constexpr (kFusedDq) {
          store_transposed_ds(ds, a_ds, warp, g, t4);
          fence_copies_for_tensor_cores();  // the stores, to the tensor cores' reads
        }
        wgmma_issue_fragments<T, D, BM>(acc_dk, a_ds, tile_q(s));
        warpgroup_commit();
      } else if constexpr (kFusedDq) {  // none of this consumer's keys seen: its ds^T is zero
#pragma unroll
        for (int kk = 0; kk < BM / 16; ++kk) {
#pragma unroll
          for (int e = 0; e < 4; ++e) a_p[kk][e] = a_ds[kk][e] = 0;
        }
        store_transposed_ds(ds, a_ds, warp, g, t4);
        fence_copies_for_tensor_cores();
      }
      if constexpr (kFusedDq) {
        // this consumer's chunk of dq_accum (64 queries; read before the
        // stage goes back), and whether its queries are within Tq (BM 128)
        const int64_t chunk = (b * geo.heads_q + stage_tiles[s].head) * dq_accum_tiles(geo.tq) +
                              m0 / 64 + (BM == 128 ? consumer : 0);
        const bool dq_rows = BM == 64 || m0 + 64 * consumer < geo.tq;
        // dq = ds k, once both halves of ds^T are stored; while it runs, this
        // consumer's previous bulk reduction waited for until it has read the
        // dq part in shared memory (one thread waits, the barrier tells all)
        both_consumers_barrier();
        // this consumer's part of the tile's dq (BM 64: columns [consumer D / 2,
        // + D / 2); BM 128: rows [64 consumer, + 64)); zeroed (the product
        // overwrites it) so that no value of it lives from one tile to the next
        float acc_dq[BM == 128 ? D / 8 : D / 16][4];
        zero(acc_dq);
        if constexpr (BM == 128) {
          wgmma_issue_ds_k_rows<T>(acc_dq, ds_pair + consumer * 2 * kKeysPerConsumer * 64, tile_k);
        } else {
          wgmma_issue_ds_k_half<T, D>(acc_dq, ds_pair, tile_k, consumer);
        }
        warpgroup_commit();
        if (wg_thread == 0) bulk_wait_reads();
        warpgroup_barrier_of(consumer);
        warpgroup_wait_all();  // dv's, dk's and dq's products
        pin_registers(acc_dv);
        pin_registers(a_p);
        pin_registers(acc_dk);
        pin_registers(a_ds);
        pin_registers(acc_dq);
        // the stage back before the bulk reduction (dq reads only ds and the block's k)
        barrier_arrive(free_stage(s), lane == 0);
        // the dq part into shared memory, and one thread's bulk reduction of it
        float* const part = dq_part_base + consumer * kDqPartFloats;
        store_dq_part(part, acc_dq, wg_thread);
        fence_copies_for_tensor_cores();  // the stores, to the bulk copy's reads
        warpgroup_barrier_of(consumer);
        if (wg_thread == 0 && dq_rows) {
          bulk_reduce_add_f32(dq_accum + chunk * dq_accum_chunk_floats<D>() +
                                  (BM == 64 ? consumer * kDqPartFloats : 0),
                              part, kDqPartFloats * sizeof(float));
        }
      } else {
        warpgroup_wait_all();
        pin_registers(acc_dv);
        pin_registers(a_p);
        pin_registers(acc_dk);
        pin_registers(a_ds);
        barrier_arrive(free_stage(s), lane == 0);  // this warp's products on the stage completed
      }
      ++computed;
    } else {
      barrier_arrive(free_stage(s), lane == 0);
    }
  }
  if constexpr (kFusedDq) {
    if (wg_thread == 0) bulk_wait_all();  // the reductions done before the block's memory goes
  }

  store_key_gradients<T, D, true, true>(dk, dv, acc_dk, acc_dv, geo, b, head_k, my_keys,
                                        score.scale, t4);
}

// ranges[b, s] = (min, max) of document_ids[b, 16 s .. 16 s + 15].
__global__ void document_ranges_kernel(const int64_t* __restrict__ ids,
                                       int64_t* __restrict__ ranges, int64_t batch, int64_t t) {
  const int64_t segments = (t + kSegment - 1) / kSegment;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= batch * segments) return;
  const int64_t b = i / segments, s = i % segments;
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  for (int64_t p = s * kSegment; p < min((s + 1) * kSegment, t); ++p) {
    const int64_t id = ids[b * t + p];
    lo = min(lo, id);
    hi = max(hi, id);
  }
  ranges[2 * i] = lo;
  ranges[2 * i + 1] = hi;
}

// bounds[b, s] = (first, last) segment that segment s of batch row b meets
// (kernels/cuda/document_bounds.h), from the ranges above. One warp per
// segment: its lanes test 32 candidates at once from the start (the lowest
// lane that meets is the first) and then from the end (lane 0 the highest
// candidate: the lowest lane that meets is the last), so a thread's chain of
// dependent reads is 1/32 of a one-thread scan's (which grows with T^2).
__global__ void document_bounds_kernel(const int64_t* __restrict__ ranges,
                                       int64_t* __restrict__ bounds, int64_t batch, int64_t t) {
  const int64_t segments = (t + kSegment - 1) / kSegment;
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (i >= batch * segments) return;  // i is the warp's: all its lanes leave together
  const int64_t b = i / segments, s = i % segments;
  const int64_t* row = ranges + 2 * b * segments;
  const int64_t lo = row[2 * s], hi = row[2 * s + 1];
  auto meets = [&](int64_t other) {
    return id_ranges_meet(lo, hi, row[2 * other], row[2 * other + 1]);
  };
  int64_t first = s;  // every segment meets itself
  for (int64_t base = 0; base < s; base += 32) {
    const int64_t other = base + lane;
    const unsigned hits = __ballot_sync(0xffffffffu, other < s && meets(other));
    if (hits != 0u) {
      first = base + __ffs(static_cast<int>(hits)) - 1;
      break;
    }
  }
  int64_t last = s;
  for (int64_t top = segments - 1; top > s; top -= 32) {
    const int64_t other = top - lane;
    const unsigned hits = __ballot_sync(0xffffffffu, other > s && meets(other));
    if (hits != 0u) {
      last = top - (__ffs(static_cast<int>(hits)) - 1);
      break;
    }
  }
  if (lane == 0) {
    bounds[2 * i] = first;
    bounds[2 * i + 1] = last;
  }
}

// ---------------------------------------------------------------------------
// Launch
// ---------------------------------------------------------------------------

// Tile sizes per head_dim: forward and dq blocks take BM = 64 MT queries (MT
// row tiles of 16 per warp, the launchers below); BN keys 64 (32 at head_dim
// 256, to keep the accumulators in registers); dk/dv take 64 keys and BM = 64
// queries at head_dim 64, 32 above.
template <int D>
struct Tiles {
  static constexpr int kKeys = D == 256 ? 32 : 64;
  static constexpr int kBackwardQueries = D == 64 ? 64 : 32;
};

template <typename Kernel>
cudaError_t allow_shared(Kernel kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(bytes));
}

// One block per (tile of `tile` rows of `rows`, head, batch row), as a
// one-dimensional grid that the kernels decode with tile_of_block (the
// warp-specialized dk/dv with tile_of_block_by_rank). Past the
// grid's limit of 2^31 - 1 blocks: an empty grid, which the launch refuses
// (invalid configuration).
dim3 tiles_grid(int64_t rows, int tile, int64_t heads, int64_t batch) {
  const int64_t blocks = (rows + tile - 1) / tile * heads * batch;
  return dim3(blocks <= 0x7fffffff ? static_cast<unsigned>(blocks) : 0u);
}

// Launches `kernel` in blocks of `threads` with `bytes` of dynamic shared
// memory (allowed above 48 KiB first); launch_tiles: blocks of kThreads.
template <typename... Params, typename... Args>
cudaError_t launch_tiles_of(int threads, void (*kernel)(Params...), dim3 grid, size_t bytes,
                            cudaStream_t stream, Args... args) {
  cudaError_t err = allow_shared(kernel, bytes);
  if (err != cudaSuccess) return err;
  kernel<<<grid, threads, bytes, stream>>>(args...);
  return cudaGetLastError();
}
template <typename... Params, typename... Args>
cudaError_t launch_tiles(void (*kernel)(Params...), dim3 grid, size_t bytes, cudaStream_t stream,
                         Args... args) {
  return launch_tiles_of(kThreads, kernel, grid, bytes, stream, args...);
}

Geometry geometry_of(const AttentionShape& a) {
  return Geometry{a.batch,   a.tq,      a.tk,
                  a.heads_q, a.heads_k, static_cast<int>(a.heads_q / a.heads_k)};
}

Mask mask_of(const AttentionShape& a) {
  return Mask{a.causal, static_cast<int>(a.window), static_cast<int>(a.tk - a.tq),
              static_cast<int>(a.tk), a.document_ids, a.document_ranges,
              // the bounds follow every batch row's ranges in the workspace
              a.document_ranges == nullptr
                  ? nullptr
                  : a.document_ranges + 2 * a.batch * ((a.tk + kSegment - 1) / kSegment)};
}

cudaError_t fill_document_ranges(const AttentionShape& a, cudaStream_t stream) {
  if (a.document_ids == nullptr) return cudaSuccess;
  const int64_t n = a.batch * ((a.tk + kSegment - 1) / kSegment);
  document_ranges_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(
      a.document_ids, a.document_ranges, a.batch, a.tk);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  // one warp per segment: 8 segments per block of 256 threads
  document_bounds_kernel<<<static_cast<unsigned>((n + 7) / 8), 256, 0, stream>>>(
      a.document_ranges, a.document_ranges + 2 * n, a.batch, a.tk);
  return cudaGetLastError();
}

// Query rows per warp in the forward and dq kernels: 1 or 2 tiles of 16, or
// 0 = each kernel's measured best (set_attention_row_tiles): the forward at
// head_dim 64 takes 2 (on an H100 1.34 against 1.49 ms at 8192 tokens), the
// rest 1 (equal or faster).
std::atomic<int> row_tiles{0};

template <typename T, int D, int MT>
cudaError_t forward_with_row_tiles(const AttentionShape& a, cudaStream_t stream) {
  // At head_dim 128 two row tiles take key tiles of 32: the scores of 64
  // keys would not fit in registers beside the doubled output accumulators.
  constexpr int BM = 16 * MT * (kThreads / 32);
  constexpr int BN = MT == 2 && D == 128 ? 32 : Tiles<D>::kKeys;
  // At head_dim 128 with one row tile, one value buffer: 64 KiB of shared
  // memory and at most 168 registers let 3 blocks share an SM (2 with two).
  constexpr bool kOneValueBuffer = D == 128 && MT == 1;
  constexpr int kMinBlocks = kOneValueBuffer ? 3 : 1;
  const size_t bytes =  // q, then 2 x (k, v) or 2 x k and v
      static_cast<size_t>(BM + (kOneValueBuffer ? 3 : 4) * BN) * D * sizeof(T);
  return launch_tiles(attention_forward_kernel<T, D, BM, BN, MT, kOneValueBuffer, kMinBlocks>,
                      tiles_grid(a.tq, BM, a.heads_q, a.batch), bytes, stream,
                      static_cast<const T*>(a.q), static_cast<const T*>(a.k),
                      static_cast<const T*>(a.v), static_cast<T*>(const_cast<void*>(a.out)), a.lse,
                      geometry_of(a), mask_of(a), score_transform(a.scale, a.softcap));
}

// The passes on warpgroup MMA at head_dim 64 and 128 (set_attention_forward_wgmma,
// set_attention_backward_wgmma): on by default, where the device runs sm_90a
// code. On an H100 at 8192 tokens, head_dim 128, causal, forward + backward:
// 230.5 TFLOP/s against 161.7 with mma.sync.
std::atomic<bool> forward_wgmma{true};
std::atomic<bool> backward_wgmma{true};
// The order of the warpgroup-MMA products (set_attention_wgmma_schedule):
// by default where each was measured faster (overlapped_forward,
// overlapped_backward).
std::atomic<int> wgmma_schedule{static_cast<int>(AttentionSchedule::measured)};

// The measured choice, on an H100 at 8192 tokens (liger-bench --op attention,
// docs/benchmarks/attention-overlap_h100_2026-12-06.md): the overlapped forward
// wins at head_dim 64 (6-9% in every variant) and loses 2-3% at 128, where its
// second key/value buffer and 210 registers leave 2 blocks per SM instead of 3.
// Whether the setting asks for the overlapped order (ping-pong is overlapped
// too; it differs only in the warp-specialized forward).
bool overlap_asked(AttentionSchedule s) {
  return s == AttentionSchedule::overlapped || s == AttentionSchedule::ping_pong;
}
bool overlapped_forward(int head_dim) {
  const auto s = static_cast<AttentionSchedule>(wgmma_schedule.load());
  return overlap_asked(s) || (s == AttentionSchedule::measured && head_dim == 64);
}
// The overlapped backward forms a softcap's slope from the score (no log2 of
// p): 15-19% faster under a softcap; without one, within 1.2% at head_dim 128
// and up to 5% slower at 64, so one product at a time stays there.
bool overlapped_backward(float softcap) {
  const auto s = static_cast<AttentionSchedule>(wgmma_schedule.load());
  return overlap_asked(s) || (s == AttentionSchedule::measured && softcap > 0.0f);
}

// Whether this build holds sm_90a code (kernels/CMakeLists.txt defines
// LIGER_CUDA_SM90A): elsewhere the warpgroup-MMA kernels are traps.
#if defined(LIGER_CUDA_SM90A)
constexpr bool kBuiltForSm90a = true;
#else
constexpr bool kBuiltForSm90a = false;
#endif

// Whether the current device takes the warpgroup-MMA kernels (compute capability 9.0).
bool hopper_device() {
  int device = 0, major = 0, minor = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  return major == 9 && minor == 0;
}
bool use_wgmma(const std::atomic<bool>& setting) {
  return kBuiltForSm90a && setting.load() && hopper_device();
}

// The warpgroup-MMA passes' copies (forward, dq, dk/dv) on the tensor
// memory accelerator (set_attention_tma): on by default; and how many
// launches took them (attention_tma_launches).
std::atomic<bool> attention_tma{true};
std::atomic<int64_t> tma_launches{0};

template <typename T, int D, bool kOverlap, bool kTma>
cudaError_t forward_wgmma_launch(const AttentionShape& a, cudaStream_t stream,
                                 const CUtensorMap& q_map, const CUtensorMap& k_map,
                                 const CUtensorMap& v_map) {
  constexpr int BM = 64;
  // q, two key buffers and one value buffer of [64, D] (kOverlap: two value
  // buffers), and 1 KiB to align them to 1024 bytes
  const size_t bytes = static_cast<size_t>((kOverlap ? 5 : 4) * BM) * D * sizeof(T) + 1024;
  return launch_tiles(attention_forward_wgmma_kernel<T, D, kOverlap, kTma>,
                      tiles_grid(a.tq, BM, a.heads_q, a.batch), bytes, stream,
                      static_cast<const T*>(a.q), static_cast<const T*>(a.k),
                      static_cast<const T*>(a.v), static_cast<T*>(const_cast<void*>(a.out)), a.lse,
                      geometry_of(a), mask_of(a), score_transform(a.scale, a.softcap), q_map, k_map,
                      v_map);
}

// A pass's tensor maps (q, and for the backward d_out, in boxes of
// query_rows; k and v in boxes of key_rows), where the TMA copies are on
// (set_attention_tma) and the driver takes every map; the launch is then
// counted (attention_tma_launches). Otherwise every thread's cp.async copies.
struct PassMaps {
  CUtensorMap q{}, k{}, v{}, d_out{};
};
// Whether the driver took every map (tensor_maps: whatever the setting).
template <typename T, int D>
bool tensor_maps(PassMaps& maps, const AttentionShape& a, const void* d_out, int query_rows,
                 int key_rows) {
  constexpr bool kBf16 = std::is_same<T, __nv_bfloat16>::value;
  return rows_tensor_map(maps.q, a.q, kBf16, a.batch, a.tq, a.heads_q, D, query_rows) &&
         (d_out == nullptr ||
          rows_tensor_map(maps.d_out, d_out, kBf16, a.batch, a.tq, a.heads_q, D, query_rows)) &&
         rows_tensor_map(maps.k, a.k, kBf16, a.batch, a.tk, a.heads_k, D, key_rows) &&
         rows_tensor_map(maps.v, a.v, kBf16, a.batch, a.tk, a.heads_k, D, key_rows);
}
template <typename T, int D>
bool pass_tensor_maps(PassMaps& maps, const AttentionShape& a, const void* d_out, int query_rows,
                      int key_rows) {
  const bool ready =
      attention_tma.load() && tensor_maps<T, D>(maps, a, d_out, query_rows, key_rows);
  if (ready) ++tma_launches;
  return ready;
}

// The warp-specialized forward and dk/dv (attention_forward_ws_kernel,
// attention_dkdv_ws_kernel) instead of the one-warpgroup blocks
// (set_attention_warp_specialized): by default both where no document mask
// applies (launchers.h has the measurements); their launches are counted
// (attention_warp_specialized_launches).
std::atomic<int> warp_specialized{static_cast<int>(WarpSpecialized::measured)};
std::atomic<int64_t> warp_specialized_launches{0};
// attention_forward calls that launched (attention_forward_launches).
std::atomic<int64_t> forward_launches{0};
// With the warp-specialized dk/dv, dq in the same pass (set_attention_fused_dq):
// on, measured faster (launchers.h).
std::atomic<bool> fused_dq{true};
// Its query tiles' rows at head_dim 64 (set_attention_fused_dq_query_rows):
// 0 = measured (128), or 64 / 128.
std::atomic<int> fused_dq_query_rows{0};

// Whether a pass takes the warp-specialized blocks: where no document mask
// applies, and with documents whose pair-weighted mean length (formed by the
// caller on the host, AttentionShape::document_tokens; the kernels cannot
// tell before they run) is at least `from_tokens`. Short documents' blocks of
// 128 walk few tiles and cut more of them; the one-warpgroup blocks of 64
// skip more of the pairs the mask discards.
bool warp_specialized_from(const AttentionShape& a, int64_t from_tokens) {
  const auto mode = static_cast<WarpSpecialized>(warp_specialized.load());
  const bool long_documents = a.document_ids == nullptr || a.document_tokens >= from_tokens;
  return mode == WarpSpecialized::on || (mode == WarpSpecialized::measured && long_documents);
}
bool warp_specialized_forward(const AttentionShape& a) {
  return warp_specialized_from(a, kWarpSpecializedForwardDocumentTokens);
}
bool warp_specialized_backward(const AttentionShape& a) {
  return warp_specialized_from(a, kWarpSpecializedBackwardDocumentTokens);
}

// Launches the warp-specialized forward and returns true, or returns false
// (nothing launched) where the driver refuses a tensor map; err: the launch's.
template <typename T, int D>
bool forward_warp_specialized_launch(const AttentionShape& a, cudaStream_t stream,
                                     cudaError_t& err) {
  constexpr int BM = 128, BN = 128;
  // Stages of 128 keys and 128 values: 64 KiB each at head_dim 128 (two,
  // with the queries 160 KiB), 32 KiB at 64 (four, 144 KiB); one block per SM.
  constexpr int kStages = D == 128 ? 2 : 4;
  PassMaps maps;  // boxes of 128 rows: the query tile, a stage's keys and values
  if (!tensor_maps<T, D>(maps, a, nullptr, BM, BN)) return false;
  // and 1 KiB to align the tiles to 1024 bytes
  const size_t bytes = static_cast<size_t>(BM + 2 * kStages * BN) * D * sizeof(T) + 1024;
  // the consumers' products overlapped and taking turns unless the schedule
  // asks for another order (taking turns was the fastest of the three in
  // every variant within 2%, liger-bench's "liger ws ..." rows)
  const auto schedule = static_cast<AttentionSchedule>(wgmma_schedule.load());
  auto kernel = schedule == AttentionSchedule::ping_pong || schedule == AttentionSchedule::measured
                    ? attention_forward_ws_kernel<T, D, kStages, true, true>
                : schedule == AttentionSchedule::overlapped
                    ? attention_forward_ws_kernel<T, D, kStages, true, false>
                    : attention_forward_ws_kernel<T, D, kStages, false, false>;
  err = launch_tiles_of(kWarpSpecializedThreads, kernel, tiles_grid(a.tq, BM, a.heads_q, a.batch),
                        bytes, stream, static_cast<T*>(const_cast<void*>(a.out)), a.lse,
                        geometry_of(a), mask_of(a), score_transform(a.scale, a.softcap), maps.q,
                        maps.k, maps.v);
  if (err == cudaSuccess) ++warp_specialized_launches;
  return true;
}

template <typename T, int D, bool kOverlap>
cudaError_t forward_wgmma_for(const AttentionShape& a, cudaStream_t stream) {
  PassMaps maps;  // boxes of 64 rows: the query tile, the key and value tiles
  if (pass_tensor_maps<T, D>(maps, a, nullptr, 64, 64)) {
    return forward_wgmma_launch<T, D, kOverlap, true>(a, stream, maps.q, maps.k, maps.v);
  }
  return forward_wgmma_launch<T, D, kOverlap, false>(a, stream, maps.q, maps.k, maps.v);
}

template <typename T, int D>
cudaError_t forward_for(const AttentionShape& a, cudaStream_t stream) {
  if constexpr (D <= 128) {
    if (use_wgmma(forward_wgmma)) {
      cudaError_t err = cudaSuccess;
      if (warp_specialized_forward(a) && forward_warp_specialized_launch<T, D>(a, stream, err)) {
        return err;
      }
      return overlapped_forward(D) ? forward_wgmma_for<T, D, true>(a, stream)
                                   : forward_wgmma_for<T, D, false>(a, stream);
    }
  }
  // Two row tiles double the accumulators: only up to head_dim 128.
  if constexpr (D <= 128) {
    const int tiles = row_tiles.load();
    if (tiles == 2 || (tiles == 0 && D == 64)) return forward_with_row_tiles<T, D, 2>(a, stream);
  }
  return forward_with_row_tiles<T, D, 1>(a, stream);
}

// kWgmma: queries in tiles of 64, the tiles in the panel layout (1 KiB of
// slack to align them to 1024 bytes).
template <typename T, int D, int kWant, bool kWgmma, bool kOverlap = false>
cudaError_t dkdv_for(const AttentionShape& a, const AttentionGrads& g, cudaStream_t stream) {
  constexpr int BM = kWgmma ? 64 : Tiles<D>::kBackwardQueries, BN = 64;
  const size_t bytes =
      static_cast<size_t>(2 * BN + 4 * BM) * D * sizeof(T) +  // k, v, 2 x (q, d_out)
      2 * BM * (2 * sizeof(float) + sizeof(int64_t)) +        // 2 x (lse, delta, documents)
      (kWgmma ? 1024 : 0);
  const auto launch = [&](auto kernel, const CUtensorMap& q_map, const CUtensorMap& k_map,
                          const CUtensorMap& v_map, const CUtensorMap& d_out_map) {
    return launch_tiles(kernel, tiles_grid(a.tk, BN, a.heads_k, a.batch), bytes, stream,
                        static_cast<const T*>(a.q), static_cast<const T*>(a.k),
                        static_cast<const T*>(a.v), static_cast<const T*>(g.d_out), a.lse, g.delta,
                        static_cast<T*>(g.dk), static_cast<T*>(g.dv), geometry_of(a), mask_of(a),
                        score_transform(a.scale, a.softcap), q_map, k_map, v_map, d_out_map);
  };
  PassMaps maps;
  if constexpr (kWgmma) {
    if (pass_tensor_maps<T, D>(maps, a, g.d_out, BM, BN)) {
      return launch(attention_dkdv_kernel<T, D, BM, BN, kWant, kWgmma, kOverlap, true>, maps.q,
                    maps.k, maps.v, maps.d_out);
    }
  }
  return launch(attention_dkdv_kernel<T, D, BM, BN, kWant, kWgmma, kOverlap, false>, maps.q, maps.k,
                maps.v, maps.d_out);
}

// Launches the warp-specialized dk/dv and returns true, or returns false
// (nothing launched) where the driver refuses a tensor map; err: the launch's.
// kFusedDq: dq too, into g.dq_accum (zeroed by the caller).
// BM: the query tiles' rows (128 only for the fused dq at head_dim 64).
template <typename T, int D, bool kFusedDq, int BM = 64>
bool dkdv_warp_specialized_launch(const AttentionShape& a, const AttentionGrads& g,
                                  cudaStream_t stream, cudaError_t& err) {
  constexpr int BN = 128;
  // Stages of a query tile's q and d_out (32 KiB at head_dim 128): four, with
  // k and v 192 KiB at 128 (two with the fused dq's 32 KiB of ds buffers and
  // 32 KiB of dq halves: 195 KiB), 96 KiB at 64 (144 KiB fused); one block per
  // SM. Query tiles of 128 at head_dim 64: two (64 KiB), with k, v, 64 KiB of
  // ds buffers and 32 KiB of dq parts 197 KiB.
  constexpr int kStages = kFusedDq && (D == 128 || BM == 128) ? 2 : 4;
  PassMaps maps;  // q and d_out in boxes of BM rows, k and v in boxes of 128
  if (!tensor_maps<T, D>(maps, a, g.d_out, BM, BN)) return false;
  const size_t bytes =
      static_cast<size_t>(2 * BN + 2 * kStages * BM) * D * sizeof(T) +     // k, v, stages
      (kFusedDq ? 4 * 64 * BM * sizeof(T) + BM * D * sizeof(float) : 0) +  // ds^T, dq parts
      kStages * BM * (2 * sizeof(float) + sizeof(int64_t)) +               // lse, delta, ids
      1024;                                                                // to align the tiles
  // Query tiles of 128: a kernel without the softcap's code where none
  // applies (fewer registers: they spill there)
  auto kernel = attention_dkdv_ws_kernel<T, D, kStages, kFusedDq, BM, true>;
  if constexpr (BM == 128) {
    if (a.softcap <= 0.f) kernel = attention_dkdv_ws_kernel<T, D, kStages, kFusedDq, BM, false>;
  }
  err = launch_tiles_of(kWarpSpecializedThreads, kernel, tiles_grid(a.tk, BN, a.heads_k, a.batch),
                        bytes, stream, a.lse, g.delta, static_cast<T*>(g.dk), static_cast<T*>(g.dv),
                        g.dq_accum, geometry_of(a), mask_of(a), score_transform(a.scale, a.softcap),
                        maps.q, maps.k, maps.v, maps.d_out);
  if (err == cudaSuccess) ++warp_specialized_launches;
  return true;
}

// The backward's elements of dq_accum: the fused dq's when it would run.
int64_t fused_dq_elems(const AttentionShape& a) {
  const bool fused = warp_specialized_backward(a) && fused_dq.load() &&
                     (a.head_dim == 64 || a.head_dim == 128) && a.dtype != DType::f32 &&
                     use_wgmma(backward_wgmma);
  return fused ? a.batch * a.heads_q * dq_accum_tiles(a.tq) * 64 * a.head_dim : 0;
}

// dk, dv and dq in one warp-specialized pass (zeroing dq_accum before and
// rounding dq after), or false where it does not run (nothing launched but
// the zeroing); err: the launches'.
template <typename T, int D>
bool backward_fused_dq(const AttentionShape& a, const AttentionGrads& g, cudaStream_t stream,
                       cudaError_t& err) {
  const int64_t n = fused_dq_elems(a);
  if (n == 0 || g.dq_accum == nullptr) return false;
  err = cudaMemsetAsync(g.dq_accum, 0, static_cast<size_t>(n) * sizeof(float), stream);
  if (err != cudaSuccess) return true;
  // query tiles of 128 at head_dim 64 unless set to 64
  constexpr int kWideRows = D == 64 ? 128 : 64;
  const bool wide = D == 64 && fused_dq_query_rows.load() != 64;
  const bool launched = wide
                            ? dkdv_warp_specialized_launch<T, D, true, kWideRows>(a, g, stream, err)
                            : dkdv_warp_specialized_launch<T, D, true, 64>(a, g, stream, err);
  if (!launched) return false;
  if (err != cudaSuccess) return true;
  const int64_t threads = n / 4;
  attention_dq_from_accumulator_kernel<T, D>
      <<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(
          g.dq_accum, static_cast<T*>(g.dq), threads, a.tq, a.heads_q, a.scale);
  err = cudaGetLastError();
  return true;
}

template <typename T, int D, int MT, bool kWgmma, bool kOverlap = false>
cudaError_t dq_with_row_tiles(const AttentionShape& a, const AttentionGrads& g,
                              cudaStream_t stream) {
  // Two row tiles take key tiles of 32: the scores and their gradients of 64
  // keys would not fit in registers beside the doubled dq accumulators.
  constexpr int BM = 16 * MT * (kThreads / 32);
  constexpr int BN = MT == 2 ? 32 : Tiles<D>::kKeys;
  const size_t bytes =
      static_cast<size_t>(2 * BM + 4 * BN) * D * sizeof(T) +  // q, d_out, 2 x (k, v)
      (kWgmma ? 1024 : 0);
  const auto launch = [&](auto kernel, const CUtensorMap& q_map, const CUtensorMap& k_map,
                          const CUtensorMap& v_map, const CUtensorMap& d_out_map) {
    return launch_tiles(kernel, tiles_grid(a.tq, BM, a.heads_q, a.batch), bytes, stream,
                        static_cast<const T*>(a.q), static_cast<const T*>(a.k),
                        static_cast<const T*>(a.v), static_cast<const T*>(g.d_out), a.lse, g.delta,
                        static_cast<T*>(g.dq), geometry_of(a), mask_of(a),
                        score_transform(a.scale, a.softcap), q_map, k_map, v_map, d_out_map);
  };
  PassMaps maps;
  if constexpr (kWgmma) {
    if (pass_tensor_maps<T, D>(maps, a, g.d_out, BM, BN)) {
      return launch(attention_dq_kernel<T, D, BM, BN, MT, kWgmma, kOverlap, true>, maps.q, maps.k,
                    maps.v, maps.d_out);
    }
  }
  return launch(attention_dq_kernel<T, D, BM, BN, MT, kWgmma, kOverlap, false>, maps.q, maps.k,
                maps.v, maps.d_out);
}

template <typename T, int D>
cudaError_t backward_for(const AttentionShape& a, const AttentionGrads& g, cudaStream_t stream) {
  const Geometry geo = geometry_of(a);
  const int64_t rows = a.batch * a.tq * a.heads_q;
  attention_delta_kernel<T, D><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(
      static_cast<const T*>(a.out), static_cast<const T*>(g.d_out), g.delta, geo);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  if constexpr (D == 256) {  // dv, then dk: one accumulator each
    err = dkdv_for<T, D, 1, false>(a, g, stream);
    if (err == cudaSuccess) err = dkdv_for<T, D, 2, false>(a, g, stream);
    if (err != cudaSuccess) return err;
    return dq_with_row_tiles<T, D, 1, false>(a, g, stream);
  } else {
    if (use_wgmma(backward_wgmma)) {
      if (backward_fused_dq<T, D>(a, g, stream, err)) return err;
      if (warp_specialized_backward(a) &&
          dkdv_warp_specialized_launch<T, D, false>(a, g, stream, err)) {
        if (err != cudaSuccess) return err;
        return overlapped_backward(a.softcap) ? dq_with_row_tiles<T, D, 1, true, true>(a, g, stream)
                                              : dq_with_row_tiles<T, D, 1, true>(a, g, stream);
      }
      if (overlapped_backward(a.softcap)) {
        err = dkdv_for<T, D, 3, true, true>(a, g, stream);
        if (err != cudaSuccess) return err;
        return dq_with_row_tiles<T, D, 1, true, true>(a, g, stream);
      }
      err = dkdv_for<T, D, 3, true>(a, g, stream);
      if (err != cudaSuccess) return err;
      return dq_with_row_tiles<T, D, 1, true>(a, g, stream);
    }
    err = dkdv_for<T, D, 3, false>(a, g, stream);
    if (err != cudaSuccess) return err;
    // Two row tiles in dq only at head_dim 64: at 128 the doubled accumulators spill.
    if (D == 64 && row_tiles.load() == 2) return dq_with_row_tiles<T, D, 2, false>(a, g, stream);
    return dq_with_row_tiles<T, D, 1, false>(a, g, stream);
  }
}

template <typename T>
cudaError_t forward_typed(const AttentionShape& a, cudaStream_t stream) {
  switch (a.head_dim) {
    case 64: return forward_for<T, 64>(a, stream);
    case 128: return forward_for<T, 128>(a, stream);
    case 256: return forward_for<T, 256>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename T>
cudaError_t backward_typed(const AttentionShape& a, const AttentionGrads& g, cudaStream_t stream) {
  switch (a.head_dim) {
    case 64: return backward_for<T, 64>(a, g, stream);
    case 128: return backward_for<T, 128>(a, g, stream);
    case 256: return backward_for<T, 256>(a, g, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

int set_attention_row_tiles(int tiles) {
  if (tiles < 0 || tiles > 2) return -1;
  return row_tiles.exchange(tiles);
}

bool set_attention_forward_wgmma(bool on) {
  return forward_wgmma.exchange(on);
}

bool set_attention_backward_wgmma(bool on) {
  return backward_wgmma.exchange(on);
}

bool set_attention_tma(bool on) {
  return attention_tma.exchange(on);
}

int64_t attention_tma_launches() {
  return tma_launches.load();
}

WarpSpecialized set_attention_warp_specialized(WarpSpecialized mode) {
  return static_cast<WarpSpecialized>(warp_specialized.exchange(static_cast<int>(mode)));
}

int64_t attention_warp_specialized_launches() {
  return warp_specialized_launches.load();
}

int64_t attention_forward_launches() {
  return forward_launches.load();
}

bool set_attention_fused_dq(bool on) {
  return fused_dq.exchange(on);
}

int set_attention_fused_dq_query_rows(int rows) {
  return fused_dq_query_rows.exchange(rows);
}

int64_t attention_backward_workspace_elems(const AttentionShape& a) {
  return fused_dq_elems(a);
}

AttentionSchedule set_attention_wgmma_schedule(AttentionSchedule schedule) {
  return static_cast<AttentionSchedule>(wgmma_schedule.exchange(static_cast<int>(schedule)));
}

bool attention_supported(int64_t head_dim, DType dtype) {
  return (head_dim == 64 || head_dim == 128 || head_dim == 256) && dtype != DType::f32;
}

bool attention_faster_than_sdpa(int64_t head_dim, int64_t tq, int64_t tk, bool causal,
                                int64_t heads_k, int64_t batch) {
  const bool warp_specialized_on =
      static_cast<WarpSpecialized>(warp_specialized.load()) != WarpSpecialized::off;
  const int64_t key_blocks = (tk + 127) / 128 * heads_k * batch;  // the dk/dv grid
  return causal && tq == tk && head_dim == 64 && tq >= kFasterThanSdpaTokens &&
         key_blocks >= kFasterThanSdpaKeyBlocks && warp_specialized_on && fused_dq.load() &&
         fused_dq_query_rows.load() != 64 && use_wgmma(forward_wgmma) && use_wgmma(backward_wgmma);
}

int64_t attention_document_ranges_elems(int64_t batch, int64_t t) {
  return 4 * batch * ((t + kSegment - 1) / kSegment);  // the ranges, then the bounds
}

cudaError_t attention_document_bounds(const int64_t* document_ids, int64_t batch, int64_t t,
                                      int64_t* workspace, cudaStream_t stream) {
  AttentionShape a;
  a.document_ids = document_ids;
  a.document_ranges = workspace;
  a.batch = batch;
  a.tq = a.tk = t;
  return fill_document_ranges(a, stream);
}

cudaError_t attention_forward(const AttentionShape& a, cudaStream_t stream) {
  if (!attention_supported(a.head_dim, a.dtype)) return cudaErrorInvalidValue;
  cudaError_t err = fill_document_ranges(a, stream);
  if (err != cudaSuccess) return err;
  err = a.dtype == DType::bf16 ? forward_typed<__nv_bfloat16>(a, stream)
                               : forward_typed<__half>(a, stream);
  if (err == cudaSuccess) ++forward_launches;
  return err;
}

cudaError_t attention_backward(const AttentionShape& a, const AttentionGrads& g,
                               cudaStream_t stream) {
  if (!attention_supported(a.head_dim, a.dtype)) return cudaErrorInvalidValue;
  cudaError_t err = fill_document_ranges(a, stream);
  if (err != cudaSuccess) return err;
  return a.dtype == DType::bf16 ? backward_typed<__nv_bfloat16>(a, g, stream)
                                : backward_typed<__half>(a, g, stream);
}

}  // namespace liger::cuda_kernels
