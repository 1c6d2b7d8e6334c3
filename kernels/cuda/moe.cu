// The MoE block's kernels: the routing layout (histogram, scan, stable
// scatter), the row gather, the SwiGLU over the gate|up GEMM's output, the
// per-token weighted combine and the SwiGLU's backward with the routing
// weights' gradient. See moe.h for what each computes.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/moe.h"

#include <initializer_list>

namespace liger::cuda_kernels {
namespace {

// ---------------------------------------------------------------------------
// Routing layout
// ---------------------------------------------------------------------------

// Each warp walks one tile of kTileChoices consecutive choices, 32 at a time.
constexpr int kTileChoices = 512;
constexpr int kWarpsPerRoutingBlock = 4;

int64_t routing_tiles(int64_t choices) {
  return (choices + kTileChoices - 1) / kTileChoices;
}

// The expert of choice p, or -1 past the end or for an id outside [0, experts).
__device__ __forceinline__ int expert_at(const int64_t* experts, int64_t p, int64_t choices,
                                         int num_experts) {
  if (p >= choices) return -1;
  const int64_t e = experts[p];
  return e >= 0 && e < num_experts ? static_cast<int>(e) : -1;
}

// Pass 1: counts[tile * E + e] = how many choices of the tile chose e. Within
// a chunk of 32 the lanes that chose the same expert find each other
// (__match_any_sync) and the lowest of them adds their number: no atomics.
// smem: kWarpsPerRoutingBlock * E ints.
__global__ void __launch_bounds__(kWarpsPerRoutingBlock * 32)
    routing_counts_kernel(const int64_t* __restrict__ experts, int64_t choices, int num_experts,
                          int64_t tiles, int* __restrict__ counts) {
  extern __shared__ int warp_counts[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * kWarpsPerRoutingBlock + warp;
  if (tile >= tiles) return;  // a whole warp leaves; no block-wide barrier below
  int* mine = warp_counts + warp * num_experts;
  for (int e = lane; e < num_experts; e += 32) mine[e] = 0;
  __syncwarp();
  const int64_t first = tile * kTileChoices;
  for (int j = 0; j < kTileChoices; j += 32) {
    const int e = expert_at(experts, first + j + lane, choices, num_experts);
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    if (e >= 0 && lane == __ffs(peers) - 1) mine[e] += __popc(peers);
    __syncwarp();
  }
  for (int e = lane; e < num_experts; e += 32) counts[tile * num_experts + e] = mine[e];
}

// Pass 2, one block, thread e per expert: total_e = the sum of e's tile
// counts; start_e = exclusive scan of the totals over the experts;
// expert_ends[e] = start_e + total_e; and each tile's count is replaced by the
// row where the tile's first choice of e goes (start_e + e's counts in the
// earlier tiles).
__global__ void __launch_bounds__(kMoeMaxExperts)
    routing_offsets_kernel(int* __restrict__ counts, int64_t tiles, int num_experts,
                           int* __restrict__ expert_ends) {
  __shared__ int scan[kMoeMaxExperts];
  const int e = threadIdx.x;
  int total = 0;
  if (e < num_experts) {
    for (int64_t t = 0; t < tiles; ++t) total += counts[t * num_experts + e];
  }
  // Inclusive scan over the block (Hillis-Steele: log2(blockDim) steps).
  scan[e] = total;
  __syncthreads();
  for (int step = 1; step < static_cast<int>(blockDim.x); step *= 2) {
    const int add = e >= step ? scan[e - step] : 0;
    __syncthreads();
    scan[e] += add;
    __syncthreads();
  }
  if (e >= num_experts) return;
  expert_ends[e] = scan[e];
  int row = scan[e] - total;  // start_e
  for (int64_t t = 0; t < tiles; ++t) {
    const int c = counts[t * num_experts + e];
    counts[t * num_experts + e] = row;
    row += c;
  }
}

// Pass 3: the rows. Walking the tile in order, a choice's row is its
// expert's next free row in the tile plus the number of lower lanes of its
// chunk that chose the same expert: stable. smem: as pass 1.
__global__ void __launch_bounds__(kWarpsPerRoutingBlock * 32)
    routing_rows_kernel(const int64_t* __restrict__ experts, int64_t choices, int num_experts,
                        int64_t tiles, const int* __restrict__ tile_rows,
                        int* __restrict__ row_of_choice, int* __restrict__ choice_of_row) {
  extern __shared__ int next_row[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * kWarpsPerRoutingBlock + warp;
  if (tile >= tiles) return;
  int* mine = next_row + warp * num_experts;
  for (int e = lane; e < num_experts; e += 32) mine[e] = tile_rows[tile * num_experts + e];
  __syncwarp();
  const unsigned lower_lanes = (1u << lane) - 1u;
  const int64_t first = tile * kTileChoices;
  for (int j = 0; j < kTileChoices; j += 32) {
    const int64_t p = first + j + lane;
    const int e = expert_at(experts, p, choices, num_experts);
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int row = e >= 0 ? mine[e] + __popc(peers & lower_lanes) : -1;
    __syncwarp();  // every lane has read mine[e] before the leader moves it on
    if (p < choices) {
      row_of_choice[p] = row;
      if (row >= 0) choice_of_row[row] = static_cast<int>(p);
    }
    if (e >= 0 && lane == __ffs(peers) - 1) mine[e] += __popc(peers);
    __syncwarp();
  }
}

// ---------------------------------------------------------------------------
// Row gather and the forward SwiGLU: flat over (row, vector of V elements)
// ---------------------------------------------------------------------------

constexpr int kThreads = 256;

unsigned flat_blocks(int64_t work) {
  const int64_t most = static_cast<int64_t>(sm_count()) * 16;  // then a grid-stride loop
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < most ? blocks : most));
}

// dst[r, c..c+V) = src[choice_of_row[r] / top_k, c..c+V): moved as it is.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    gather_rows_kernel(const T* __restrict__ src, const int* __restrict__ choice_of_row, int top_k,
                       T* __restrict__ dst, int64_t rows, int64_t cols) {
  const int64_t per_row = cols / V;
  const int64_t total = rows * per_row;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = i / per_row;
    const int64_t c = (i - r * per_row) * V;
    const int64_t token = choice_of_row[r] / top_k;
    *reinterpret_cast<Pack<T, V>*>(dst + r * cols + c) = load_pack<T, V>(src + token * cols + c);
  }
}

