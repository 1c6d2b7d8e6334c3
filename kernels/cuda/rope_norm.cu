// Qwen3's per-head q/k RMSNorm and the rotary embedding of a packed q|k|v
// projection, forward and backward, each in one pass over the heads.
//
// Per query or key head x (D = 2h elements, weight w of q_norm or k_norm,
// c = cos[b, t], s = sin[b, t], as in rope.cu):
//   r = (sum(x^2) / D + eps)^-1/2                    fp32, saved per head
//   u = T( T(x r) * W(w + offset) )                  Llama casting (HF Qwen3RMSNorm:
//                                                    x * rstd in fp32, cast, times the weight)
//   y = u c + rotate_half(u) s                       rope.cu's forward, rounded as HF does
// Backward (fp32 throughout, one cast per stored value), from dy:
//   du = rope transpose of dy                        du[i] = dy[i] c[i] + dy[i+h] s[i+h],
//                                                    du[i+h] = dy[i+h] c[i+h] - dy[i] s[i]
//   n = x r, g = du (w + offset)
//   dx = r (g - n mean(g n))                         the RMSNorm backward of rms_norm.cu
//   dw = sum over tokens and heads of du n
// v's heads are copied both ways.
//
// Layout: one head is split over `lanes` = h / V threads (a power of two, at
// most 32, so a head's threads are consecutive lanes of one warp and its sums
// are warp shuffles), each owning V elements of the first half and the
// matching V of the second, moved as 8-byte vectors (16 when a head needs
// more than 32 lanes of those). Small vectors keep the registers per thread
// low, and so the warps per SM, and the bytes in flight, high.
// Forward: one block per token, its rows of threads walking the token's heads;
// a thread loads and rounds its cos/sin once for all of them, and every cast
// of HF's is a packed conversion of two values (round_pair).
// Backward: persistent blocks, each serving one group (q, k or v) and walking
// that group's (token, head) items, so a thread sums dw for its columns of
// one norm weight only; each block then stores one partial row of
// [d q_norm | d k_norm] (zeros in the other group's half) and sum_partials
// adds the rows in a fixed order: deterministic.
#include "kernels/cuda/common.cuh"

#include <algorithm>

