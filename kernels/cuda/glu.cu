// Gated activations: swiglu = silu(gate) * up and geglu = gelu_tanh(gate) *
// up, forward and backward. Elementwise over flat arrays: each thread moves
// kUnroll vectors of V elements (16-byte accesses when every pointer is
// aligned), a block strides them by blockDim.x so a warp's accesses are
// contiguous; the first block also takes the n % V tail.
#include "kernels/cuda/common.cuh"

namespace liger::cuda_kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 2;

constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

// silu(g)  = g s,  s = sigmoid(g)            silu'(g) = s (1 + g (1 - s))
// gelu(g)  = 0.5 g (1 + t),  t = tanh(K (g + A g^3))
// gelu'(g) = 0.5 (1 + t) + 0.5 g (1 - t^2) K (1 + 3 A g^2)
template <GluActivation A>
__device__ __forceinline__ float activation(float g) {
  if constexpr (A == GluActivation::silu) {
    return g / (1.f + expf(-g));
  } else {
    return 0.5f * g * (1.f + tanhf(kGeluK * (g + kGeluA * g * g * g)));
  }
}

template <GluActivation A>
__device__ __forceinline__ void activation_and_grad(float g, float& act, float& dact) {
  if constexpr (A == GluActivation::silu) {
    const float s = 1.f / (1.f + expf(-g));
    act = g * s;
    dact = s * (1.f + g * (1.f - s));
  } else {
    const float t = tanhf(kGeluK * (g + kGeluA * g * g * g));
    act = 0.5f * g * (1.f + t);
    dact = 0.5f * (1.f + t) + 0.5f * g * (1.f - t * t) * kGeluK * (1.f + 3.f * kGeluA * g * g);
  }
}

// Forward: y = T( T(act(gate)) * up ): the activation is rounded to T before
// the product, as ATen's act(gate) * up does.
template <GluActivation A, typename T, int V>
__device__ __forceinline__ void glu_forward_at(const T* gate, const T* up, T* y, int64_t at) {
  float g[V], u[V], out[V];
  load<T, V>(gate + at, g);
  load<T, V>(up + at, u);
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = round_to<T>(activation<A>(g[i])) * u[i];
  store<T, V>(y + at, out);
}

template <GluActivation A, typename T, int V>
__global__ void __launch_bounds__(kThreads)
    glu_forward_kernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ y,
                       int64_t n) {
  const int64_t nvec = n / V;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads * kUnroll + threadIdx.x;
  Pack<T, V> g[kUnroll], u[kUnroll];
#pragma unroll
  for (int k = 0; k < kUnroll; ++k) {  // every load in flight before the math
    const int64_t v = first + k * kThreads;
    if (v < nvec) {
      g[k] = load_pack<T, V>(gate + v * V);
      u[k] = load_pack<T, V>(up + v * V);
    }
  }
#pragma unroll
  for (int k = 0; k < kUnroll; ++k) {
    const int64_t v = first + k * kThreads;
    if (v >= nvec) continue;
    float out[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      out[i] = round_to<T>(activation<A>(to_float(g[k].v[i]))) * to_float(u[k].v[i]);
    }
    store<T, V>(y + v * V, out);
  }
  if (blockIdx.x == 0 && threadIdx.x < n - nvec * V) {
    glu_forward_at<A, T, 1>(gate, up, y, nvec * V + threadIdx.x);
  }
}

// Backward (fp32, one cast each):  d_up = dy act(gate),  d_gate = dy up act'(gate).
// With kRecompute also y = T( T(act(gate)) * up ), the forward's product, by
// the forward's own expression (so it is bitwise the same).
// d_gate/d_up may alias gate/up (no __restrict__): every element is loaded
// before any is stored. A nullptr output is skipped.
template <GluActivation A, typename T, int V, bool kRecompute>
__device__ __forceinline__ void glu_backward_math(const Pack<T, V>& dy, const Pack<T, V>& g,
                                                  const Pack<T, V>& u, float (&dg)[V],
                                                  float (&du)[V], float (&y)[V]) {
#pragma unroll
  for (int i = 0; i < V; ++i) {
    float act, dact;
    const float gi = to_float(g.v[i]), ui = to_float(u.v[i]);
    activation_and_grad<A>(gi, act, dact);
    const float d = to_float(dy.v[i]);
    du[i] = d * act;
    dg[i] = d * ui * dact;
    if (kRecompute) y[i] = round_to<T>(activation<A>(gi)) * ui;
  }
}

