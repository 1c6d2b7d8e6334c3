// Rotary position embedding (HF rotate_half convention), forward and
// backward, for q and k in one launch, or for a packed q|k|v projection
// (one GEMM's output) that is split, rotated and copied in the same launch.
//
// With h = D/2, c = cos[b, t], s = sin[b, t] and i < h, rotate_half(x) =
// cat(-x[h:], x[:h]), so out = x c + rotate_half(x) s reads
//   out[i]     = x[i] c[i]         - x[i+h] s[i]
//   out[i+h]   = x[i+h] c[i+h]     + x[i] s[i+h]
// and the backward is its transpose (exact for any cos/sin):
//   dx[i]      = dy[i] c[i]        + dy[i+h] s[i+h]
//   dx[i+h]    = dy[i+h] c[i+h]    - dy[i] s[i]
// v's heads (packed layout only) are copied unchanged both ways.
//
// One block per token (b, t): a thread owns V elements of the first half and
// the matching V of the second, loads their cos/sin once, and walks the
// token's heads (the three groups one after the other) over threadIdx.y.
// Each group has its own input and output token strides, which is all the
// packed layout needs: its forward reads q|k|v with the packed stride and
// writes dense q, k, v; its backward reads dense dq, dk, dv and writes the
// packed gradient.
#include "kernels/cuda/common.cuh"

#include <algorithm>

