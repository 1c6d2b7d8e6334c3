// AdamW, one step over one flat tensor, in place, with optional stochastic
// rounding of bf16 parameters. Elementwise: each thread moves kUnroll vectors
// of V elements (16-byte accesses of the parameter dtype P when every pointer
// is aligned; an fp32 gradient then takes two), a block strides them by
// blockDim.x so a warp's accesses are contiguous; the first block also takes
// the n % V tail. Memory bound: 3 reads and 3 writes of P, one read of G,
// and with a compute copy (fp32 master weights, bf16/fp16 compute) one write
// of C: the new value cast to nearest, so the forward needs no cast pass.
//
// The table launch (adamw_step_table) runs the same per-block work over many
// tensors: tensor k owns the blocks [first_chunk[k], first_chunk[k + 1]) of
// the grid, as many as its own launch would have (a chunk: kThreads * kUnroll
// vectors), so every block works inside one tensor, at the same flat indices
// and with the same per-element math and random bits as the per-tensor
// kernel: the results are equal bit for bit.
#include "kernels/cuda/common.cuh"

#include <type_traits>

namespace liger::cuda_kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 2;

// C when the update writes no compute copy.
struct NoCopy {};

struct Scalars {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
  float decay, step_size, inv_bias_correction2_sqrt;
  uint32_t key_lo, key_hi;
};

// ---------------------------------------------------------------------------
// Random bits: a counter-based hash, no state. Element i of a tensor gets
//   bits(i) = mix(mix(lo32(i) ^ key_lo) ^ hi32(i) ^ key_hi)
//   mix(x):  x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16
// (mod 2^32; the multipliers are the "lowbias32" pair found by Chris Wellons'
// hash-prospector: a bijection with low avalanche bias). The key mixes seed,
// tensor and step on the host (kernels/optim.cpp), so the bits differ per
// element, tensor and step and repeat exactly for the same seed. The top 16
// bits are used. kernels/optim.cpp computes the same function with ATen ops.
// ---------------------------------------------------------------------------

__device__ __forceinline__ uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

__device__ __forceinline__ uint32_t random_bits(int64_t i, uint32_t key_lo, uint32_t key_hi) {
  const auto u = static_cast<uint64_t>(i);
  return mix32(mix32(static_cast<uint32_t>(u) ^ key_lo) ^ static_cast<uint32_t>(u >> 32) ^ key_hi);
}

// Stochastic rounding of x to bf16 with 16 random bits r (uniform in [0, 2^16)).
// bf16 is the top half of x's fp32 pattern; let `low` be the bottom 16 bits.
// Truncating x + r carries into the kept half exactly when r >= 2^16 - low,
// i.e. with probability low / 2^16: the distance from the truncated value to x
// in units of the bf16 spacing. So x rounds to its upper neighbour (in
// magnitude: the pattern is sign-magnitude, negative values round the same
// way) with probability equal to the fractional distance, and E[round(x)] = x.
// A carry across a binade lands on the next binade's first value (the true
// neighbour); past the largest finite bf16 it gives inf. NaN stays NaN.
__device__ __forceinline__ __nv_bfloat16 stochastic_bf16(float x, uint32_t r) {
  if (isnan(x)) return __float2bfloat16_rn(x);
  const uint32_t bits = (__float_as_uint(x) + (r >> 16)) & 0xffff0000u;
  return __ushort_as_bfloat16(static_cast<unsigned short>(bits >> 16));
}