// h = T( T(silu(g)) * u ), silu(g) = g / (1 + exp(-g)): ATen's at::silu
// (rounded to T), then ATen's product (fp32, rounded to T).
template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    swiglu_rows_kernel(const T* __restrict__ gate_up, int64_t gate_up_stride, T* __restrict__ h,
                       int64_t rows, int64_t ffn) {
  const int64_t per_row = ffn / V;
  const int64_t total = rows * per_row;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = i / per_row;
    const int64_t c = (i - r * per_row) * V;
    float g[V], u[V], out[V];
    load<T, V>(gate_up + r * gate_up_stride + c, g);
    load<T, V>(gate_up + r * gate_up_stride + ffn + c, u);
#pragma unroll
    for (int j = 0; j < V; ++j) out[j] = round_to<T>(g[j] / (1.f + expf(-g[j]))) * u[j];
    store<T, V>(h + r * ffn + c, out);  // cast: the product to T
  }
}

// ---------------------------------------------------------------------------
// Combine: one block per token
// ---------------------------------------------------------------------------

// The token's rows sorted ascending (and their weights with them), in shared
// memory: each of its k rows counts the rows below it (k is small; the rows
// of one token are distinct).
__device__ __forceinline__ void token_rows_in_order(const int* row_of_choice, const float* weights,
                                                    int64_t token, int top_k, int* rows,
                                                    float* row_weights) {
  const int* mine = row_of_choice + token * top_k;
  for (int j = threadIdx.x; j < top_k; j += blockDim.x) {
    const int r = mine[j];
    int rank = 0;
    for (int i = 0; i < top_k; ++i) rank += mine[i] < r;
    rows[rank] = r;
    row_weights[rank] = weights != nullptr ? weights[token * top_k + j] : 1.f;
  }
  __syncthreads();
}