namespace liger::cuda_kernels {
namespace {

// One head group as the kernel sees it (typed; nullptr in: group skipped).
template <typename T>
struct Group {
  const T* in;
  T* out;
  int64_t in_stride, out_stride;  // elements between consecutive tokens
  int heads;
  bool rotate;
};

template <typename T>
struct Groups {
  Group<T> g[3];
};

// V consecutive fp32 values (16-byte loads when V is a multiple of 4).
template <int V>
__device__ __forceinline__ void load_f32(const float* p, float (&out)[V]) {
  load<float, V>(p, out);
}

// Group `index` (0, 1 or 2) picked with constant indices: a dynamic index
// into the by-value parameter struct would copy it to local memory.
template <typename T>
__device__ __forceinline__ Group<T> group_at(const Groups<T>& groups, int index) {
  return index == 0 ? groups.g[0] : index == 1 ? groups.g[1] : groups.g[2];
}

// Forward rounds as HF does in T: cos/sin cast to T, each product rounded to
// T, then their sum. Backward: fp32, one cast at the end.
// A thread's head data is loaded before the token's cos/sin (needed only for
// rotated heads, loaded on the first one), so both loads are in flight at once.
template <typename T, int V, bool kBackward>
__global__ void __launch_bounds__(1024)
    rope_kernel(const Groups<T> groups, const float* __restrict__ cos,
                const float* __restrict__ sin, int64_t seq, int half, int64_t cos_batch_stride) {
  const int64_t token = blockIdx.x;  // b * seq + t
  const int i = threadIdx.x * V;     // blockDim.x * V == half
  using P = Pack<T, V>;

  float c1[V], c2[V], s1[V], s2[V];
  bool have_tables = false;
  const int heads0 = groups.g[0].heads, heads1 = groups.g[1].heads;
  const int total = heads0 + heads1 + groups.g[2].heads;
  for (int head = threadIdx.y; head < total; head += blockDim.y) {
    // which group, and the head within it
    const int index = head < heads0 ? 0 : head < heads0 + heads1 ? 1 : 2;
    const int local = head - (index > 0 ? heads0 : 0) - (index > 1 ? heads1 : 0);
    const Group<T> group = group_at(groups, index);
    if (group.in == nullptr) continue;
    const T* in = group.in + token * group.in_stride + local * 2 * half;
    T* out = group.out + token * group.out_stride + local * 2 * half;
    const P p1 = load_pack<T, V>(in + i), p2 = load_pack<T, V>(in + half + i);
    if (!group.rotate) {  // v: copied as it is (exact)
      *reinterpret_cast<P*>(out + i) = p1;
      *reinterpret_cast<P*>(out + half + i) = p2;
      continue;
    }
    if (!have_tables) {
      const int64_t b = token / seq, t = token % seq;
      const int64_t cs = b * cos_batch_stride + t * 2 * half;
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
      have_tables = true;
    }
    float x1[V], x2[V], y1[V], y2[V];
    unpack<T, V>(p1, x1);
    unpack<T, V>(p2, x2);
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

template <typename T>
Group<T> typed(const RopeHeads& h, bool rotate) {
  return {static_cast<const T*>(h.in),
          static_cast<T*>(h.out),
          h.in_token_stride,
          h.out_token_stride,
          h.in != nullptr ? static_cast<int>(h.heads) : 0,
          rotate};
}

// Whether group h allows V-element accesses: both pointers 16-byte aligned
// and both token strides whole vectors (head offsets are then too, given
// half % V == 0).
bool group_aligned(const RopeHeads& h, int vec) {
  return h.in == nullptr || (aligned16(h.in) && aligned16(h.out) && h.in_token_stride % vec == 0 &&
                             h.out_token_stride % vec == 0);
}

template <bool kBackward>
cudaError_t launch(const RopeQkv& a, cudaStream_t stream) {
  if (!rope_head_dim_supported(a.head_dim)) return cudaErrorInvalidValue;
  const int64_t tokens = a.batch * a.seq;
  int heads = 0;
  for (const RopeHeads* h : {&a.q, &a.k, &a.v})
    heads += h->in != nullptr ? static_cast<int>(h->heads) : 0;
  if (tokens == 0 || heads == 0) return cudaSuccess;
  const int half = static_cast<int>(a.head_dim / 2);
  return dispatch_dtype(a.dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    constexpr int kV = kVec<T>;
    const bool aligned = half % kV == 0 && aligned16(a.cos) && aligned16(a.sin) &&
                         group_aligned(a.q, kV) && group_aligned(a.k, kV) && group_aligned(a.v, kV);
    const int vec = aligned ? kV : 1;
    const int threads_x = half / vec;
    const int heads_per_block = std::min(heads, std::max(1, 512 / threads_x));
    const dim3 block(threads_x, heads_per_block);
    const auto grid = static_cast<unsigned>(tokens);
    const Groups<T> groups{{typed<T>(a.q, true), typed<T>(a.k, true), typed<T>(a.v, false)}};
    // grid: one block per token; block: half/vec threads per head x heads_per_block heads
    auto kernel = aligned ? rope_kernel<T, kV, kBackward> : rope_kernel<T, 1, kBackward>;
    kernel<<<grid, block, 0, stream>>>(groups, a.cos, a.sin, a.seq, half, a.cos_batch_stride);
    return cudaGetLastError();
  });
}

// q and k as two dense groups (the plain rope op).
RopeQkv as_groups(const Rope& a) {
  RopeQkv p;
  const int64_t d = a.head_dim;
  p.q = {a.q_in, a.q_out, a.heads_q, a.heads_q * d, a.heads_q * d};
  p.k = {a.k_in, a.k_out, a.heads_k, a.heads_k * d, a.heads_k * d};
  p.cos = a.cos;
  p.sin = a.sin;
  p.batch = a.batch;
  p.seq = a.seq;
  p.head_dim = d;
  p.cos_batch_stride = a.cos_batch_stride;
  p.dtype = a.dtype;
  return p;
}

}  // namespace

bool rope_head_dim_supported(int64_t head_dim) {
  return head_dim > 0 && head_dim % 2 == 0 && head_dim / 2 <= 1024;
}

cudaError_t rope_forward(const Rope& a, cudaStream_t stream) {
  return launch<false>(as_groups(a), stream);
}
cudaError_t rope_backward(const Rope& a, cudaStream_t stream) {
  return launch<true>(as_groups(a), stream);
}

cudaError_t rope_qkv_forward(const RopeQkv& a, cudaStream_t stream) {
  return launch<false>(a, stream);
}
cudaError_t rope_qkv_backward(const RopeQkv& a, cudaStream_t stream) {
  return launch<true>(a, stream);
}

}  // namespace liger::cuda_kernels