namespace liger::cuda_kernels {
namespace {

// Threads of a block (an upper bound; blocks hold whole heads' lanes).
constexpr int kBlockThreads = 256;
// Blocks per SM of the persistent backward at most (and so its partial rows).
constexpr int kBackwardBlocksPerSm = 8;

// Sums v over the `lanes` threads of this thread's head (consecutive lanes
// of one warp, starting at a multiple of `lanes`); each of them gets the sum.
__device__ __forceinline__ float head_sum(float v, int lanes) {
  const int first = (threadIdx.y * blockDim.x) % 32;  // blockDim.x == lanes divides 32
  const unsigned mask = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u) << first;
  for (int offset = lanes / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(mask, v, offset);
  return v;
}

// This token's cos/sin at the thread's columns i and h + i, fp32.
template <int V>
__device__ __forceinline__ void load_tables(const float* cos, const float* sin, int64_t token,
                                            int64_t seq, int half, int64_t cos_batch_stride, int i,
                                            float (&c1)[V], float (&c2)[V], float (&s1)[V],
                                            float (&s2)[V]) {
  // 32-bit division (the launchers check tokens < 2^31): a 64-bit one is a
  // long software routine, a cost this memory-bound kernel would notice.
  const unsigned u_token = static_cast<unsigned>(token), u_seq = static_cast<unsigned>(seq);
  const unsigned b = u_token / u_seq, t = u_token - b * u_seq;
  const int64_t cs = b * cos_batch_stride + static_cast<int64_t>(t) * 2 * half;
  load<float, V>(cos + cs + i, c1);
  load<float, V>(cos + cs + half + i, c2);
  load<float, V>(sin + cs + i, s1);
  load<float, V>(sin + cs + half + i, s2);
}

template <typename T, typename W, int V>
__global__ void __launch_bounds__(kBlockThreads)
    rope_qkv_norm_forward_kernel(const T* __restrict__ qkv, T* __restrict__ q_out,
                                 T* __restrict__ k_out, T* __restrict__ v_out,
                                 const W* __restrict__ q_weight, const W* __restrict__ k_weight,
                                 float* __restrict__ rstd_out, const float* __restrict__ cos,
                                 const float* __restrict__ sin, int64_t seq, int heads_q,
                                 int heads_k, int half, int64_t cos_batch_stride, float eps,
                                 float offset) {
  const int64_t token = blockIdx.x;  // b * seq + t
  const int i = threadIdx.x * V;     // blockDim.x * V == half
  const int d = 2 * half;
  const int normed = heads_q + heads_k;  // q's and k's heads
  const int heads = normed + heads_k;
  const T* row = qkv + token * heads * d;
  // w + offset rounded to W: exact (nothing to round) when the offset is 0
  const bool round_weight = offset != 0.f;

  float c1[V], c2[V], s1[V], s2[V];
  load_tables<V>(cos, sin, token, seq, half, cos_batch_stride, i, c1, c2, s1, s2);
  // cast: cos/sin to T, as HF does
  round_all<T>(c1);
  round_all<T>(c2);
  round_all<T>(s1);
  round_all<T>(s2);

  // A head's threads share threadIdx.y, so they take every branch together.
  for (int head = threadIdx.y; head < heads; head += blockDim.y) {
    float x1[V], x2[V];
    load<T, V>(row + head * d + i, x1);
    load<T, V>(row + head * d + half + i, x2);
    if (head >= normed) {  // v: copied (T -> fp32 -> T is exact)
      T* out = v_out + (token * heads_k + head - normed) * d;
      store<T, V>(out + i, x1);
      store<T, V>(out + half + i, x2);
      continue;
    }
    const bool is_q = head < heads_q;
    float w1[V], w2[V];
    load<W, V>((is_q ? q_weight : k_weight) + i, w1);
    load<W, V>((is_q ? q_weight : k_weight) + half + i, w2);

    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < V; ++j) ss += x1[j] * x1[j] + x2[j] * x2[j];
    ss = head_sum(ss, blockDim.x);
    const float r = rsqrtf(ss / d + eps);
    if (threadIdx.x == 0) rstd_out[token * normed + head] = r;

    float u1[V], u2[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      u1[j] = x1[j] * r;
      u2[j] = x2[j] * r;
      w1[j] += offset;
      w2[j] += offset;
    }
    round_all<T>(u1);  // cast: x r to T (the normalised value)
    round_all<T>(u2);
    if (round_weight) {  // cast: w + offset in W
      round_all<W>(w1);
      round_all<W>(w2);
    }
#pragma unroll
    for (int j = 0; j < V; ++j) {
      u1[j] *= w1[j];
      u2[j] *= w2[j];
    }
    round_all<T>(u1);  // cast: their product to T
    round_all<T>(u2);
    // cast: each product of the rotation to T, then the sum (stored as T)
    float a1[V], b1[V], a2[V], b2[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      a1[j] = u1[j] * c1[j];
      b1[j] = u2[j] * s1[j];
      a2[j] = u2[j] * c2[j];
      b2[j] = u1[j] * s2[j];
    }
    round_all<T>(a1);
    round_all<T>(b1);
    round_all<T>(a2);
    round_all<T>(b2);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      a1[j] -= b1[j];
      a2[j] += b2[j];
    }
    T* out = is_q ? q_out + (token * heads_q + head) * d
                  : k_out + (token * heads_k + head - heads_q) * d;
    store<T, V>(out + i, a1);
    store<T, V>(out + half + i, a2);
  }
}

