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
// matching V of the second; a block walks heads over threadIdx.y. Forward:
// one block per token. Backward: persistent blocks walk the tokens, each
// thread summing dw for its columns in registers; each block then stores one
// partial row and sum_partials adds the rows in a fixed order.
#include "kernels/cuda/common.cuh"

#include <algorithm>

namespace liger::cuda_kernels {
namespace {

// Blocks per SM of the persistent backward (and so the partial rows of dw).
constexpr int kBackwardBlocksPerSm = 4;
// Threads of a block: up to this many, whole heads.
constexpr int kBlockThreads = 512;

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
  const int64_t b = token / seq, t = token % seq;
  const int64_t cs = b * cos_batch_stride + t * 2 * half;
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

  float c1[V], c2[V], s1[V], s2[V];
  load_tables<V>(cos, sin, token, seq, half, cos_batch_stride, i, c1, c2, s1, s2);
#pragma unroll
  for (int j = 0; j < V; ++j) {  // cast: cos/sin to T, as HF does
    c1[j] = round_to<T>(c1[j]);
    c2[j] = round_to<T>(c2[j]);
    s1[j] = round_to<T>(s1[j]);
    s2[j] = round_to<T>(s2[j]);
  }

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
    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < V; ++j) ss += x1[j] * x1[j] + x2[j] * x2[j];
    ss = head_sum(ss, blockDim.x);
    const float r = rsqrtf(ss / d + eps);
    if (threadIdx.x == 0) rstd_out[token * normed + head] = r;

    const bool is_q = head < heads_q;
    const W* weight = is_q ? q_weight : k_weight;
    float w1[V], w2[V];
    load<W, V>(weight + i, w1);
    load<W, V>(weight + half + i, w2);
    float u1[V], u2[V], y1[V], y2[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      // cast: x r to T (the normalised value), w + offset in W, their product to T
      u1[j] = round_to<T>(round_to<T>(x1[j] * r) * round_to<W>(w1[j] + offset));
      u2[j] = round_to<T>(round_to<T>(x2[j] * r) * round_to<W>(w2[j] + offset));
      // cast: each product of the rotation to T, then the sum (stored as T)
      y1[j] = round_to<T>(u1[j] * c1[j]) - round_to<T>(u2[j] * s1[j]);
      y2[j] = round_to<T>(u2[j] * c2[j]) + round_to<T>(u1[j] * s2[j]);
    }
    T* out = is_q ? q_out + (token * heads_q + head) * d
                  : k_out + (token * heads_k + head - heads_q) * d;
    store<T, V>(out + i, y1);
    store<T, V>(out + half + i, y2);
  }
}