// The AdamW update of torch.optim.AdamW (decoupled decay, bias correction),
// per element, all fp32 (g, m, v, p cast up from G and P on load), t = step,
// g first multiplied by the device-side gradient scale (clipping) if any:
//   m = beta1 m + (1 - beta1) g
//   v = beta2 v + (1 - beta2) g^2
//   p = p (1 - lr wd)                                   decay on the old value
//   p = p - step_size m / (sqrt(v) / sqrt(1 - beta2^t) + eps),  step_size = lr / (1 - beta1^t)
// Stored: m and v cast to P to nearest (the updated p uses them unrounded, as
// ATen's fused kernel); p cast to P to nearest, or for bf16 with stochastic
// rounding rounded by stochastic_bf16 with the bits of its flat index.
// m and v are rounded in the order of the ATen path of kernels/optim.cpp
// (each tensor op rounds its result; a + alpha * b is one fused multiply-add),
// with explicit intrinsics so the compiler cannot contract them differently:
// with 16-bit states an exact tie between two representable values is common
// (m = 0.9 m + 0.1 g of bf16 inputs), and a last-bit difference would round it
// the other way. The parameter update uses a reciprocal multiply and the fast
// division (within two fp32 ulps): IEEE division would make this memory-bound
// kernel compute-bound.
template <int V>
__device__ __forceinline__ void adamw_math(float (&p)[V], float (&m)[V], float (&v)[V],
                                           const float (&g)[V], const Scalars& s) {
#pragma unroll
  for (int i = 0; i < V; ++i) {
    m[i] =
        __fmaf_rn(s.one_minus_beta1, g[i], __fmul_rn(s.beta1, m[i]));  // m.mul(b1).add_(g, 1 - b1)
    v[i] = __fmaf_rn(__fmul_rn(s.one_minus_beta2, g[i]), g[i],
                     __fmul_rn(s.beta2, v[i]));  // v.mul(b2).addcmul_(g, g, 1 - b2)
    const float denom = __fmaf_rn(sqrtf(v[i]), s.inv_bias_correction2_sqrt, s.eps);
    p[i] = __fmaf_rn(-s.step_size, __fdividef(m[i], denom), __fmul_rn(p[i], s.decay));
  }
}

// Stores V new parameter values at flat index `at`.
template <typename P, int V, bool kStochastic>
__device__ __forceinline__ void store_param(P* param, int64_t at, const float (&p)[V],
                                            const Scalars& s) {
  if constexpr (kStochastic) {
    static_assert(std::is_same<P, __nv_bfloat16>::value, "stochastic rounding is bf16 only");
    Pack<P, V> pk;
#pragma unroll
    for (int i = 0; i < V; ++i)
      pk.v[i] = stochastic_bf16(p[i], random_bits(at + i, s.key_lo, s.key_hi));
    *reinterpret_cast<Pack<P, V>*>(param + at) = pk;
  } else {
    store<P, V>(param + at, p);  // cast: fp32 to P, to nearest
  }
}

// Stores V new values into the compute copy (cast: fp32 to C, to nearest), if any.
template <typename C, int V>
__device__ __forceinline__ void store_copy(C* copy, int64_t at, const float (&p)[V]) {
  if constexpr (!std::is_same<C, NoCopy>::value) store<C, V>(copy + at, p);
}

template <typename P, typename G, typename C, int V, bool kStochastic>
__device__ __forceinline__ void adamw_at(P* param, const G* grad, P* exp_avg, P* exp_avg_sq,
                                         C* copy, int64_t at, const Scalars& s, float grad_scale) {
  float p[V], g[V], m[V], v[V];
  load<P, V>(param + at, p);
  load<G, V>(grad + at, g);
  load<P, V>(exp_avg + at, m);
  load<P, V>(exp_avg_sq + at, v);
#pragma unroll
  for (int i = 0; i < V; ++i) g[i] = __fmul_rn(g[i], grad_scale);
  adamw_math<V>(p, m, v, g, s);
  store<P, V>(exp_avg + at, m);     // cast: fp32 to P, to nearest
  store<P, V>(exp_avg_sq + at, v);  // cast: fp32 to P, to nearest
  store_param<P, V, kStochastic>(param, at, p, s);
  store_copy<C, V>(copy, at, p);
}