// A grid-stride walk over a group's (token, head) items, item = token *
// heads + head, that divides once at the start and then only adds (32-bit:
// the launchers check that every item index fits).
struct ItemWalk {
  int item, token, head;
  int step_tokens, step_heads, heads;
  __device__ ItemWalk(int first, int step, int group_heads)
      : item(first),
        token(first / group_heads),
        head(first % group_heads),
        step_tokens(step / group_heads),
        step_heads(step % group_heads),
        heads(group_heads) {}
  __device__ void next() {
    item += step_tokens * heads + step_heads;
    token += step_tokens;
    head += step_heads;
    if (head >= heads) {
      head -= heads;
      ++token;
    }
  }
};

// The backward's split of its blocks over the three groups: blocks
// [0, q_blocks) serve q's heads, the next k_blocks k's, the rest v's.
struct BackwardSplit {
  int q_blocks = 0, k_blocks = 0, v_blocks = 0;
  int total() const { return q_blocks + k_blocks + v_blocks; }
};

template <typename T, typename W, int V>
__global__ void __launch_bounds__(kBlockThreads)
    rope_qkv_norm_backward_kernel(const T* __restrict__ dq, const T* __restrict__ dk,
                                  const T* __restrict__ dv, const T* __restrict__ qkv,
                                  const W* __restrict__ q_weight, const W* __restrict__ k_weight,
                                  const float* __restrict__ rstd, const float* __restrict__ cos,
                                  const float* __restrict__ sin, T* __restrict__ d_qkv,
                                  float* __restrict__ dw_partials, int64_t tokens, int64_t seq,
                                  int heads_q, int heads_k, int half, int64_t cos_batch_stride,
                                  float offset, BackwardSplit split) {
  extern __shared__ float red[];  // D floats: the block's dw of its group's norm weight
  const int i = threadIdx.x * V;
  const int d = 2 * half;
  const int normed = heads_q + heads_k;
  const int heads = normed + heads_k;

  // This block's group (uniform over the block): 0 q, 1 k, 2 v.
  const int bx = blockIdx.x;
  const int group = bx < split.q_blocks ? 0 : bx < split.q_blocks + split.k_blocks ? 1 : 2;
  const int first_block = group == 0   ? 0
                          : group == 1 ? split.q_blocks
                                       : split.q_blocks + split.k_blocks;
  const int group_blocks = group == 0   ? split.q_blocks
                           : group == 1 ? split.k_blocks
                                        : split.v_blocks;
  const int group_heads = group == 0 ? heads_q : heads_k;
  const int head_offset = group == 0 ? 0 : group == 1 ? heads_q : normed;  // in the packed row
  const T* grad_in = group == 0 ? dq : group == 1 ? dk : dv;  // dense [tokens, heads, d]
  const int items = static_cast<int>(tokens) * group_heads;   // < 2^31: checked by the launcher
  const int step = group_blocks * static_cast<int>(blockDim.y);

  // dw of this thread's columns i.. and h + i.. of its group's weight.
  float acc1[V], acc2[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc1[j] = acc2[j] = 0.f;

  if (group == 2) {  // v: dv copied into the packed gradient
    ItemWalk walk((bx - first_block) * static_cast<int>(blockDim.y) + static_cast<int>(threadIdx.y),
                  step, group_heads);
    for (; walk.item < items; walk.next()) {
      const int64_t item = walk.item, token = walk.token;
      const int head = walk.head;
      float g1[V], g2[V];
      load<T, V>(grad_in + item * d + i, g1);
      load<T, V>(grad_in + item * d + half + i, g2);
      T* out = d_qkv + (token * heads + head_offset + head) * d;
      store<T, V>(out + i, g1);
      store<T, V>(out + half + i, g2);
    }
  } else {
    // w + offset of this thread's columns, the same for every item (fp32)
    const W* weight = group == 0 ? q_weight : k_weight;
    float w1[V], w2[V];
    load<W, V>(weight + i, w1);
    load<W, V>(weight + half + i, w2);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      w1[j] += offset;
      w2[j] += offset;
    }
    ItemWalk walk((bx - first_block) * static_cast<int>(blockDim.y) + static_cast<int>(threadIdx.y),
                  step, group_heads);
    for (; walk.item < items; walk.next()) {
      const int64_t item = walk.item, token = walk.token;
      const int head = walk.head;
      const int64_t packed = (token * heads + head_offset + head) * d;
      float g1[V], g2[V], x1[V], x2[V];  // dy and the norm's input of this head
      load<T, V>(grad_in + item * d + i, g1);
      load<T, V>(grad_in + item * d + half + i, g2);
      load<T, V>(qkv + packed + i, x1);
      load<T, V>(qkv + packed + half + i, x2);
      const float r = rstd[token * normed + head_offset + head];
      float c1[V], c2[V], s1[V], s2[V];
      load_tables<V>(cos, sin, token, seq, half, cos_batch_stride, i, c1, c2, s1, s2);

      float du1[V], du2[V], dot = 0.f;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        du1[j] = g1[j] * c1[j] + g2[j] * s2[j];  // the rotation's transpose
        du2[j] = g2[j] * c2[j] - g1[j] * s1[j];
        x1[j] *= r;  // n = x r
        x2[j] *= r;
        dot += du1[j] * w1[j] * x1[j] + du2[j] * w2[j] * x2[j];
      }
      const float mean_gn = head_sum(dot, blockDim.x) / d;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        acc1[j] += du1[j] * x1[j];
        acc2[j] += du2[j] * x2[j];
        g1[j] = r * (du1[j] * w1[j] - x1[j] * mean_gn);  // dx
        g2[j] = r * (du2[j] * w2[j] - x2[j] * mean_gn);
      }
      store<T, V>(d_qkv + packed + i, g1);  // cast: dx to T
      store<T, V>(d_qkv + packed + half + i, g2);
    }
  }
  if (dw_partials == nullptr) return;  // uniform over the grid

  // The block's rows added into shared memory one threadIdx.y at a time (a
  // fixed order), then stored as this block's partial row.
  for (int j = threadIdx.y * blockDim.x + threadIdx.x; j < d; j += blockDim.x * blockDim.y) {
    red[j] = 0.f;
  }
  __syncthreads();
  if (group != 2) {
    for (int y = 0; y < static_cast<int>(blockDim.y); ++y) {
      if (threadIdx.y == y) {
#pragma unroll
        for (int j = 0; j < V; ++j) {
          red[i + j] += acc1[j];
          red[half + i + j] += acc2[j];
        }
      }
      __syncthreads();
    }
  }
  float* part = dw_partials + static_cast<int64_t>(bx) * 2 * d;
  for (int j = threadIdx.y * blockDim.x + threadIdx.x; j < 2 * d; j += blockDim.x * blockDim.y) {
    const bool mine = group == 0 ? j < d : group == 1 ? j >= d : false;
    part[j] = mine ? red[j % d] : 0.f;
  }
}

