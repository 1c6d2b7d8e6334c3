// Device helpers shared by the kernel files: dtype conversion, 16-byte
// vector loads and stores, row reductions, the column sum that finishes the
// norms' weight gradients, and the dtype dispatch of the launchers.
#pragma once

#include "kernels/cuda/launchers.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace liger::cuda_kernels {

// ---------------------------------------------------------------------------
// Conversions: to fp32 for the math, back with round-to-nearest-even (as ATen).
// ---------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float to_float<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// v rounded to T's precision, kept in fp32: a cast to T inside fp32 math.
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return to_float(from_float<T>(v));
}

// a and b each rounded to T's precision (a cast to T inside fp32 math), with
// one packed conversion for 16-bit T: half the conversion instructions of two
// round_to calls, which bound kernels that round as often as HF's casts do.
template <typename T>
__device__ __forceinline__ void round_pair(float& a, float& b) {
  a = round_to<T>(a);
  b = round_to<T>(b);
}
template <>
__device__ __forceinline__ void round_pair<float>(float&, float&) {}
template <>
__device__ __forceinline__ void round_pair<__nv_bfloat16>(float& a, float& b) {
  const __nv_bfloat162 p = __floats2bfloat162_rn(a, b);
  a = __low2float(p);
  b = __high2float(p);
}
template <>
__device__ __forceinline__ void round_pair<__half>(float& a, float& b) {
  const __half2 p = __floats2half2_rn(a, b);
  a = __low2float(p);
  b = __high2float(p);
}

// Every element of v rounded to T's precision (V even), two per conversion.
template <typename T, int V>
__device__ __forceinline__ void round_all(float (&v)[V]) {
  static_assert(V % 2 == 0, "round_all rounds pairs");
#pragma unroll
  for (int j = 0; j < V; j += 2) round_pair<T>(v[j], v[j + 1]);
}

// ---------------------------------------------------------------------------
// Vectors: V elements of T moved as one access (16 bytes when V = kVec<T>).
// ---------------------------------------------------------------------------

template <typename T>
constexpr int kVec = 16 / sizeof(T);

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}

template <typename T, int V>
__device__ __forceinline__ void unpack(const Pack<T, V>& pk, float (&out)[V]) {
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = to_float(pk.v[i]);
}

// Loads V elements of T as fp32, in accesses of at most 16 bytes (p aligned
// to min(16, V * sizeof(T)) bytes).
template <typename T, int V>
__device__ __forceinline__ void load(const T* p, float (&out)[V]) {
  constexpr int kStep = V * sizeof(T) > 16 ? 16 / sizeof(T) : V;
#pragma unroll
  for (int j = 0; j < V; j += kStep) {
    const Pack<T, kStep> pk = load_pack<T, kStep>(p + j);
#pragma unroll
    for (int i = 0; i < kStep; ++i) out[j + i] = to_float(pk.v[i]);
  }
}

// Rounds V fp32 values to T (cast) and stores them in accesses of at most 16 bytes.
template <typename T, int V>
__device__ __forceinline__ void store(T* p, const float (&in)[V]) {
  constexpr int kStep = V * sizeof(T) > 16 ? 16 / sizeof(T) : V;
#pragma unroll
  for (int j = 0; j < V; j += kStep) {
    Pack<T, kStep> pk;
#pragma unroll
    for (int i = 0; i < kStep; ++i) pk.v[i] = from_float<T>(in[j + i]);
    *reinterpret_cast<Pack<T, kStep>*>(p + j) = pk;
  }
}

// ---------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------

template <int N>
__device__ __forceinline__ void warp_sum(float (&v)[N]) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] += __shfl_xor_sync(0xffffffffu, v[i], offset);
  }
}

// Sums v over the threads of one row of the block (threadIdx.x; one row per
// threadIdx.y, blockDim.x a multiple of 32); every thread of the row gets the
// sums. Every thread of the block must call it. smem: 32 * N floats.
template <int N>
__device__ __forceinline__ void row_sum(float (&v)[N], float* smem) {
  warp_sum(v);
  const int warps_per_row = blockDim.x / 32;
  if (warps_per_row == 1) return;  // uniform over the block
  const int lane = threadIdx.x % 32;
  const int first = threadIdx.y * warps_per_row;  // the row's first warp in the block
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) smem[(first + threadIdx.x / 32) * N + i] = v[i];
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) {
    v[i] = 0.f;
    for (int w = 0; w < warps_per_row; ++w) v[i] += smem[(first + w) * N + i];
  }
  __syncthreads();  // smem is reused by the next call
}

// Adds a block's per-column accumulators (acc[c][i] belongs to column
// (c * blockDim.x + threadIdx.x) * V + i) into its partial row `part`
// (kAtomic: added to a zeroed row that one other block also adds to; else
// stored: the row is this block's alone, every column written, no zeroing).
// With several rows per block (blockDim.y > 1, then C == 1) they are summed
// in shared memory first (red: blockDim.x * blockDim.y * V floats). Every
// thread of the block must call it.
template <int C, int V, bool kAtomic = true>
__device__ __forceinline__ void add_to_partials(const float (&acc)[C][V], float* part, int cols,
                                                float* red) {
  if (blockDim.y == 1) {
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int col = (c * blockDim.x + threadIdx.x) * V;
      if (col >= cols) continue;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        if constexpr (kAtomic) {
          atomicAdd(part + col + i, acc[c][i]);
        } else {
          part[col + i] = acc[c][i];
        }
      }
    }
    return;
  }
  if constexpr (C == 1) {
    const int width = blockDim.x * V;
#pragma unroll
    for (int i = 0; i < V; ++i) red[threadIdx.y * width + threadIdx.x * V + i] = acc[0][i];
    __syncthreads();
    for (int j = threadIdx.y * blockDim.x + threadIdx.x; j < width; j += blockDim.x * blockDim.y) {
      float s = 0.f;
      for (int y = 0; y < static_cast<int>(blockDim.y); ++y) s += red[y * width + j];
      if (j < cols) {
        if constexpr (kAtomic) {
          atomicAdd(part + j, s);
        } else {
          part[j] = s;
        }
      }
    }
    __syncthreads();  // red is reused by the next call
  }
}