// One block's share of a tensor: vectors [block * kThreads * kUnroll, + kThreads
// * kUnroll) of its n / V whole vectors, and with block 0 the n % V tail.
template <typename P, typename G, typename C, int V, bool kStochastic>
__device__ __forceinline__ void adamw_block(P* __restrict__ param, const G* __restrict__ grad,
                                            P* __restrict__ exp_avg, P* __restrict__ exp_avg_sq,
                                            C* __restrict__ copy, int64_t n, int64_t block,
                                            const Scalars& s, float grad_scale) {
  const int64_t nvec = n / V;
  const int64_t first = block * kThreads * kUnroll + threadIdx.x;
  // Raw 16-byte vectors (4 registers each) for every load in flight; they are
  // widened to fp32 one unroll step at a time, which keeps the registers, and
  // so the resident threads and the bytes in flight, up.
  constexpr int kStepG = V * sizeof(G) > 16 ? 16 / sizeof(G) : V;
  using PP = Pack<P, V>;
  using GP = Pack<G, kStepG>;
  PP pr[kUnroll], mr[kUnroll], vr[kUnroll];
  GP gr[kUnroll][V / kStepG];
#pragma unroll
  for (int k = 0; k < kUnroll; ++k) {  // every load in flight before the math
    const int64_t at = (first + k * kThreads) * V;
    if (at < nvec * V) {
      pr[k] = load_pack<P, V>(param + at);
#pragma unroll
      for (int j = 0; j < V / kStepG; ++j) gr[k][j] = load_pack<G, kStepG>(grad + at + j * kStepG);
      mr[k] = load_pack<P, V>(exp_avg + at);
      vr[k] = load_pack<P, V>(exp_avg_sq + at);
    }
  }
#pragma unroll
  for (int k = 0; k < kUnroll; ++k) {
    const int64_t at = (first + k * kThreads) * V;
    if (at >= nvec * V) continue;
    float p[V], g[V], m[V], v[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      p[i] = to_float(pr[k].v[i]);
      g[i] = __fmul_rn(to_float(gr[k][i / kStepG].v[i % kStepG]), grad_scale);
      m[i] = to_float(mr[k].v[i]);
      v[i] = to_float(vr[k].v[i]);
    }
    adamw_math<V>(p, m, v, g, s);
    store<P, V>(exp_avg + at, m);     // cast: fp32 to P, to nearest
    store<P, V>(exp_avg_sq + at, v);  // cast: fp32 to P, to nearest
    store_param<P, V, kStochastic>(param, at, p, s);
    store_copy<C, V>(copy, at, p);
  }
  if (block == 0 && threadIdx.x < n - nvec * V) {
    adamw_at<P, G, C, 1, kStochastic>(param, grad, exp_avg, exp_avg_sq, copy,
                                      nvec * V + threadIdx.x, s, grad_scale);
  }
}

// Blocks (chunks of kThreads * kUnroll vectors of V) that one tensor of n
// elements takes; at least one (the tail).
inline int64_t blocks_for(int64_t n, int vec) {
  const int64_t per_block = static_cast<int64_t>(kThreads) * kUnroll;
  const int64_t blocks = (n / vec + per_block - 1) / per_block;
  return blocks > 0 ? blocks : 1;
}

template <typename P, typename G, typename C, int V, bool kStochastic>
__global__ void __launch_bounds__(kThreads, 4)
    adamw_kernel(P* __restrict__ param, const G* __restrict__ grad, P* __restrict__ exp_avg,
                 P* __restrict__ exp_avg_sq, C* __restrict__ copy, int64_t n, Scalars s,
                 const float* __restrict__ scale_ptr,
                 const kernels::AdamWStepValues* __restrict__ step_values) {
  if (step_values != nullptr) {  // this step's values from device memory (a graph replay's launch)
    const kernels::AdamWStepValues v = *step_values;
    s.decay = v.decay;
    s.step_size = v.step_size;
    s.inv_bias_correction2_sqrt = v.inv_bias_correction2_sqrt;
    s.key_lo = v.key_lo;
    s.key_hi = v.key_hi;
  }
  const float grad_scale = scale_ptr != nullptr ? *scale_ptr : 1.f;
  adamw_block<P, G, C, V, kStochastic>(param, grad, exp_avg, exp_avg_sq, copy, n, blockIdx.x, s,
                                       grad_scale);
}

// The table launch's arguments: the caller's tensors, the first block of
// each, and the shared scalars in fp32.
struct TableArgs {
  AdamWTableTensor tensors[kAdamWTableTensors];
  int64_t first_chunk[kAdamWTableTensors];
  float beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
  int count;
  const float* grad_scale;
};