// Elements per thread of each half (0: the kernel does not take this
// head_dim and dtype): 8-byte vectors, or 16-byte ones when a head would
// need more than 32 lanes of 8.
int vector_for(int64_t head_dim, DType dtype) {
  const int64_t size = static_cast<int64_t>(dtype_size(dtype));
  const int64_t half = head_dim / 2;
  for (const int64_t vec : {8 / size, 16 / size}) {
    if (head_dim <= 0 || half % vec != 0) continue;
    const int64_t lanes = half / vec;
    const bool power_of_two = (lanes & (lanes - 1)) == 0;
    if (power_of_two && lanes <= 32) return static_cast<int>(vec);
  }
  return 0;
}

// Block shape: `lanes` threads per head, as many rows of them as fit
// kBlockThreads (at most `heads`).
dim3 block_of(int lanes, int64_t heads) {
  const int64_t rows = std::min<int64_t>(heads, std::max(1, kBlockThreads / lanes));
  return dim3(static_cast<unsigned>(lanes), static_cast<unsigned>(rows));
}

// The persistent backward's blocks: `per_sm` per SM (at most
// kBackwardBlocksPerSm) shared over the groups in proportion to the bytes
// they move, so that all of them finish together: a q or k head reads dy and
// x and writes dx (3 vectors of a head), a v head reads dv and writes it (2).
// At least one block each and at most one per token.
BackwardSplit backward_split(int64_t tokens, int64_t heads_q, int64_t heads_k, int per_sm) {
  per_sm = std::max(1, std::min(per_sm, kBackwardBlocksPerSm));
  const int64_t budget = static_cast<int64_t>(sm_count()) * per_sm;
  const int64_t work_q = 3 * heads_q, work_k = 3 * heads_k, work_v = 2 * heads_k;
  const int64_t work = work_q + work_k + work_v;
  const auto share = [&](int64_t group_work) {
    const int64_t b = budget * group_work / work;
    return static_cast<int>(std::max<int64_t>(1, std::min(tokens, b)));
  };
  BackwardSplit s;
  s.q_blocks = share(work_q);
  s.k_blocks = share(work_k);
  s.v_blocks = share(work_v);
  return s;
}