template <typename T, typename W, int V>
__global__ void __launch_bounds__(kBlockThreads)
    rope_qkv_norm_backward_kernel(const T* __restrict__ dq, const T* __restrict__ dk,
                                  const T* __restrict__ dv, const T* __restrict__ qkv,
                                  const W* __restrict__ q_weight, const W* __restrict__ k_weight,
                                  const float* __restrict__ rstd, const float* __restrict__ cos,
                                  const float* __restrict__ sin, T* __restrict__ d_qkv,
                                  float* __restrict__ dw_partials, int64_t tokens, int64_t seq,
                                  int heads_q, int heads_k, int half, int64_t cos_batch_stride,
                                  float offset) {
  extern __shared__ float red[];  // 2 D floats: the block's dw of q_norm, then of k_norm
  const int i = threadIdx.x * V;
  const int d = 2 * half;
  const int normed = heads_q + heads_k;
  const int heads = normed + heads_k;

  // dw of this thread's columns i.. and h + i.., for q's heads and for k's.
  float aq1[V], aq2[V], ak1[V], ak2[V];
#pragma unroll
  for (int j = 0; j < V; ++j) aq1[j] = aq2[j] = ak1[j] = ak2[j] = 0.f;

  for (int64_t token = blockIdx.x; token < tokens; token += gridDim.x) {
    T* grad_row = d_qkv + token * heads * d;
    const T* x_row = qkv + token * heads * d;
    for (int head = threadIdx.y; head < heads; head += blockDim.y) {
      float g1[V], g2[V];    // dy of this head
      if (head >= normed) {  // v: dv copied into the packed gradient
        const T* in = dv + (token * heads_k + head - normed) * d;
        load<T, V>(in + i, g1);
        load<T, V>(in + half + i, g2);
        store<T, V>(grad_row + head * d + i, g1);
        store<T, V>(grad_row + head * d + half + i, g2);
        continue;
      }
      const bool is_q = head < heads_q;
      const T* in =
          is_q ? dq + (token * heads_q + head) * d : dk + (token * heads_k + head - heads_q) * d;
      float x1[V], x2[V], w1[V], w2[V];
      load<T, V>(in + i, g1);
      load<T, V>(in + half + i, g2);
      load<T, V>(x_row + head * d + i, x1);
      load<T, V>(x_row + head * d + half + i, x2);
      const W* weight = is_q ? q_weight : k_weight;
      load<W, V>(weight + i, w1);
      load<W, V>(weight + half + i, w2);
      const float r = rstd[token * normed + head];
      // cos/sin reloaded for every head (L1 hits) rather than held in
      // registers next to the dw sums: holding them spills.
      float c1[V], c2[V], s1[V], s2[V];
      load_tables<V>(cos, sin, token, seq, half, cos_batch_stride, i, c1, c2, s1, s2);

      float du1[V], du2[V], n1[V], n2[V], dot = 0.f;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        du1[j] = g1[j] * c1[j] + g2[j] * s2[j];  // the rotation's transpose
        du2[j] = g2[j] * c2[j] - g1[j] * s1[j];
        n1[j] = x1[j] * r;
        n2[j] = x2[j] * r;
        dot += du1[j] * (w1[j] + offset) * n1[j] + du2[j] * (w2[j] + offset) * n2[j];
      }
      const float mean_gn = head_sum(dot, blockDim.x) / d;
      float dx1[V], dx2[V];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        dx1[j] = r * (du1[j] * (w1[j] + offset) - n1[j] * mean_gn);
        dx2[j] = r * (du2[j] * (w2[j] + offset) - n2[j] * mean_gn);
        if (is_q) {
          aq1[j] += du1[j] * n1[j];
          aq2[j] += du2[j] * n2[j];
        } else {
          ak1[j] += du1[j] * n1[j];
          ak2[j] += du2[j] * n2[j];
        }
      }
      store<T, V>(grad_row + head * d + i, dx1);  // cast: dx to T
      store<T, V>(grad_row + head * d + half + i, dx2);
    }
  }
  if (dw_partials == nullptr) return;  // uniform over the block

  // The block's threads added into shared memory one threadIdx.y row at a
  // time (a fixed order), then stored as this block's partial row.
  for (int j = threadIdx.y * blockDim.x + threadIdx.x; j < 2 * d; j += blockDim.x * blockDim.y) {
    red[j] = 0.f;
  }
  __syncthreads();
  for (int y = 0; y < static_cast<int>(blockDim.y); ++y) {
    if (threadIdx.y == y) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        red[i + j] += aq1[j];
        red[half + i + j] += aq2[j];
        red[d + i + j] += ak1[j];
        red[d + half + i + j] += ak2[j];
      }
    }
    __syncthreads();
  }
  float* part = dw_partials + static_cast<int64_t>(blockIdx.x) * 2 * d;
  for (int j = threadIdx.y * blockDim.x + threadIdx.x; j < 2 * d; j += blockDim.x * blockDim.y) {
    part[j] = red[j];
  }
}

// Threads per head (0: the kernel does not take this head_dim and dtype).
int lanes_for(int64_t head_dim, DType dtype) {
  const int64_t vec = 16 / static_cast<int64_t>(dtype_size(dtype));
  if (head_dim <= 0 || head_dim % (2 * vec) != 0) return 0;
  const int64_t lanes = head_dim / 2 / vec;
  const bool power_of_two = (lanes & (lanes - 1)) == 0;
  return power_of_two && lanes <= 32 ? static_cast<int>(lanes) : 0;
}

// Block shape: `lanes` threads per head, as many heads as fit kBlockThreads.
dim3 block_of(int lanes, int64_t heads) {
  const int64_t per_block = std::min<int64_t>(heads, std::max(1, kBlockThreads / lanes));
  return dim3(static_cast<unsigned>(lanes), static_cast<unsigned>(per_block));
}

// Blocks of the persistent backward: one per token up to `per_sm` per SM
// (at most kBackwardBlocksPerSm, which bounds the workspace).
int backward_blocks(int64_t tokens, int per_sm = kBackwardBlocksPerSm) {
  per_sm = std::max(1, std::min(per_sm, kBackwardBlocksPerSm));
  const int64_t most = static_cast<int64_t>(sm_count()) * per_sm;
  return static_cast<int>(std::max<int64_t>(1, std::min(tokens, most)));
}

}  // namespace

bool rope_qkv_norm_supported(int64_t head_dim, DType dtype) {
  return lanes_for(head_dim, dtype) > 0;
}

