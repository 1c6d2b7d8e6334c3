// Cross entropy on rows of logits: online softmax in fp32, loss and gradient
// in one kernel per row (the math is in cross_entropy.h), plus the two
// vocabulary-block passes the lean fused linear cross entropy uses.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cross_entropy.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>

namespace liger::cuda_kernels {
namespace {

constexpr int kThreads = 1024;
// Loads each thread issues before using them (pass 1 and pass 2).
constexpr int kInFlight = 2;
// Shared memory that keeps the head of a row between the two passes of
// ce_rows_kernel (H100: up to 227 KiB per block; a bf16 row of Llama 3's
// 128256 logits is 250.5 KiB, so most of it is read from HBM only once).
constexpr int kRowCacheBytes = 200 * 1024;

// Running softmax statistics of a set of z values: m = max, d = sum exp(z - m).
struct Softmax {
  float m;
  float d;
};

__device__ __forceinline__ Softmax softmax_merge(Softmax a, Softmax b) {
  if (a.m == -INFINITY) return b;
  if (b.m == -INFINITY) return a;
  const float m = fmaxf(a.m, b.m);
  return {m, a.d * __expf(a.m - m) + b.d * __expf(b.m - m)};
}

// Block-wide reduction of (softmax, sum_z); every thread gets the result.
__device__ Softmax block_reduce(Softmax s, float& sum_z) {
  __shared__ float shared_m[32], shared_d[32], shared_z[32];
  for (int offset = 16; offset > 0; offset /= 2) {
    Softmax other{__shfl_xor_sync(0xffffffffu, s.m, offset),
                  __shfl_xor_sync(0xffffffffu, s.d, offset)};
    s = softmax_merge(s, other);
    sum_z += __shfl_xor_sync(0xffffffffu, sum_z, offset);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warps = blockDim.x / 32;
  if (lane == 0) {
    shared_m[warp] = s.m;
    shared_d[warp] = s.d;
    shared_z[warp] = sum_z;
  }
  __syncthreads();
  if (warp == 0) {
    s = lane < warps ? Softmax{shared_m[lane], shared_d[lane]} : Softmax{-INFINITY, 0.f};
    sum_z = lane < warps ? shared_z[lane] : 0.f;
    for (int offset = 16; offset > 0; offset /= 2) {
      Softmax other{__shfl_xor_sync(0xffffffffu, s.m, offset),
                    __shfl_xor_sync(0xffffffffu, s.d, offset)};
      s = softmax_merge(s, other);
      sum_z += __shfl_xor_sync(0xffffffffu, sum_z, offset);
    }
    if (lane == 0) {
      shared_m[0] = s.m;
      shared_d[0] = s.d;
      shared_z[0] = sum_z;
    }
  }
  __syncthreads();
  s = {shared_m[0], shared_d[0]};
  sum_z = shared_z[0];
  __syncthreads();  // the shared slots may be reused by a later call
  return s;
}

// The factor of row `row`'s gradient: the device scalar times the row's own
// scale, each 1 where not given.
__device__ __forceinline__ float row_grad_scale(const liger::cuda_kernels::CrossEntropyArgs& a,
                                                int64_t row) {
  const float all = a.grad_scale != nullptr ? *a.grad_scale : 1.f;
  return a.row_scale != nullptr ? all * a.row_scale[row] : all;
}

// z = c tanh(x / c) with softcap c > 0, else x.
__device__ __forceinline__ float cap(float x, float softcap) {
  return softcap > 0.f ? softcap * tanhf(x / softcap) : x;
}

// The per-element gradient factor of cross_entropy.h for z at vocabulary index j.
struct GradTerms {
  float lse, exp_scale, smooth, target_weight, softcap, scale;
  int64_t label;
  __device__ __forceinline__ float operator()(float z, int64_t j) const {
    float g = __expf(z - lse) * exp_scale - smooth - (j == label ? target_weight : 0.f);
    if (softcap > 0.f) {
      const float t = z / softcap;
      g *= 1.f - t * t;  // d(c tanh(x/c))/dx = 1 - tanh^2
    }
    return g * scale;
  }
};

__device__ __forceinline__ float row_loss(float lse, float z_label, float sum_z, int64_t vocab,
                                          float eps, float z_loss_scale) {
  float loss = (1.f - eps) * (lse - z_label);
  if (eps != 0.f) loss += eps * (lse - sum_z / static_cast<float>(vocab));
  if (z_loss_scale != 0.f) loss += z_loss_scale * lse * lse;
  return loss;
}

// One block per row. Pass 1 streams the row from HBM (16-byte vectors when
// aligned), folds it into (max, sum exp, sum z) and keeps its head in shared
// memory; pass 2 writes the gradient, re-reading from HBM only what did not
// fit. grid = rows, block = kThreads, dynamic smem = cached bytes.
template <typename T, bool kVector>
__global__ void __launch_bounds__(kThreads, 1)
    ce_rows_kernel(liger::cuda_kernels::CrossEntropyArgs a, float* loss_out, float* lse_out) {
  extern __shared__ __align__(16) unsigned char row_cache[];
  constexpr int V = kVector ? kVec<T> : 1;
  const int64_t row = blockIdx.x;
  const T* x = static_cast<const T*>(a.logits) + row * a.row_stride;
  const int64_t label = a.labels[row];
  // A label outside the vocabulary is treated as ignored rather than read out of bounds.
  const bool kept =
      label != a.ignore_index && label >= a.col_offset && label < a.col_offset + a.cols;
  const int64_t packs = a.cols / V;
  const int64_t cached_packs = min(packs, static_cast<int64_t>(kRowCacheBytes / (V * sizeof(T))));
  Pack<T, V>* cache = reinterpret_cast<Pack<T, V>*>(row_cache);

  Softmax s{-INFINITY, 0.f};
  float sum_z = 0.f;
  // kInFlight loads are issued before any math (memory-level parallelism);
  // each pack then updates (max, sum) once: d = d e^(m - m') + sum_i e^(z_i - m').
  for (int64_t base = threadIdx.x; base < packs;
       base += static_cast<int64_t>(blockDim.x) * kInFlight) {
    Pack<T, V> pk[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t p = base + u * static_cast<int64_t>(blockDim.x);
      if (p < packs) pk[u] = load_pack<T, V>(x + p * V);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t p = base + u * static_cast<int64_t>(blockDim.x);
      if (p >= packs) break;
      if (p < cached_packs) cache[p] = pk[u];
      float z[V];
      float pack_max = -INFINITY;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        z[i] = cap(to_float(pk[u].v[i]), a.softcap);
        pack_max = fmaxf(pack_max, z[i]);
        sum_z += z[i];
      }
      const float m = fmaxf(s.m, pack_max);
      float added = 0.f;
#pragma unroll
      for (int i = 0; i < V; ++i) added += __expf(z[i] - m);
      s.d = s.d * __expf(s.m - m) + added;  // exp(-inf) = 0 on the first pack
      s.m = m;
    }
  }
  s = block_reduce(s, sum_z);
  const float lse = s.m + __logf(s.d);

  if (threadIdx.x == 0) {
    float loss = 0.f;
    if (kept) {
      const float z_label = cap(to_float(x[label - a.col_offset]), a.softcap);
      loss = row_loss(lse, z_label, sum_z, a.vocab, a.label_smoothing, a.z_loss_scale);
    }
    loss_out[row] = loss;
    if (lse_out != nullptr) lse_out[row] = lse;
  }
  if (a.grad == nullptr) return;

  T* g = static_cast<T*>(a.grad) + row * a.row_stride;
  const float scale = kept ? row_grad_scale(a, row) : 0.f;
  const GradTerms terms{lse,
                        1.f + 2.f * a.z_loss_scale * lse,
                        a.label_smoothing / static_cast<float>(a.vocab),
                        1.f - a.label_smoothing,
                        a.softcap,
                        scale,
                        label};
  for (int64_t base = threadIdx.x; base < packs;
       base += static_cast<int64_t>(blockDim.x) * kInFlight) {
    Pack<T, V> pk[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t p = base + u * static_cast<int64_t>(blockDim.x);
      if (p < packs) pk[u] = p < cached_packs ? cache[p] : load_pack<T, V>(x + p * V);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t p = base + u * static_cast<int64_t>(blockDim.x);
      if (p >= packs) break;
      Pack<T, V> out;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float z = cap(to_float(pk[u].v[i]), a.softcap);
        out.v[i] = from_float<T>(
            terms(z, a.col_offset + p * V + i));  // cast: gradient in the logits dtype
      }
      *reinterpret_cast<Pack<T, V>*>(g + p * V) = out;
    }
  }
}

// ---------------------------------------------------------------------------
// Whole rows on a thread-block cluster (Hopper): one HBM read, one HBM write.
//
// A row is cut into C contiguous slices, one per block of a cluster of C
// blocks. Block r copies its slice into shared memory (cp.async, 16 bytes per
// copy, every copy of a thread in flight at once), folds it into
//   (m_r, d_r, sz_r) = (max z, sum exp(z - m_r), sum z)   over its slice,
// and publishes the triple in its shared memory. After a cluster barrier, warp
// 0 of every block reads the C triples through distributed shared memory and
// merges them: m = max m_r, d = sum d_r exp(m_r - m), lse = m + log d. The block
// then writes the gradient of its slice from shared memory (GradTerms). A
// second barrier keeps every block resident until all have read its triple.
// Each thread owns the packs p = tid, tid + blockDim, ... of its block's slice
// in both phases, so it only waits for its own copies.
// grid = rows * C (cluster dims C), block = kClusterThreads, dynamic smem = slice bytes.
// ---------------------------------------------------------------------------
constexpr int kClusterThreads = 256;
constexpr int kMaxCluster = 8;                    // portable cluster size
constexpr int64_t kTargetSliceBytes = 32 * 1024;  // several blocks per SM: phases overlap
constexpr int64_t kMaxSliceBytes = 160 * 1024;    // beyond this, ce_rows_kernel

__device__ __forceinline__ void copy_async_16(void* shared_dst, const void* global_src) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(shared_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(global_src)
               : "memory");
}
__device__ __forceinline__ void wait_async_copies() {
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
}
// The cluster's barrier, its peers' shared memory and this block's rank:
// sm_90 and later; elsewhere traps (the launcher takes clusters only where
// the device can launch them).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// The address of `local` (a __shared__ variable) in block `rank` of this cluster.
__device__ __forceinline__ const float* cluster_peer(const float* local, unsigned rank) {
  unsigned long long peer;
  asm volatile("mapa.u64 %0, %1, %2;\n"
               : "=l"(peer)
               : "l"(reinterpret_cast<unsigned long long>(local)), "r"(rank));
  return reinterpret_cast<const float*>(peer);
}
__device__ __forceinline__ unsigned cluster_rank() {
  unsigned rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}