// Launches the kernels of one vector width V.
template <int V>
struct Launch {
  template <typename T, typename W>
  static cudaError_t forward(const RopeQkvNormForward& a, cudaStream_t stream) {
    const int half = static_cast<int>(a.head_dim / 2);
    const dim3 block = block_of(half / V, a.heads_q + 2 * a.heads_k);
    // grid: one block per token; block: lanes threads per head x rows of heads
    rope_qkv_norm_forward_kernel<T, W, V>
        <<<static_cast<unsigned>(a.batch * a.seq), block, 0, stream>>>(
            static_cast<const T*>(a.qkv), static_cast<T*>(a.q), static_cast<T*>(a.k),
            static_cast<T*>(a.v), static_cast<const W*>(a.q_weight),
            static_cast<const W*>(a.k_weight), a.rstd, a.cos, a.sin, a.seq,
            static_cast<int>(a.heads_q), static_cast<int>(a.heads_k), half, a.cos_batch_stride,
            a.eps, a.offset);
    return cudaGetLastError();
  }

  template <typename T, typename W>
  static cudaError_t backward(const RopeQkvNormBackward& a, float* partials, cudaStream_t stream) {
    const int64_t tokens = a.batch * a.seq;
    const int half = static_cast<int>(a.head_dim / 2);
    const auto kernel = rope_qkv_norm_backward_kernel<T, W, V>;
    const dim3 block = block_of(half / V, std::max(a.heads_q, a.heads_k));
    const size_t smem = sizeof(float) * a.head_dim;
    // As many blocks per SM as are resident at once (registers bound it), so
    // that every block walks its share of the items in one wave.
    int resident = 0;
    const cudaError_t query = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &resident, kernel, static_cast<int>(block.x * block.y), smem);
    if (query != cudaSuccess) return query;
    const BackwardSplit split = backward_split(tokens, a.heads_q, a.heads_k, resident);
    // grid: persistent blocks, each serving one group's (token, head) items;
    // block: lanes threads per head x rows of items
    kernel<<<split.total(), block, smem, stream>>>(
        static_cast<const T*>(a.dq), static_cast<const T*>(a.dk), static_cast<const T*>(a.dv),
        static_cast<const T*>(a.qkv), static_cast<const W*>(a.q_weight),
        static_cast<const W*>(a.k_weight), a.rstd, a.cos, a.sin, static_cast<T*>(a.d_qkv), partials,
        tokens, a.seq, static_cast<int>(a.heads_q), static_cast<int>(a.heads_k), half,
        a.cos_batch_stride, a.offset, split);
    if (partials != nullptr) {
      // the partial rows summed per column, in a fixed order, stored as W
      sum_partials(partials, split.total(), 2 * a.head_dim, static_cast<W*>(a.d_weights), stream);
    }
    return cudaGetLastError();
  }
};