size_t rope_qkv_norm_workspace_floats(int64_t tokens, int64_t head_dim) {
  return static_cast<size_t>(backward_blocks(tokens)) * 2 * head_dim;
}

cudaError_t rope_qkv_norm_forward(const RopeQkvNormForward& a, cudaStream_t stream) {
  const int lanes = lanes_for(a.head_dim, a.x_dtype);
  const bool aligned = aligned16(a.qkv) && aligned16(a.q) && aligned16(a.k) && aligned16(a.v) &&
                       aligned16(a.q_weight) && aligned16(a.k_weight) && aligned16(a.cos) &&
                       aligned16(a.sin);
  if (lanes == 0 || !aligned) return cudaErrorInvalidValue;
  const int64_t tokens = a.batch * a.seq;
  if (tokens == 0) return cudaSuccess;
  const int half = static_cast<int>(a.head_dim / 2);
  return dispatch_dtypes(a.x_dtype, a.w_dtype, [&](auto t, auto w) -> cudaError_t {
    using T = typename decltype(t)::type;
    using W = typename decltype(w)::type;
    const auto kernel = rope_qkv_norm_forward_kernel<T, W, kVec<T>>;
    const dim3 block = block_of(lanes, a.heads_q + 2 * a.heads_k);
    // grid: one block per token; block: lanes threads per head x heads
    kernel<<<static_cast<unsigned>(tokens), block, 0, stream>>>(
        static_cast<const T*>(a.qkv), static_cast<T*>(a.q), static_cast<T*>(a.k),
        static_cast<T*>(a.v), static_cast<const W*>(a.q_weight), static_cast<const W*>(a.k_weight),
        a.rstd, a.cos, a.sin, a.seq, static_cast<int>(a.heads_q), static_cast<int>(a.heads_k), half,
        a.cos_batch_stride, a.eps, a.offset);
    return cudaGetLastError();
  });
}

cudaError_t rope_qkv_norm_backward(const RopeQkvNormBackward& a, cudaStream_t stream) {
  const int lanes = lanes_for(a.head_dim, a.x_dtype);
  const bool aligned = aligned16(a.dq) && aligned16(a.dk) && aligned16(a.dv) && aligned16(a.qkv) &&
                       aligned16(a.q_weight) && aligned16(a.k_weight) && aligned16(a.cos) &&
                       aligned16(a.sin) && aligned16(a.d_qkv);
  if (lanes == 0 || !aligned) return cudaErrorInvalidValue;
  const int64_t tokens = a.batch * a.seq;
  if (tokens == 0) {
    if (a.d_weights == nullptr) return cudaSuccess;
    return cudaMemsetAsync(a.d_weights, 0, dtype_size(a.w_dtype) * 2 * a.head_dim, stream);
  }
  const int half = static_cast<int>(a.head_dim / 2);
  float* partials = a.d_weights != nullptr ? a.workspace : nullptr;
  return dispatch_dtypes(a.x_dtype, a.w_dtype, [&](auto t, auto w) -> cudaError_t {
    using T = typename decltype(t)::type;
    using W = typename decltype(w)::type;
    const auto kernel = rope_qkv_norm_backward_kernel<T, W, kVec<T>>;
    const dim3 block = block_of(lanes, a.heads_q + 2 * a.heads_k);
    const size_t smem = sizeof(float) * 2 * a.head_dim;
    // As many blocks per SM as are resident at once (registers bound it), so
    // that every block walks its share of the tokens in one wave.
    int resident = 0;
    const cudaError_t query = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &resident, kernel, static_cast<int>(block.x * block.y), smem);
    if (query != cudaSuccess) return query;
    const int blocks = backward_blocks(tokens, resident);
    // grid: persistent, at most kBackwardBlocksPerSm blocks per SM walking the
    // tokens; block: lanes threads per head x heads
    kernel<<<blocks, block, smem, stream>>>(
        static_cast<const T*>(a.dq), static_cast<const T*>(a.dk), static_cast<const T*>(a.dv),
        static_cast<const T*>(a.qkv), static_cast<const W*>(a.q_weight),
        static_cast<const W*>(a.k_weight), a.rstd, a.cos, a.sin, static_cast<T*>(a.d_qkv), partials,
        tokens, a.seq, static_cast<int>(a.heads_q), static_cast<int>(a.heads_k), half,
        a.cos_batch_stride, a.offset);
    if (partials != nullptr) {
      // the partial rows summed per column, in a fixed order, stored as W
      sum_partials(partials, blocks, 2 * a.head_dim, static_cast<W*>(a.d_weights), stream);
    }
    return cudaGetLastError();
  });
}

}  // namespace liger::cuda_kernels
