// The sum of squares of many tensors in one pass (the square of the global
// gradient norm that clipping needs):
//   total = sum over tensors t, elements i of float(x_t[i])^2      (fp32)
// Memory bound: one read of every element. The tensors are laid end to end
// in one virtual index space, each starting at a multiple of V (16 bytes of
// T); every block sums one contiguous range of it, also a multiple of V, so
// that each piece of a tensor it meets starts 16-byte aligned (the bases
// are) and is read in 16-byte vectors, with a scalar tail where the tensor
// ends. Block b writes its partial sum to partials[first_partial + b]; a
// one-block kernel then adds all partials in a fixed order into `out`: the
// same result for the same inputs, run after run.
#include "kernels/cuda/common.cuh"

namespace liger::cuda_kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // vectors per thread in flight

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sum_of_squares_kernel(SumOfSquaresTable table, int64_t range, float* __restrict__ partials) {
  constexpr int V = kVec<T>;
  const int64_t lo = static_cast<int64_t>(blockIdx.x) * range;
  const int64_t hi = lo + range;
  float acc = 0.f;
  for (int k = 0; k < table.count; ++k) {
    const int64_t start = table.start[k], n = table.numel[k];
    const int64_t a = max(lo, start), b = min(hi, start + n);  // this block's piece of tensor k
    if (a >= b) continue;
    const T* x = static_cast<const T*>(table.data[k]) + (a - start);  // a - start: a multiple of V
    const int64_t len = b - a, nvec = len / V;
    for (int64_t j = threadIdx.x; j < nvec; j += static_cast<int64_t>(kThreads) * kUnroll) {
      Pack<T, V> p[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {  // every load in flight before the math
        const int64_t at = j + static_cast<int64_t>(u) * kThreads;
        if (at < nvec) p[u] = load_pack<T, V>(x + at * V);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (j + static_cast<int64_t>(u) * kThreads >= nvec) continue;
#pragma unroll
        for (int i = 0; i < V; ++i) {
          const float v = to_float(p[u].v[i]);
          acc = fmaf(v, v, acc);
        }
      }
    }
    for (int64_t i = nvec * V + threadIdx.x; i < len;
         i += kThreads) {  // the tensor's last partial vector
      const float v = to_float(x[i]);
      acc = fmaf(v, v, acc);
    }
  }
  // Block sum: warps by shuffle, then the first warp over the warp sums.
  __shared__ float warp_sums[kThreads / 32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x < 32) {
    float s = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x == 0) partials[table.first_partial + blockIdx.x] = s;
  }
}

// out = the partials' sum: thread t adds partials t, t + 1024, ... in order,
// then a fixed tree over the threads.
__global__ void __launch_bounds__(1024)
    sum_partials_kernel(const float* __restrict__ partials, int count, float* __restrict__ out) {
  __shared__ float s[1024];
  float acc = 0.f;
  for (int i = threadIdx.x; i < count; i += 1024) acc += partials[i];
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int half = 512; half > 0; half >>= 1) {
    if (threadIdx.x < half) s[threadIdx.x] += s[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = s[0];
}

}  // namespace

int sum_of_squares_blocks() {
  return 4 * sm_count();
}

cudaError_t sum_of_squares(const SumOfSquaresTable& table, DType dtype, float* partials,
                           cudaStream_t stream) {
  if (table.count <= 0 || table.count > kSumOfSquaresTensors) return cudaErrorInvalidValue;
  const int64_t vec = static_cast<int64_t>(16 / dtype_size(dtype));
  for (int k = 0; k < table.count; ++k) {
    if (!aligned16(table.data[k]) || table.start[k] % vec != 0) return cudaErrorInvalidValue;
  }
  const int64_t total = table.start[table.count - 1] + table.numel[table.count - 1];
  const int blocks = sum_of_squares_blocks();
  // Each block's range: a multiple of the vector width (at least one vector).
  int64_t range = (total + blocks - 1) / blocks;
  range = std::max<int64_t>(vec, (range + vec - 1) / vec * vec);
  // grid: sum_of_squares_blocks() blocks, one range each (some may be empty); block: kThreads
  return dispatch_dtype(dtype, [&](auto t) -> cudaError_t {
    using T = typename decltype(t)::type;
    sum_of_squares_kernel<T><<<blocks, kThreads, 0, stream>>>(table, range, partials);
    return cudaGetLastError();
  });
}

cudaError_t sum_of_squares_total(const float* partials, int count, float* out,
                                 cudaStream_t stream) {
  // grid: one block; block: 1024 threads
  sum_partials_kernel<<<1, 1024, 0, stream>>>(partials, count, out);
  return cudaGetLastError();
}

}  // namespace liger::cuda_kernels