#else
__device__ __forceinline__ void cluster_arrive() {
  __trap();
}
__device__ __forceinline__ void cluster_wait() {
  __trap();
}
__device__ __forceinline__ const float* cluster_peer(const float*, unsigned) {
  __trap();
  return nullptr;
}
__device__ __forceinline__ unsigned cluster_rank() {
  __trap();
  return 0;
}
#endif

// 2^x on the special-function unit (relative error ~2^-22; what __expf uses).
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
constexpr float kLog2e = 1.4426950408889634f;

// The kernel is at the HBM limit only if its math stays at a few instructions
// per element, so the per-element work is specialised: kSoftcap (Gemma 2) and
// kSumZ (label smoothing needs sum z) are template flags, exponentials are
// 2^(z log2e - m log2e) (one FFMA + one ex2), and the per-row constants are
// folded: dz_j = e_j k - c with e_j = exp(z_j - lse), k = (1 + 2 s lse) scale,
// c = (e / V) scale; the label's -(1 - e) scale is applied to its one element
// by the thread whose pack holds it.
template <typename T, bool kSoftcap, bool kSumZ>
__global__ void __launch_bounds__(kClusterThreads)
    ce_cluster_rows_kernel(liger::cuda_kernels::CrossEntropyArgs a, float* loss_out, float* lse_out,
                           int cluster, int64_t slice_packs) {
  extern __shared__ __align__(16) unsigned char slice_cache[];
  __shared__ float published[3];  // this block's (m, d, sum z), read by the whole cluster
  __shared__ float row_lse;
  constexpr int V = kVec<T>;
  using P = Pack<T, V>;
  const unsigned rank = cluster_rank();
  const int64_t row = blockIdx.x / cluster;
  const T* x = static_cast<const T*>(a.logits) + row * a.row_stride;
  const int64_t packs = a.cols / V;
  const int64_t begin = rank * slice_packs;
  const int64_t end = min(packs, begin + slice_packs);
  P* cache = reinterpret_cast<P*>(slice_cache);
  const float softcap = a.softcap;

  for (int64_t p = begin + threadIdx.x; p < end; p += kClusterThreads) {
    copy_async_16(cache + (p - begin), x + p * V);
  }
  wait_async_copies();

  // Online softmax over this thread's packs, in base 2: m2 = max z log2e,
  // d = sum 2^(z log2e - m2) = sum exp(z - m).
  float m2 = -INFINITY, d = 0.f, sum_z = 0.f;
  for (int64_t p = begin + threadIdx.x; p < end; p += kClusterThreads) {
    const P pk = cache[p - begin];
    float z2[V];
    float pack_max = -INFINITY;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      float z = to_float(pk.v[i]);
      if constexpr (kSoftcap) z = softcap * tanhf(z / softcap);
      if constexpr (kSumZ) sum_z += z;
      z2[i] = z * kLog2e;
      pack_max = fmaxf(pack_max, z2[i]);
    }
    const float m_new = fmaxf(m2, pack_max);
    float added = 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i) added += exp2_approx(z2[i] - m_new);
    d = d * exp2_approx(m2 - m_new) + added;  // 2^(-inf) = 0 on the first pack
    m2 = m_new;
  }
  Softmax s = block_reduce(Softmax{m2 == -INFINITY ? -INFINITY : m2 / kLog2e, d}, sum_z);
  if (threadIdx.x == 0) {
    published[0] = s.m;
    published[1] = s.d;
    published[2] = sum_z;
  }
  cluster_arrive();  // release: the triple is visible to the cluster
  cluster_wait();

  const int64_t label = a.labels[row];
  const bool kept =
      label != a.ignore_index && label >= a.col_offset && label < a.col_offset + a.cols;
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    Softmax part{-INFINITY, 0.f};
    float part_z = 0.f;
    if (lane < cluster) {
      const float* peer = cluster_peer(published, static_cast<unsigned>(lane));
      part = {peer[0], peer[1]};
      part_z = peer[2];
    }
    // Merged by a fixed shuffle tree: the same result in every block of the cluster.
    for (int offset = 16; offset > 0; offset /= 2) {
      Softmax other{__shfl_xor_sync(0xffffffffu, part.m, offset),
                    __shfl_xor_sync(0xffffffffu, part.d, offset)};
      part = softmax_merge(part, other);
      part_z += __shfl_xor_sync(0xffffffffu, part_z, offset);
    }
    const float lse = part.m + __logf(part.d);
    if (lane == 0) row_lse = lse;
    if (lane == 0 && rank == 0) {
      float loss = 0.f;
      if (kept) {
        const float z_label = cap(to_float(x[label - a.col_offset]), softcap);
        loss = row_loss(lse, z_label, part_z, a.vocab, a.label_smoothing, a.z_loss_scale);
      }
      loss_out[row] = loss;
      if (lse_out != nullptr) lse_out[row] = lse;
    }
  }
  __syncthreads();
  cluster_arrive();  // this block is done reading its peers' triples

  if (a.grad != nullptr) {
    const float lse = row_lse;
    const float scale = kept ? row_grad_scale(a, row) : 0.f;
    const float k = (1.f + 2.f * a.z_loss_scale * lse) * scale;
    const float c = a.label_smoothing / static_cast<float>(a.vocab) * scale;
    const float lse2 = lse * kLog2e;
    const GradTerms terms{lse,
                          1.f + 2.f * a.z_loss_scale * lse,
                          a.label_smoothing / static_cast<float>(a.vocab),
                          1.f - a.label_smoothing,
                          softcap,
                          scale,
                          label};
    // The pack that holds the label (none when the label is ignored or elsewhere).
    const int64_t label_pack = kept ? (label - a.col_offset) / V : -1;
    T* g = static_cast<T*>(a.grad) + row * a.row_stride;
    for (int64_t p = begin + threadIdx.x; p < end; p += kClusterThreads) {
      const P pk = cache[p - begin];
      P out;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float x_i = to_float(pk.v[i]);
        if constexpr (kSoftcap) {
          const float t = tanhf(x_i / softcap);
          const float e = exp2_approx(softcap * t * kLog2e - lse2);
          out.v[i] = from_float<T>(__fmaf_rn(e, k, -c) *
                                   (1.f - t * t));  // cast: gradient in the logits dtype
        } else {
          const float e = exp2_approx(__fmaf_rn(x_i, kLog2e, -lse2));
          out.v[i] = from_float<T>(__fmaf_rn(e, k, -c));  // cast: gradient in the logits dtype
        }
      }
      if (p == label_pack) {  // the label's element, with every term (GradTerms)
        const int li = static_cast<int>((label - a.col_offset) - p * V);
#pragma unroll
        for (int i = 0; i < V; ++i) {  // constant indices: `out` stays in registers
          if (i == li)
            out.v[i] =
                from_float<T>(terms(cap(to_float(pk.v[i]), softcap), label));  // cast: as above
        }
      }
      *reinterpret_cast<P*>(g + p * V) = out;
    }
  }
  cluster_wait();  // no block leaves while a peer may still read its triple
}

