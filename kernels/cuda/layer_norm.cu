// LayerNorm, forward and backward. Same row layout as rms_norm.cu: a row is
// held in registers (C vectors of V elements per thread, rows over
// threadIdx.y); all math in fp32, one cast to T at the end.
#include "kernels/cuda/common.cuh"

#include <algorithm>

namespace liger::cuda_kernels {
namespace {

// Forward, one row per threadIdx.y (biased variance, two passes over the
// registers):
//   mu = sum(x) / D,  r = (sum((x - mu)^2) / D + eps)^-1/2   (saved: mu, r)
//   y  = T( (x - mu) r w + b )      (w = 1, b = 0 when absent)
template <typename T, typename W, int V, int C>
__global__ void __launch_bounds__(1024)
    layer_norm_forward_kernel(const T* __restrict__ x, const W* __restrict__ weight,
                              const W* __restrict__ bias, T* __restrict__ y,
                              float* __restrict__ mean_out, float* __restrict__ rstd_out,
                              int64_t rows, int cols, float eps) {
  __shared__ float smem[32];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < rows;
  const int64_t base = row * cols;

  float v[C][V];
  float sum[1] = {0.f};
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int col = (c * blockDim.x + threadIdx.x) * V;
    if (valid && col < cols) {
      load<T, V>(x + base + col, v[c]);
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) v[c][i] = 0.f;
    }
#pragma unroll
    for (int i = 0; i < V; ++i) sum[0] += v[c][i];
  }
  row_sum<1>(sum, smem);
  const float mu = sum[0] / cols;

  float ss[1] = {0.f};
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int col = (c * blockDim.x + threadIdx.x) * V;
    if (col >= cols) continue;  // padding columns hold 0, not mu
#pragma unroll
    for (int i = 0; i < V; ++i) ss[0] += (v[c][i] - mu) * (v[c][i] - mu);
  }
  row_sum<1>(ss, smem);
  const float rstd = rsqrtf(ss[0] / cols + eps);
  if (!valid) return;  // (after the block-wide reductions)
  if (threadIdx.x == 0) {
    mean_out[row] = mu;
    rstd_out[row] = rstd;
  }

#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int col = (c * blockDim.x + threadIdx.x) * V;
    if (col >= cols) continue;
    float w[V], b[V], out[V];
    if (weight != nullptr) {
      load<W, V>(weight + col, w);
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) w[i] = 1.f;
    }
    if (bias != nullptr) {
      load<W, V>(bias + col, b);
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) b[i] = 0.f;
    }
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = (v[c][i] - mu) * rstd * w[i] + b[i];
    store<T, V>(y + base + col, out);  // cast: y to T
  }
}

// Backward, with xh = (x - mu) r and g = dy w (fp32):
//   dx = r (g - mean(g) - xh mean(g xh))
//   dw = sum over rows of dy xh,   db = sum over rows of dy
// Persistent and prefetching like rms_norm_backward_kernel; dw and db go
// through per-block partial rows (dw's at partials, db's after them), then
// sum_partials.
template <typename T, typename W, int V, int C>
__global__ void __launch_bounds__(C == 1 ? 1024 : 512, 1)
    layer_norm_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                               const W* __restrict__ weight, const float* __restrict__ mean,
                               const float* __restrict__ rstd, T* __restrict__ dx,
                               float* __restrict__ dw_partials, float* __restrict__ db_partials,
                               int64_t rows, int cols) {
  constexpr bool kPrefetch = C == 1;
  __shared__ float smem[64];
  extern __shared__ float red[];

  float acc_w[C][V], acc_b[C][V];
#pragma unroll
  for (int c = 0; c < C; ++c) {
#pragma unroll
    for (int i = 0; i < V; ++i) acc_w[c][i] = acc_b[c][i] = 0.f;
  }

  using P = Pack<T, V>;
  // One row's x, dy, mean and rstd, zero where there is no row or no column.
  auto load_row = [&](int64_t row, P(&xp)[C], P(&gp)[C], float& mu, float& r) {
    mu = row < rows ? mean[row] : 0.f;
    r = row < rows ? rstd[row] : 0.f;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int col = (c * blockDim.x + threadIdx.x) * V;
      xp[c] = gp[c] = P{};  // zero bits: 0.0 in every dtype
      if (row < rows && col < cols) {
        xp[c] = load_pack<T, V>(x + row * cols + col);
        gp[c] = load_pack<T, V>(dy + row * cols + col);
      }
    }
  };

  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.y;
  int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  P xp[C], gp[C];
  float mu, r;
  if constexpr (kPrefetch) load_row(row, xp, gp, mu, r);
  for (int64_t first = row - threadIdx.y; first < rows; first += stride, row += stride) {
    P xn[C], gn[C];
    float mun, rn;
    if constexpr (kPrefetch) {
      load_row(row + stride, xn, gn, mun, rn);  // in flight during this row's math
    } else {
      load_row(row, xp, gp, mu, r);
    }
    const bool valid = row < rows;

    // w, reloaded for every row (an L1 hit) rather than held in registers.
    float wt[C][V];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int col = (c * blockDim.x + threadIdx.x) * V;
      if (weight != nullptr && col < cols) {
        load<W, V>(weight + col, wt[c]);
      } else {
#pragma unroll
        for (int i = 0; i < V; ++i) wt[c][i] = weight != nullptr ? 0.f : 1.f;
      }
    }

    float sums[2] = {0.f, 0.f};  // sum(g), sum(g xh)
#pragma unroll
    for (int c = 0; c < C; ++c) {
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float g = to_float(gp[c].v[i]) * wt[c][i];
        sums[0] += g;
        sums[1] += g * (to_float(xp[c].v[i]) - mu) * r;
      }
    }
    row_sum<2>(sums, smem);
    const float mean_g = sums[0] / cols, mean_gx = sums[1] / cols;