// Many tensors, one launch: block b finds its tensor k (the last with
// first_chunk[k] <= b; an empty tensor owns no block) by binary search over
// the table, then does what block b - first_chunk[k] of that tensor's own
// launch would. Per element, in fp32, the update of adamw_math (see there):
//   m = beta1 m + (1 - beta1) g,  v = beta2 v + (1 - beta2) g^2,  g = grad_scale * grad
//   p = p decay - step_size m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// with tensor k's decay, step_size, 1 / sqrt(1 - beta2^t) and key from the
// table, or from its step_values in device memory. The table is a
// __grid_constant__ argument: read in place (the constant bank), not copied.
template <typename P, typename G, typename C, int V, bool kStochastic>
__global__ void __launch_bounds__(kThreads, 4)
    adamw_table_kernel(const __grid_constant__ TableArgs t) {
  const int64_t b = blockIdx.x;
  int lo = 0, hi = t.count - 1;
  while (lo < hi) {  // uniform over the block
    const int mid = (lo + hi + 1) / 2;
    if (t.first_chunk[mid] <= b) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const AdamWTableTensor& e = t.tensors[lo];
  const kernels::AdamWStepValues v = e.step_values != nullptr ? *e.step_values : e.values;
  Scalars s;
  s.beta1 = t.beta1;
  s.one_minus_beta1 = t.one_minus_beta1;
  s.beta2 = t.beta2;
  s.one_minus_beta2 = t.one_minus_beta2;
  s.eps = t.eps;
  s.decay = v.decay;
  s.step_size = v.step_size;
  s.inv_bias_correction2_sqrt = v.inv_bias_correction2_sqrt;
  s.key_lo = v.key_lo;
  s.key_hi = v.key_hi;
  const float grad_scale = t.grad_scale != nullptr ? *t.grad_scale : 1.f;
  adamw_block<P, G, C, V, kStochastic>(static_cast<P*>(e.param), static_cast<const G*>(e.grad),
                                       static_cast<P*>(e.exp_avg), static_cast<P*>(e.exp_avg_sq),
                                       static_cast<C*>(e.compute_copy), e.n, b - t.first_chunk[lo],
                                       s, grad_scale);
}

template <typename P, typename G, typename C, bool kStochastic>
cudaError_t launch(const AdamWStep& a, const Scalars& s, cudaStream_t stream) {
  const bool aligned = aligned16(a.param) && aligned16(a.grad) && aligned16(a.exp_avg) &&
                       aligned16(a.exp_avg_sq) && aligned16(a.compute_copy);
  const int vec = aligned ? kVec<P> : 1;
  auto kernel =
      aligned ? adamw_kernel<P, G, C, kVec<P>, kStochastic> : adamw_kernel<P, G, C, 1, kStochastic>;
  // grid: kThreads * kUnroll vectors of `vec` elements per block (at least one block: the tail);
  // block: kThreads
  kernel<<<static_cast<unsigned>(blocks_for(a.n, vec)), kThreads, 0, stream>>>(
      static_cast<P*>(a.param), static_cast<const G*>(a.grad), static_cast<P*>(a.exp_avg),
      static_cast<P*>(a.exp_avg_sq), static_cast<C*>(a.compute_copy), a.n, s, a.grad_scale,
      a.step_values);
  return cudaGetLastError();
}

template <typename P, typename G, typename C, bool kStochastic>
cudaError_t launch_table(const TableArgs& t, int64_t blocks, cudaStream_t stream) {
  // grid: every tensor's blocks of its own launch, end to end; block: kThreads
  adamw_table_kernel<P, G, C, kVec<P>, kStochastic>
      <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(t);
  return cudaGetLastError();
}

// Calls f(Tag<P>{}, Tag<G>{}, Tag<C>{}, std::bool_constant<kStochastic>{})
// for the kernel instance of these dtypes; cudaErrorInvalidValue for a
// combination there is none of.
template <typename F>
cudaError_t dispatch_adamw(DType param_dtype, DType grad_dtype, bool copies, DType copy_dtype,
                           bool stochastic, F&& f) {
  // The compute copy, if any, is bf16 or fp16 beside an fp32 parameter.
  if (copies && (param_dtype != DType::f32 || copy_dtype == DType::f32))
    return cudaErrorInvalidValue;
  stochastic = stochastic && param_dtype == DType::bf16;
  auto run = [&](auto tp, auto tg) -> cudaError_t {
    using P = typename decltype(tp)::type;
    if constexpr (std::is_same<P, float>::value) {
      if (copies) {
        return copy_dtype == DType::bf16 ? f(tp, tg, Tag<__nv_bfloat16>{}, std::false_type{})
                                         : f(tp, tg, Tag<__half>{}, std::false_type{});
      }
    }
    if constexpr (std::is_same<P, __nv_bfloat16>::value) {
      if (stochastic) return f(tp, tg, Tag<NoCopy>{}, std::true_type{});
    }
    return f(tp, tg, Tag<NoCopy>{}, std::false_type{});
  };
  // G: P or f32 (dispatch_dtypes), or for an fp32 parameter the 16-bit
  // gradient of its compute copy; else cudaErrorInvalidValue.
  if (param_dtype == DType::f32 && grad_dtype == DType::bf16)
    return run(Tag<float>{}, Tag<__nv_bfloat16>{});
  if (param_dtype == DType::f32 && grad_dtype == DType::f16)
    return run(Tag<float>{}, Tag<__half>{});
  return dispatch_dtypes(param_dtype, grad_dtype, run);
}

}  // namespace

