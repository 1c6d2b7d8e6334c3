// Rotary position embedding (HF rotate_half convention), q and k in one
// launch, forward and backward.
//
// With h = D/2, c = cos[b, t], s = sin[b, t] and i < h, rotate_half(x) =
// cat(-x[h:], x[:h]), so out = x c + rotate_half(x) s reads
//   out[i]     = x[i] c[i]         - x[i+h] s[i]
//   out[i+h]   = x[i+h] c[i+h]     + x[i] s[i+h]
// and the backward is its transpose (exact for any cos/sin):
//   dx[i]      = dy[i] c[i]        + dy[i+h] s[i+h]
//   dx[i+h]    = dy[i+h] c[i+h]    - dy[i] s[i]
//
// One block per token (b, t): a thread owns V elements of the first half and
// the matching V of the second, loads their cos/sin once, and walks the
// token's heads (q's, then k's) over threadIdx.y.
#include "kernels/cuda/common.cuh"

#include <algorithm>

namespace liger::cuda_kernels {
namespace {

// V consecutive fp32 values (16-byte loads when V is a multiple of 4).
template <int V>
__device__ __forceinline__ void load_f32(const float* p, float (&out)[V]) {
  load<float, V>(p, out);
}

// Forward rounds as HF does in T: cos/sin cast to T, each product rounded to
// T, then their sum. Backward: fp32, one cast at the end.
template <typename T, int V, bool kBackward>
__global__ void __launch_bounds__(1024) rope_kernel(const T* q_in, T* q_out, const T* k_in,
                                                   T* k_out, const float* __restrict__ cos,
                                                   const float* __restrict__ sin, int64_t seq,
                                                   int heads_q, int heads_k, int half,
                                                   int64_t cos_batch_stride) {
  const int64_t token = blockIdx.x;  // b * seq + t
  const int64_t b = token / seq, t = token % seq;
  const int64_t cs = b * cos_batch_stride + t * 2 * half;
  const int i = threadIdx.x * V;  // blockDim.x * V == half

  float c1[V], c2[V], s1[V], s2[V];
  load_f32<V>(cos + cs + i, c1);
  load_f32<V>(cos + cs + half + i, c2);
  load_f32<V>(sin + cs + i, s1);
  load_f32<V>(sin + cs + half + i, s2);
  if (!kBackward) {
#pragma unroll
    for (int j = 0; j < V; ++j) {  // cast: cos/sin to T, as HF does
      c1[j] = round_to<T>(c1[j]);
      c2[j] = round_to<T>(c2[j]);
      s1[j] = round_to<T>(s1[j]);
      s2[j] = round_to<T>(s2[j]);
    }
  }

  const int head_begin = q_in != nullptr ? 0 : heads_q;
  const int head_end = heads_q + (k_in != nullptr ? heads_k : 0);
  for (int head = head_begin + threadIdx.y; head < head_end; head += blockDim.y) {
    const T* in;
    T* out;
    if (head < heads_q) {
      const int64_t offset = (token * heads_q + head) * 2 * half;
      in = q_in + offset;
      out = q_out + offset;
    } else {
      const int64_t offset = (token * heads_k + (head - heads_q)) * 2 * half;
      in = k_in + offset;
      out = k_out + offset;
    }
    float x1[V], x2[V], y1[V], y2[V];
    load<T, V>(in + i, x1);
    load<T, V>(in + half + i, x2);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if (kBackward) {
        y1[j] = x1[j] * c1[j] + x2[j] * s2[j];
        y2[j] = x2[j] * c2[j] - x1[j] * s1[j];
      } else {  // cast: each product to T, then the sum (stored as T)
        y1[j] = round_to<T>(x1[j] * c1[j]) - round_to<T>(x2[j] * s1[j]);
        y2[j] = round_to<T>(x2[j] * c2[j]) + round_to<T>(x1[j] * s2[j]);
      }
    }
    store<T, V>(out + i, y1);
    store<T, V>(out + half + i, y2);
  }
}

template <bool kBackward>
cudaError_t launch(const Rope& a, cudaStream_t stream) {
  if (!rope_head_dim_supported(a.head_dim)) return cudaErrorInvalidValue;
  const int64_t tokens = a.batch * a.seq;
  const int heads = static_cast<int>((a.q_in != nullptr ? a.heads_q : 0) +
                                     (a.k_in != nullptr ? a.heads_k : 0));
  if (tokens == 0 || heads == 0) return cudaSuccess;
  const int half = static_cast<int>(a.head_dim / 2);
  return dispatch_dtype(a.dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    constexpr int kV = kVec<T>;
    const bool aligned = half % kV == 0 && aligned16(a.cos) && aligned16(a.sin) &&
                         (a.q_in == nullptr || (aligned16(a.q_in) && aligned16(a.q_out))) &&
                         (a.k_in == nullptr || (aligned16(a.k_in) && aligned16(a.k_out)));
    const int vec = aligned ? kV : 1;
    const int threads_x = half / vec;
    const int heads_per_block = std::min(heads, std::max(1, 512 / threads_x));
    const dim3 block(threads_x, heads_per_block);
    const auto grid = static_cast<unsigned>(tokens);
    // grid: one block per token; block: half/vec threads per head x heads_per_block heads
    auto kernel = aligned ? rope_kernel<T, kV, kBackward> : rope_kernel<T, 1, kBackward>;
    kernel<<<grid, block, 0, stream>>>(
        static_cast<const T*>(a.q_in), static_cast<T*>(a.q_out), static_cast<const T*>(a.k_in),
        static_cast<T*>(a.k_out), a.cos, a.sin, a.seq, static_cast<int>(a.heads_q),
        static_cast<int>(a.heads_k), half, a.cos_batch_stride);
    return cudaGetLastError();
  });
}

}  // namespace

bool rope_head_dim_supported(int64_t head_dim) {
  return head_dim > 0 && head_dim % 2 == 0 && head_dim / 2 <= 1024;
}

cudaError_t rope_forward(const Rope& a, cudaStream_t stream) { return launch<false>(a, stream); }
cudaError_t rope_backward(const Rope& a, cudaStream_t stream) { return launch<true>(a, stream); }

}  // namespace liger::cuda_kernels