#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int col = (c * blockDim.x + threadIdx.x) * V;
      const bool inside = valid && col < cols;
      float out[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float xh = inside ? (to_float(xp[c].v[i]) - mu) * r : 0.f;
        const float d = to_float(gp[c].v[i]);
        out[i] = r * (d * wt[c][i] - mean_g - xh * mean_gx);
        acc_w[c][i] += d * xh;
        acc_b[c][i] += d;
      }
      if (dx != nullptr && inside) store<T, V>(dx + row * cols + col, out);
    }
    if constexpr (kPrefetch) {
#pragma unroll
      for (int c = 0; c < C; ++c) {
        xp[c] = xn[c];
        gp[c] = gn[c];
      }
      mu = mun;
      r = rn;
    }
  }
  const int64_t part = static_cast<int64_t>(blockIdx.x / 2) * cols;
  if (dw_partials != nullptr) add_to_partials<C, V>(acc_w, dw_partials + part, cols, red);
  if (db_partials != nullptr) add_to_partials<C, V>(acc_b, db_partials + part, cols, red);
}

struct Forward {
  template <typename T, typename W, int V, int C>
  static cudaError_t run(const LayerNormForward& a, const RowLayout& l, cudaStream_t stream) {
    const int rows_per_block = std::max(1, 256 / l.threads);
    const auto blocks = static_cast<unsigned>((a.rows + rows_per_block - 1) / rows_per_block);
    // grid: one block per `rows_per_block` rows; block: l.threads threads per row x rows_per_block
    layer_norm_forward_kernel<T, W, V, C><<<blocks, dim3(l.threads, rows_per_block), 0, stream>>>(
        static_cast<const T*>(a.x), static_cast<const W*>(a.weight), static_cast<const W*>(a.bias),
        static_cast<T*>(a.y), a.mean, a.rstd, a.rows, static_cast<int>(a.cols), a.eps);
    return cudaGetLastError();
  }
};

struct Backward {
  template <typename T, typename W, int V, int C>
  static cudaError_t run(const LayerNormBackward& a, const RowLayout& l, cudaStream_t stream) {
    const int rows_per_block = C == 1 ? std::max(1, 1024 / l.threads) : 1;
    const int blocks = norm_backward_blocks((a.rows + rows_per_block - 1) / rows_per_block);
    const int parts = norm_partial_rows(blocks);
    const size_t part_floats = static_cast<size_t>(parts) * a.cols;
    const bool want = a.dweight != nullptr || a.dbias != nullptr;
    if (want) {
      const cudaError_t err =
          cudaMemsetAsync(a.workspace, 0, sizeof(float) * 2 * part_floats, stream);
      if (err != cudaSuccess) return err;
    }
    float* dw_partials = a.dweight != nullptr ? a.workspace : nullptr;
    float* db_partials = a.dbias != nullptr ? a.workspace + part_floats : nullptr;
    const size_t smem = rows_per_block > 1 ? sizeof(float) * l.threads * rows_per_block * V : 0;
    // grid: persistent, at most one block per SM; block: l.threads threads per row x rows_per_block
    layer_norm_backward_kernel<T, W, V, C>
        <<<blocks, dim3(l.threads, rows_per_block), smem, stream>>>(
            static_cast<const T*>(a.dy), static_cast<const T*>(a.x),
            static_cast<const W*>(a.weight), a.mean, a.rstd, static_cast<T*>(a.dx), dw_partials,
            db_partials, a.rows, static_cast<int>(a.cols));
    if (dw_partials != nullptr) {
      sum_partials(dw_partials, parts, a.cols, static_cast<W*>(a.dweight), stream);
    }
    if (db_partials != nullptr) {
      sum_partials(db_partials, parts, a.cols, static_cast<W*>(a.dbias), stream);
    }
    return cudaGetLastError();
  }
};

}  // namespace

cudaError_t layer_norm_forward(const LayerNormForward& a, cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  const bool aligned = aligned16(a.x) && aligned16(a.y) &&
                       (a.weight == nullptr || aligned16(a.weight)) &&
                       (a.bias == nullptr || aligned16(a.bias));
  const RowLayout l = row_layout(a.cols, a.x_dtype, aligned);
  if (!l.ok) return cudaErrorInvalidValue;
  return dispatch_dtypes(a.x_dtype, a.w_dtype, [&](auto t, auto w) {
    return by_layout<typename decltype(t)::type, typename decltype(w)::type>(a, l, stream,
                                                                             Forward{});
  });
}

cudaError_t layer_norm_backward(const LayerNormBackward& a, cudaStream_t stream) {
  if (a.rows == 0) {
    const size_t bytes = dtype_size(a.w_dtype) * a.cols;
    if (a.dweight != nullptr) {
      const cudaError_t err = cudaMemsetAsync(a.dweight, 0, bytes, stream);
      if (err != cudaSuccess) return err;
    }
    return a.dbias != nullptr ? cudaMemsetAsync(a.dbias, 0, bytes, stream) : cudaSuccess;
  }
  const bool aligned = aligned16(a.dy) && aligned16(a.x) &&
                       (a.weight == nullptr || aligned16(a.weight)) &&
                       (a.dx == nullptr || aligned16(a.dx));
  const RowLayout l = row_layout(a.cols, a.x_dtype, aligned);
  if (!l.ok) return cudaErrorInvalidValue;
  return dispatch_dtypes(a.x_dtype, a.w_dtype, [&](auto t, auto w) {
    return by_layout<typename decltype(t)::type, typename decltype(w)::type>(a, l, stream,
                                                                             Backward{});
  });
}

}  // namespace liger::cuda_kernels