cudaError_t adamw_step(const AdamWStep& a, cudaStream_t stream) {
  if (a.n == 0) return cudaSuccess;
  // cast: the host's double scalars to fp32, once (1 - beta and 1 / sqrt(1 - beta2^t) computed in
  // double first)
  Scalars s;
  s.beta1 = static_cast<float>(a.beta1);
  s.one_minus_beta1 = static_cast<float>(1.0 - a.beta1);
  s.beta2 = static_cast<float>(a.beta2);
  s.one_minus_beta2 = static_cast<float>(1.0 - a.beta2);
  s.eps = static_cast<float>(a.eps);
  s.decay = static_cast<float>(a.decay);
  s.step_size = static_cast<float>(a.step_size);
  s.inv_bias_correction2_sqrt = static_cast<float>(1.0 / a.bias_correction2_sqrt);
  s.key_lo = a.key_lo;
  s.key_hi = a.key_hi;
  return dispatch_adamw(a.param_dtype, a.grad_dtype, a.compute_copy != nullptr, a.copy_dtype,
                        a.stochastic_rounding,
                        [&](auto tp, auto tg, auto tc, auto stochastic) -> cudaError_t {
                          using P = typename decltype(tp)::type;
                          using G = typename decltype(tg)::type;
                          using C = typename decltype(tc)::type;
                          return launch<P, G, C, decltype(stochastic)::value>(a, s, stream);
                        });
}

cudaError_t adamw_step_table(const AdamWTable& table, cudaStream_t stream) {
  if (table.count <= 0 || table.count > kAdamWTableTensors) return cudaErrorInvalidValue;
  TableArgs t{};
  const int vec = static_cast<int>(16 / dtype_size(table.param_dtype));
  int64_t blocks = 0;
  for (int k = 0; k < table.count; ++k) {
    const AdamWTableTensor& e = table.tensors[k];
    if (e.n < 0 || (e.compute_copy != nullptr) != table.compute_copies)
      return cudaErrorInvalidValue;
    if (!aligned16(e.param) || !aligned16(e.grad) || !aligned16(e.exp_avg) ||
        !aligned16(e.exp_avg_sq) || !aligned16(e.compute_copy)) {
      return cudaErrorInvalidValue;
    }
    t.tensors[k] = e;
    t.first_chunk[k] = blocks;
    if (e.n > 0) blocks += blocks_for(e.n, vec);
  }
  if (blocks == 0) return cudaSuccess;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;  // gridDim.x
  t.count = table.count;
  // cast: the shared double scalars to fp32, as adamw_step casts them (the
  // per-tensor ones came in fp32, rounded as adamw_step rounds its own)
  t.beta1 = static_cast<float>(table.beta1);
  t.one_minus_beta1 = static_cast<float>(1.0 - table.beta1);
  t.beta2 = static_cast<float>(table.beta2);
  t.one_minus_beta2 = static_cast<float>(1.0 - table.beta2);
  t.eps = static_cast<float>(table.eps);
  t.grad_scale = table.grad_scale;
  return dispatch_adamw(
      table.param_dtype, table.grad_dtype, table.compute_copies, table.copy_dtype,
      table.stochastic_rounding, [&](auto tp, auto tg, auto tc, auto stochastic) -> cudaError_t {
        using P = typename decltype(tp)::type;
        using G = typename decltype(tg)::type;
        using C = typename decltype(tc)::type;
        return launch_table<P, G, C, decltype(stochastic)::value>(t, blocks, stream);
      });
}

}  // namespace liger::cuda_kernels