// Vocabulary-block pass 1: one block per row folds the block's columns into
// the row's running statistics, a 16-byte pack at a time when aligned (one
// (max, sum) update per pack, as in ce_rows_kernel). grid = rows, block = 256.
template <typename T, bool kVector>
__global__ void ce_block_stats_kernel(liger::cuda_kernels::CrossEntropyArgs a,
                                      liger::cuda_kernels::RowStats stats, bool first) {
  constexpr int V = kVector ? kVec<T> : 1;
  const int64_t row = blockIdx.x;
  const T* x = static_cast<const T*>(a.logits) + row * a.row_stride;
  Softmax s{-INFINITY, 0.f};
  float sum_z = 0.f;
  const int64_t packs = a.cols / V;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    const Pack<T, V> pk = load_pack<T, V>(x + p * V);
    float z[V];
    float pack_max = -INFINITY;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      z[i] = cap(to_float(pk.v[i]), a.softcap);
      pack_max = fmaxf(pack_max, z[i]);
      sum_z += z[i];
    }
    const float m = fmaxf(s.m, pack_max);
    float added = 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i) added += __expf(z[i] - m);
    s.d = s.d * __expf(s.m - m) + added;
    s.m = m;
  }
  s = block_reduce(s, sum_z);
  if (threadIdx.x == 0) {
    const int64_t label = a.labels[row];
    const bool in_block = label >= a.col_offset && label < a.col_offset + a.cols;
    if (first) {
      stats.max[row] = s.m;
      stats.sumexp[row] = s.d;
      stats.sum_z[row] = sum_z;
      stats.z_label[row] = 0.f;
    } else {
      const Softmax merged = softmax_merge({stats.max[row], stats.sumexp[row]}, s);
      stats.max[row] = merged.m;
      stats.sumexp[row] = merged.d;
      stats.sum_z[row] += sum_z;
    }
    if (in_block) stats.z_label[row] = cap(to_float(x[label - a.col_offset]), a.softcap);
  }
}