// out[c] = sum over p < parts of partials[p * cols + c], summed in fp32 and
// stored as W: the second stage of the norms' weight/bias gradients.
// Block (32 columns x 16 partial rows); grid: ceil(cols / 32).
template <typename W>
__global__ void __launch_bounds__(512)
    sum_partials_kernel(const float* __restrict__ partials, int parts, int64_t cols,
                        W* __restrict__ out) {
  __shared__ float s[16][33];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  float acc = 0.f;
  if (c < cols) {
    for (int p = threadIdx.y; p < parts; p += 16) acc += partials[p * cols + c];
  }
  s[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float total = 0.f;
#pragma unroll
    for (int p = 0; p < 16; ++p) total += s[p][threadIdx.x];
    out[c] = from_float<W>(total);  // cast: fp32 sum to the weight's dtype
  }
}

template <typename W>
inline void sum_partials(const float* partials, int parts, int64_t cols, W* out,
                         cudaStream_t stream) {
  sum_partials_kernel<W><<<static_cast<unsigned>((cols + 31) / 32), dim3(32, 16), 0, stream>>>(
      partials, parts, cols, out);
}

// ---------------------------------------------------------------------------
// Host side: row layout of the norms, device facts, dtype dispatch
// ---------------------------------------------------------------------------

inline int sm_count() {
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return sms > 0 ? sms : 1;
}

// How a norm row maps onto threads: each thread of a row handles `chunks`
// vectors of `vec` elements, `threads` threads (a multiple of 32) per row.
// Rows up to 1024 vectors take one chunk (up to 1024 threads), up to 2048
// four (up to 512 threads: a thread then needs about 128 registers).
struct RowLayout {
  int vec = 1;
  int chunks = 1;
  int threads = 32;
  bool ok = false;
};

constexpr int64_t kMaxRowVectors = 2048;

inline RowLayout row_layout(int64_t cols, DType dtype, bool aligned) {
  RowLayout l;
  const int full = static_cast<int>(16 / dtype_size(dtype));
  l.vec = aligned && cols % full == 0 ? full : 1;
  const int64_t nvec = cols / l.vec;
  if (cols <= 0 || nvec > kMaxRowVectors) return l;
  l.chunks = nvec <= 1024 ? 1 : 4;
  const int64_t per_thread = (nvec + l.chunks - 1) / l.chunks;
  l.threads = static_cast<int>((per_thread + 31) / 32 * 32);
  l.ok = true;
  return l;
}

// Blocks of a persistent norm backward (at most `per_sm` per SM; each keeps
// its columns' weight gradient in registers) and, for layer_norm, the partial
// rows they write: blocks 2i and 2i+1 add into partial row i. Two fp32
// additions into zero give the same bits in either order, so the result is
// deterministic.
inline int norm_backward_blocks(int64_t row_groups, int per_sm = 1) {
  const int64_t most = sm_count() * per_sm;
  return static_cast<int>(row_groups < most ? (row_groups > 0 ? row_groups : 1) : most);
}
// rms_norm backward: up to this many blocks per SM (blocks of at least 256
// threads, 1024 resident), so that one row's block-wide reduction does not
// stall every row of the SM.
constexpr int kRmsBackwardBlocksPerSm = 4;
inline int norm_partial_rows(int blocks) {
  return (blocks + 1) / 2;
}

// Picks the norm kernel instance for the row layout: 16-byte vectors or
// single elements, one chunk or four per thread. Launch::run<T, W, V, C>
// launches it.
template <typename T, typename W, typename Args, typename Launch>
cudaError_t by_layout(const Args& a, const RowLayout& l, cudaStream_t stream, Launch) {
  constexpr int kV = kVec<T>;
  if (l.vec == 1) {
    return l.chunks == 1 ? Launch::template run<T, W, 1, 1>(a, l, stream)
                         : Launch::template run<T, W, 1, 4>(a, l, stream);
  }
  return l.chunks == 1 ? Launch::template run<T, W, kV, 1>(a, l, stream)
                       : Launch::template run<T, W, kV, 4>(a, l, stream);
}

template <typename T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) with the storage type of `dtype`.
template <typename F>
inline cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: return f(Tag<float>{});
    case DType::f16: return f(Tag<__half>{});
    case DType::bf16: return f(Tag<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

// Calls f(Tag<T>{}, Tag<W>{}) for activation dtype T and weight dtype W, where
// W is T or float.
template <typename F>
inline cudaError_t dispatch_dtypes(DType x_dtype, DType w_dtype, F&& f) {
  if (w_dtype != x_dtype && w_dtype != DType::f32) return cudaErrorInvalidValue;
  return dispatch_dtype(x_dtype, [&](auto t) -> cudaError_t {
    using T = typename decltype(t)::type;
    if (w_dtype == DType::f32) return f(t, Tag<float>{});
    return f(t, Tag<T>{});
  });
}

}  // namespace liger::cuda_kernels