template <GluActivation A, typename T, int V, bool kRecompute>
__global__ void __launch_bounds__(kThreads)
    glu_backward_kernel(const T* __restrict__ dy, const T* gate, const T* up, T* d_gate, T* d_up,
                        T* __restrict__ y, int64_t n) {
  const int64_t nvec = n / V;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads * kUnroll + threadIdx.x;
  Pack<T, V> d[kUnroll], g[kUnroll], u[kUnroll];
#pragma unroll
  for (int k = 0; k < kUnroll; ++k) {
    const int64_t v = first + k * kThreads;
    if (v < nvec) {
      d[k] = load_pack<T, V>(dy + v * V);
      g[k] = load_pack<T, V>(gate + v * V);
      u[k] = load_pack<T, V>(up + v * V);
    }
  }
#pragma unroll
  for (int k = 0; k < kUnroll; ++k) {
    const int64_t v = first + k * kThreads;
    if (v >= nvec) continue;
    float dg[V], du[V], out[V];
    glu_backward_math<A, T, V, kRecompute>(d[k], g[k], u[k], dg, du, out);
    if (d_gate != nullptr) store<T, V>(d_gate + v * V, dg);
    if (d_up != nullptr) store<T, V>(d_up + v * V, du);
    if (kRecompute) store<T, V>(y + v * V, out);
  }
  if (blockIdx.x == 0 && threadIdx.x < n - nvec * V) {
    const int64_t at = nvec * V + threadIdx.x;
    const Pack<T, 1> d1 = load_pack<T, 1>(dy + at), g1 = load_pack<T, 1>(gate + at),
                     u1 = load_pack<T, 1>(up + at);
    float dg[1], du[1], out[1];
    glu_backward_math<A, T, 1, kRecompute>(d1, g1, u1, dg, du, out);
    if (d_gate != nullptr) store<T, 1>(d_gate + at, dg);
    if (d_up != nullptr) store<T, 1>(d_up + at, du);
    if (kRecompute) store<T, 1>(y + at, out);
  }
}

unsigned glu_blocks(int64_t n, int vec) {
  const int64_t per_block = static_cast<int64_t>(kThreads) * kUnroll;
  const int64_t blocks = (n / vec + per_block - 1) / per_block;
  return static_cast<unsigned>(blocks > 0 ? blocks : 1);
}

// Calls f(Tag<T>{}, activation constant) for the dtype and activation.
template <typename F>
cudaError_t dispatch(DType dtype, GluActivation activation, F&& f) {
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    if (activation == GluActivation::silu) {
      return f(tag, std::integral_constant<GluActivation, GluActivation::silu>{});
    }
    return f(tag, std::integral_constant<GluActivation, GluActivation::gelu_tanh>{});
  });
}

}  // namespace

cudaError_t glu_forward(const GluForward& a, cudaStream_t stream) {
  if (a.n == 0) return cudaSuccess;
  return dispatch(a.dtype, a.activation, [&](auto tag, auto act) -> cudaError_t {
    using T = typename decltype(tag)::type;
    constexpr GluActivation A = decltype(act)::value;
    const bool aligned = aligned16(a.gate) && aligned16(a.up) && aligned16(a.y);
    const int vec = aligned ? kVec<T> : 1;
    auto kernel = aligned ? glu_forward_kernel<A, T, kVec<T>> : glu_forward_kernel<A, T, 1>;
    // grid: kThreads * kUnroll vectors of `vec` elements per block; block: kThreads
    kernel<<<glu_blocks(a.n, vec), kThreads, 0, stream>>>(
        static_cast<const T*>(a.gate), static_cast<const T*>(a.up), static_cast<T*>(a.y), a.n);
    return cudaGetLastError();
  });
}

cudaError_t glu_backward(const GluBackward& a, cudaStream_t stream) {
  if (a.n == 0 || (a.d_gate == nullptr && a.d_up == nullptr && a.y == nullptr)) return cudaSuccess;
  return dispatch(a.dtype, a.activation, [&](auto tag, auto act) -> cudaError_t {
    using T = typename decltype(tag)::type;
    constexpr GluActivation A = decltype(act)::value;
    const bool aligned = aligned16(a.dy) && aligned16(a.gate) && aligned16(a.up) &&
                         (a.d_gate == nullptr || aligned16(a.d_gate)) &&
                         (a.d_up == nullptr || aligned16(a.d_up)) &&
                         (a.y == nullptr || aligned16(a.y));
    const int vec = aligned ? kVec<T> : 1;
    const bool recompute = a.y != nullptr;
    auto kernel = recompute ? (aligned ? glu_backward_kernel<A, T, kVec<T>, true>
                                       : glu_backward_kernel<A, T, 1, true>)
                            : (aligned ? glu_backward_kernel<A, T, kVec<T>, false>
                                       : glu_backward_kernel<A, T, 1, false>);
    // grid: kThreads * kUnroll vectors of `vec` elements per block; block: kThreads
    kernel<<<glu_blocks(a.n, vec), kThreads, 0, stream>>>(
        static_cast<const T*>(a.dy), static_cast<const T*>(a.gate), static_cast<const T*>(a.up),
        static_cast<T*>(a.d_gate), static_cast<T*>(a.d_up), static_cast<T*>(a.y), a.n);
    return cudaGetLastError();
  });
}

}  // namespace liger::cuda_kernels