// kWeighted: acc = T(acc + T(w * in[r])) per row, as an index_add of
// x-dtype rows into an x-dtype buffer (the first addition, to 0, is exact).
// w * in is __fmul_rn: never contracted with the addition into an FMA, so
// in fp32 it is the composite's separate product and sum.
// Otherwise: acc = sum of in[r] in fp32, one cast at the end.
template <typename T, int V, bool kWeighted>
__global__ void __launch_bounds__(kThreads)
    combine_kernel(const T* __restrict__ in, int64_t in_stride,
                   const int* __restrict__ row_of_choice, const float* __restrict__ weights,
                   T* __restrict__ out, int64_t cols, int top_k) {
  __shared__ int rows[kMoeMaxExperts];
  __shared__ float row_weights[kMoeMaxExperts];
  const int64_t token = blockIdx.x;
  token_rows_in_order(row_of_choice, weights, token, top_k, rows, row_weights);
  const int64_t per_row = cols / V;
  for (int64_t v = threadIdx.x; v < per_row; v += blockDim.x) {
    float acc[V] = {};
    // Two rows' loads in flight; more unrolling spills a register.
#pragma unroll 2
    for (int i = 0; i < top_k; ++i) {
      float x[V];
      load<T, V>(in + rows[i] * in_stride + v * V, x);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        if constexpr (kWeighted) {
          // cast: the weighted row to T, then the running sum to T (index_add in T)
          acc[j] = round_to<T>(acc[j] + round_to<T>(__fmul_rn(x[j], row_weights[i])));
        } else {
          acc[j] += x[j];
        }
      }
    }
    store<T, V>(out + token * cols + v * V, acc);  // cast: the fp32 sum to T (exact if kWeighted)
  }
}

// ---------------------------------------------------------------------------
// SwiGLU backward with the routing weights' gradient: one block per row
// ---------------------------------------------------------------------------

// With s = sigmoid(g): silu(g) = g s, silu'(g) = s (1 + g (1 - s)); the
// products in the composite's order: d_gate = ((w dh) u) s (1 + g (1 - s)),
// d_up = ((w dh) g) s. h is the forward's expression, so the same bits.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    swiglu_backward_kernel(const T* __restrict__ gate_up, int64_t gate_up_stride,
                           const T* __restrict__ dh, int64_t dh_stride,
                           const float* __restrict__ weights, const int* __restrict__ choice_of_row,
                           T* __restrict__ d_gate_up, T* __restrict__ h,
                           float* __restrict__ d_weights, T* __restrict__ dy_rows, int64_t ffn,
                           int64_t hidden) {
  __shared__ float red[32];
  const int64_t r = blockIdx.x;
  const int choice = choice_of_row[r];
  const float w = weights[choice];
  const T* gu = gate_up + r * gate_up_stride;
  float dot[1] = {0.f};
  for (int64_t c = static_cast<int64_t>(threadIdx.x) * V; c < ffn;
       c += static_cast<int64_t>(blockDim.x) * V) {
    float g[V], u[V], d[V], hv[V], dg[V], du[V];
    load<T, V>(gu + c, g);
    load<T, V>(gu + ffn + c, u);
    load<T, V>(dh + r * dh_stride + c, d);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float e = expf(-g[j]);
      hv[j] = round_to<T>(round_to<T>(g[j] / (1.f + e)) * u[j]);  // cast: as forward's h
      dot[0] += d[j] * hv[j];
      const float s = 1.f / (1.f + e);
      const float wd = d[j] * w;
      dg[j] = wd * u[j] * s * (1.f + g[j] * (1.f - s));
      du[j] = wd * g[j] * s;
    }
    store<T, V>(d_gate_up + r * 2 * ffn + c, dg);  // cast: the GEMM operands in T
    store<T, V>(d_gate_up + r * 2 * ffn + ffn + c, du);
    if (h != nullptr) store<T, V>(h + r * ffn + c, hv);  // exact: hv is already T
  }
  if (dy_rows != nullptr) {
    T* dy = dy_rows + r * hidden;
    for (int64_t c = static_cast<int64_t>(threadIdx.x) * V; c < hidden;
         c += static_cast<int64_t>(blockDim.x) * V) {
      float v[V];
      load<T, V>(dy + c, v);
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] *= w;
      store<T, V>(dy + c, v);  // cast: w dy to T, the down weights' GEMM operand
    }
  }
  row_sum(dot, red);  // the fixed tree of warp shuffles and warps: deterministic
  if (threadIdx.x == 0 && d_weights != nullptr) d_weights[choice] = dot[0];
}