// Runs Launch<V>::forward or ::backward for T's vector width `vec` (one of
// the two vector_for returns for T: 8 or 16 bytes).
template <typename T, typename F>
cudaError_t dispatch_vector(int vec, F&& f) {
  constexpr int kSmall = 8 / static_cast<int>(sizeof(T));
  constexpr int kLarge = 16 / static_cast<int>(sizeof(T));
  return vec == kSmall ? f(std::integral_constant<int, kSmall>())
                       : f(std::integral_constant<int, kLarge>());
}

}  // namespace

bool rope_qkv_norm_supported(int64_t head_dim, DType dtype) {
  return vector_for(head_dim, dtype) > 0;
}

// Rows of the backward's partials: its blocks (backward_split) at most.
size_t rope_qkv_norm_workspace_floats(int64_t tokens, int64_t head_dim) {
  const int64_t budget = static_cast<int64_t>(sm_count()) * kBackwardBlocksPerSm + 3;
  return static_cast<size_t>(std::min(3 * std::max<int64_t>(tokens, 1), budget) * 2 * head_dim);
}

cudaError_t rope_qkv_norm_forward(const RopeQkvNormForward& a, cudaStream_t stream) {
  const int vec = vector_for(a.head_dim, a.x_dtype);
  const bool aligned = aligned16(a.qkv) && aligned16(a.q) && aligned16(a.k) && aligned16(a.v) &&
                       aligned16(a.q_weight) && aligned16(a.k_weight) && aligned16(a.cos) &&
                       aligned16(a.sin);
  // 32-bit token indices
  if (vec == 0 || !aligned || a.batch * a.seq >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  if (a.batch * a.seq == 0) return cudaSuccess;
  return dispatch_dtypes(a.x_dtype, a.w_dtype, [&](auto t, auto w) -> cudaError_t {
    using T = typename decltype(t)::type;
    using W = typename decltype(w)::type;
    return dispatch_vector<T>(vec, [&](auto v) -> cudaError_t {
      return Launch<decltype(v)::value>::template forward<T, W>(a, stream);
    });
  });
}

cudaError_t rope_qkv_norm_backward(const RopeQkvNormBackward& a, cudaStream_t stream) {
  const int vec = vector_for(a.head_dim, a.x_dtype);
  const bool aligned = aligned16(a.dq) && aligned16(a.dk) && aligned16(a.dv) && aligned16(a.qkv) &&
                       aligned16(a.q_weight) && aligned16(a.k_weight) && aligned16(a.cos) &&
                       aligned16(a.sin) && aligned16(a.d_qkv);
  // 32-bit item indices (tokens x heads of a group), with room for a grid stride
  const int64_t largest_group = std::max(a.heads_q, a.heads_k);
  if (vec == 0 || !aligned || a.batch * a.seq * largest_group >= (int64_t{1} << 30)) {
    return cudaErrorInvalidValue;
  }
  if (a.batch * a.seq == 0) {
    if (a.d_weights == nullptr) return cudaSuccess;
    return cudaMemsetAsync(a.d_weights, 0, dtype_size(a.w_dtype) * 2 * a.head_dim, stream);
  }
  float* partials = a.d_weights != nullptr ? a.workspace : nullptr;
  return dispatch_dtypes(a.x_dtype, a.w_dtype, [&](auto t, auto w) -> cudaError_t {
    using T = typename decltype(t)::type;
    using W = typename decltype(w)::type;
    return dispatch_vector<T>(vec, [&](auto v) -> cudaError_t {
      return Launch<decltype(v)::value>::template backward<T, W>(a, partials, stream);
    });
  });
}

}  // namespace liger::cuda_kernels