__global__ void ce_finish_stats_kernel(const int64_t* labels, int64_t rows, int64_t vocab,
                                       int64_t ignore_index, float eps, float z_loss_scale,
                                       liger::cuda_kernels::RowStats stats, float* loss,
                                       float* lse_out) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (row >= rows) return;
  const float lse = stats.max[row] + __logf(stats.sumexp[row]);
  lse_out[row] = lse;
  loss[row] = labels[row] == ignore_index
                  ? 0.f
                  : row_loss(lse, stats.z_label[row], stats.sum_z[row], vocab, eps, z_loss_scale);
}

// Vocabulary-block pass 2: gradient of the block from the row's lse, one
// 16-byte pack per thread when aligned. grid = (rows, pack blocks), block = 256.
template <typename T, bool kVector>
__global__ void ce_block_grad_kernel(liger::cuda_kernels::CrossEntropyArgs a, const float* lse) {
  constexpr int V = kVector ? kVec<T> : 1;
  const int64_t row = blockIdx.x;
  const int64_t p = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= a.cols / V) return;
  const int64_t label = a.labels[row];
  const float row_lse = lse[row];
  const GradTerms terms{row_lse,
                        1.f + 2.f * a.z_loss_scale * row_lse,
                        a.label_smoothing / static_cast<float>(a.vocab),
                        1.f - a.label_smoothing,
                        a.softcap,
                        label == a.ignore_index ? 0.f : row_grad_scale(a, row),
                        label};
  const int64_t offset = row * a.row_stride + p * V;
  const Pack<T, V> pk = load_pack<T, V>(static_cast<const T*>(a.logits) + offset);
  Pack<T, V> out;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const float z = cap(to_float(pk.v[i]), a.softcap);
    out.v[i] = from_float<T>(terms(z, a.col_offset + p * V + i));  // cast to the logits dtype
  }
  *reinterpret_cast<Pack<T, V>*>(static_cast<T*>(a.grad) + offset) = out;
}