// Threads of a block that walks rows of `vectors` vectors: a multiple of 32, at most kThreads.
unsigned row_threads(int64_t vectors) {
  const int64_t t = (vectors + 31) / 32 * 32;
  return static_cast<unsigned>(t < 32 ? 32 : (t > kThreads ? kThreads : t));
}

// 16-byte vectors when every pointer is aligned and every stride a multiple of the vector.
template <typename T>
bool vectors_fit(std::initializer_list<const void*> ptrs, std::initializer_list<int64_t> strides) {
  for (const void* p : ptrs) {
    if (p != nullptr && !aligned16(p)) return false;
  }
  for (int64_t s : strides) {
    if (s % kVec<T> != 0) return false;
  }
  return true;
}

}  // namespace

size_t moe_routing_workspace_ints(int64_t choices, int num_experts) {
  return static_cast<size_t>(routing_tiles(choices)) * static_cast<size_t>(num_experts);
}

cudaError_t moe_routing(const MoeRouting& a, cudaStream_t stream) {
  if (a.num_experts < 1 || a.num_experts > kMoeMaxExperts) return cudaErrorInvalidValue;
  if (a.choices <= 0) return cudaSuccess;
  const int64_t tiles = routing_tiles(a.choices);
  const unsigned blocks =
      static_cast<unsigned>((tiles + kWarpsPerRoutingBlock - 1) / kWarpsPerRoutingBlock);
  const size_t smem = sizeof(int) * kWarpsPerRoutingBlock * a.num_experts;
  // grid: one warp per tile of kTileChoices choices, kWarpsPerRoutingBlock per block
  routing_counts_kernel<<<blocks, kWarpsPerRoutingBlock * 32, smem, stream>>>(
      a.experts, a.choices, a.num_experts, tiles, a.workspace);
  // one block: a thread per expert (a multiple of 32)
  const unsigned expert_threads = static_cast<unsigned>((a.num_experts + 31) / 32 * 32);
  routing_offsets_kernel<<<1, expert_threads, 0, stream>>>(a.workspace, tiles, a.num_experts,
                                                           a.expert_ends);
  routing_rows_kernel<<<blocks, kWarpsPerRoutingBlock * 32, smem, stream>>>(
      a.experts, a.choices, a.num_experts, tiles, a.workspace, a.row_of_choice, a.choice_of_row);
  return cudaGetLastError();
}

cudaError_t moe_gather_rows(const MoeGatherRows& a, cudaStream_t stream) {
  if (a.rows == 0 || a.cols == 0) return cudaSuccess;
  return dispatch_dtype(a.dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    const auto* src = static_cast<const T*>(a.src);
    auto* dst = static_cast<T*>(a.dst);
    // grid: one thread per vector (16 bytes, or one element), grid-stride beyond 16 blocks per SM
    if (vectors_fit<T>({a.src, a.dst}, {a.cols})) {
      gather_rows_kernel<T, kVec<T>>
          <<<flat_blocks(a.rows * a.cols / kVec<T>), kThreads, 0, stream>>>(
              src, a.choice_of_row, a.top_k, dst, a.rows, a.cols);
    } else {
      gather_rows_kernel<T, 1><<<flat_blocks(a.rows * a.cols), kThreads, 0, stream>>>(
          src, a.choice_of_row, a.top_k, dst, a.rows, a.cols);
    }
    return cudaGetLastError();
  });
}