// data *= *scale unless *scale == 1 (then every block returns at once).
template <typename T>
__global__ void scale_unless_one_kernel(T* data, int64_t n, const float* scale) {
  const float s = *scale;
  if (s == 1.f) return;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    data[i] = from_float<T>(to_float(data[i]) * s);
  }
}

int grid_stride_blocks(int64_t n, int threads) {
  // enough blocks to fill the GPU several times over; the loops stride the rest
  const int64_t wanted = (n + threads - 1) / threads;
  return static_cast<int>(wanted < 132 * 16 ? (wanted > 0 ? wanted : 1) : 132 * 16);
}

template <typename Fn>
cudaError_t by_dtype(liger::cuda_kernels::DType dtype, Fn&& fn) {
  switch (dtype) {
    case liger::cuda_kernels::DType::f32: return fn(float{});
    case liger::cuda_kernels::DType::f16: return fn(__half{});
    case liger::cuda_kernels::DType::bf16: return fn(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace
}  // namespace liger::cuda_kernels

namespace liger::cuda_kernels {

// The cluster size for whole rows of `row_bytes`: the smallest power of two
// whose slices fit kTargetSliceBytes, at most kMaxCluster; 0 if even that
// slice is over kMaxSliceBytes or the device cannot launch clusters.
static int cluster_size_for(int64_t row_bytes) {
  static const bool clusters = [] {
    int device = 0, supported = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&supported, cudaDevAttrClusterLaunch, device) != cudaSuccess)
      return false;
    return supported != 0;
  }();
  if (!clusters) return 0;
  int c = 1;
  while (c < kMaxCluster && (row_bytes + c - 1) / c > kTargetSliceBytes) c *= 2;
  return (row_bytes + c - 1) / c + 16 <= kMaxSliceBytes ? c : 0;
}

cudaError_t cross_entropy_rows(const CrossEntropyArgs& a, float* loss, float* lse,
                               cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  return by_dtype(a.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    constexpr int V = kVec<T>;
    const bool vector = aligned16(a.logits) && (a.grad == nullptr || aligned16(a.grad)) &&
                        a.cols % V == 0 && a.row_stride % V == 0;
    const int64_t pack_bytes = (vector ? V : 1) * static_cast<int64_t>(sizeof(T));
    const int64_t row_bytes = (a.cols / (vector ? V : 1)) * pack_bytes;
    const int cluster = vector ? cluster_size_for(row_bytes) : 0;
    if (cluster > 0) {
      const int64_t packs = a.cols / V;
      const int64_t slice_packs = (packs + cluster - 1) / cluster;
      const size_t smem = static_cast<size_t>(std::max<int64_t>(slice_packs, 1) * pack_bytes);
      auto kernel = a.softcap > 0.f
                        ? (a.label_smoothing != 0.f ? ce_cluster_rows_kernel<T, true, true>
                                                    : ce_cluster_rows_kernel<T, true, false>)
                        : (a.label_smoothing != 0.f ? ce_cluster_rows_kernel<T, false, true>
                                                    : ce_cluster_rows_kernel<T, false, false>);
      cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem));
      if (err != cudaSuccess) return err;
      cudaLaunchConfig_t config{};
      config.gridDim = dim3(static_cast<unsigned>(a.rows * cluster));  // C blocks per row
      config.blockDim = dim3(kClusterThreads);
      config.dynamicSmemBytes = smem;
      config.stream = stream;
      cudaLaunchAttribute attribute{};
      attribute.id = cudaLaunchAttributeClusterDimension;
      attribute.val.clusterDim.x = static_cast<unsigned>(cluster);
      attribute.val.clusterDim.y = 1;
      attribute.val.clusterDim.z = 1;
      config.attrs = &attribute;
      config.numAttrs = 1;
      err = cudaLaunchKernelEx(&config, kernel, a, loss, lse, cluster, slice_packs);
      if (err != cudaSuccess) return err;
      return cudaGetLastError();
    }
    const int cache = static_cast<int>(
        row_bytes < kRowCacheBytes ? row_bytes : (kRowCacheBytes / pack_bytes) * pack_bytes);
    auto launch = [&](auto kernel) -> cudaError_t {
      cudaError_t err =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kRowCacheBytes);
      if (err != cudaSuccess) return err;
      kernel<<<static_cast<unsigned>(a.rows), kThreads, cache, stream>>>(a, loss,
                                                                         lse);  // one block per row
      return cudaGetLastError();
    };
    return vector ? launch(ce_rows_kernel<T, true>) : launch(ce_rows_kernel<T, false>);
  });
}

cudaError_t cross_entropy_block_stats(const CrossEntropyArgs& a, RowStats stats, bool first,
                                      cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  return by_dtype(a.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const bool vector = aligned16(a.logits) && a.cols % kVec<T> == 0 && a.row_stride % kVec<T> == 0;
    if (vector) {
      ce_block_stats_kernel<T, true><<<static_cast<unsigned>(a.rows), 256, 0, stream>>>(
          a, stats, first);  // one block per row
    } else {
      ce_block_stats_kernel<T, false>
          <<<static_cast<unsigned>(a.rows), 256, 0, stream>>>(a, stats, first);
    }
    return cudaGetLastError();
  });
}

cudaError_t cross_entropy_finish_stats(const int64_t* labels, int64_t rows, int64_t vocab,
                                       int64_t ignore_index, float label_smoothing,
                                       float z_loss_scale, RowStats stats, float* loss, float* lse,
                                       cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const int threads = 256;
  ce_finish_stats_kernel<<<static_cast<unsigned>((rows + threads - 1) / threads), threads, 0,
                           stream>>>(labels, rows, vocab, ignore_index, label_smoothing,
                                     z_loss_scale, stats, loss, lse);  // one thread per row
  return cudaGetLastError();
}

cudaError_t cross_entropy_block_grad(const CrossEntropyArgs& a, const float* lse,
                                     cudaStream_t stream) {
  if (a.rows == 0 || a.cols == 0) return cudaSuccess;
  return by_dtype(a.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const int threads = 256;
    const bool vector = aligned16(a.logits) && aligned16(a.grad) && a.cols % kVec<T> == 0 &&
                        a.row_stride % kVec<T> == 0;
    const int64_t packs = a.cols / (vector ? kVec<T> : 1);
    const dim3 grid(static_cast<unsigned>(a.rows),
                    static_cast<unsigned>((packs + threads - 1) / threads));
    if (vector) {
      ce_block_grad_kernel<T, true><<<grid, threads, 0, stream>>>(a, lse);  // (row, pack block)
    } else {
      ce_block_grad_kernel<T, false><<<grid, threads, 0, stream>>>(a, lse);
    }
    return cudaGetLastError();
  });
}

cudaError_t scale_unless_one(void* data, int64_t n, DType dtype, const float* scale,
                             cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return by_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const int threads = 256;
    scale_unless_one_kernel<T><<<grid_stride_blocks(n, threads), threads, 0, stream>>>(
        static_cast<T*>(data), n, scale);  // grid-stride
    return cudaGetLastError();
  });
}

}  // namespace liger::cuda_kernels