cudaError_t moe_swiglu(const MoeSwiglu& a, cudaStream_t stream) {
  if (a.rows == 0 || a.ffn == 0) return cudaSuccess;
  return dispatch_dtype(a.dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    const auto* gate_up = static_cast<const T*>(a.gate_up);
    auto* h = static_cast<T*>(a.h);
    // grid: one thread per vector of h, grid-stride beyond 16 blocks per SM
    if (vectors_fit<T>({a.gate_up, a.h}, {a.ffn, a.gate_up_stride})) {
      swiglu_rows_kernel<T, kVec<T>>
          <<<flat_blocks(a.rows * a.ffn / kVec<T>), kThreads, 0, stream>>>(
              gate_up, a.gate_up_stride, h, a.rows, a.ffn);
    } else {
      swiglu_rows_kernel<T, 1><<<flat_blocks(a.rows * a.ffn), kThreads, 0, stream>>>(
          gate_up, a.gate_up_stride, h, a.rows, a.ffn);
    }
    return cudaGetLastError();
  });
}

cudaError_t moe_combine(const MoeCombine& a, cudaStream_t stream) {
  if (a.tokens == 0 || a.cols == 0) return cudaSuccess;
  if (a.top_k < 1 || a.top_k > kMoeMaxExperts || a.tokens > 0x7fffffff) {
    return cudaErrorInvalidValue;
  }
  return dispatch_dtype(a.dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    const bool vec = vectors_fit<T>({a.in, a.out}, {a.cols, a.in_stride});
    const int v = vec ? kVec<T> : 1;
    auto kernel = a.weights != nullptr
                      ? (vec ? combine_kernel<T, kVec<T>, true> : combine_kernel<T, 1, true>)
                      : (vec ? combine_kernel<T, kVec<T>, false> : combine_kernel<T, 1, false>);
    // grid: one block per token; block: a thread per vector of the row, up to kThreads
    kernel<<<static_cast<unsigned>(a.tokens), row_threads(a.cols / v), 0, stream>>>(
        static_cast<const T*>(a.in), a.in_stride, a.row_of_choice, a.weights,
        static_cast<T*>(a.out), a.cols, a.top_k);
    return cudaGetLastError();
  });
}

cudaError_t moe_swiglu_backward(const MoeSwigluBackward& a, cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  if (a.rows > 0x7fffffff) return cudaErrorInvalidValue;
  return dispatch_dtype(a.dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    const bool vec = vectors_fit<T>({a.gate_up, a.dh, a.d_gate_up, a.h, a.dy_rows},
                                    {a.ffn, a.hidden, a.gate_up_stride, a.dh_stride});
    const int v = vec ? kVec<T> : 1;
    auto kernel = vec ? swiglu_backward_kernel<T, kVec<T>> : swiglu_backward_kernel<T, 1>;
    const int64_t widest = a.ffn > a.hidden ? a.ffn : a.hidden;
    // grid: one block per row; block: a thread per vector of the wider of ffn and hidden, up to
    // kThreads
    kernel<<<static_cast<unsigned>(a.rows), row_threads(widest / v), 0, stream>>>(
        static_cast<const T*>(a.gate_up), a.gate_up_stride, static_cast<const T*>(a.dh),
        a.dh_stride, a.weights, a.choice_of_row, static_cast<T*>(a.d_gate_up), static_cast<T*>(a.h),
        a.d_weights, static_cast<T*>(a.dy_rows), a.ffn, a.hidden);
    return cudaGetLastError();
  });
}

}  // namespace liger::cuda_kernels
