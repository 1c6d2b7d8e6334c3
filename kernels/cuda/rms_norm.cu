// RMSNorm and the fused residual-add RMSNorm, forward and backward.
//
// A row of D elements is held in registers: each thread of a row owns C
// vectors of V elements (16-byte accesses where the row allows it), rows are
// spread over threadIdx.y. Statistics and math are fp32; the comments say
// where a value is rounded to the activation dtype T (a "cast").
#include "kernels/cuda/common.cuh"

#include <algorithm>

namespace liger::cuda_kernels {
namespace {

// Forward, one row per threadIdx.y:
//   s    = x                        (fused add: s = T(x + residual), stored to `sum`)
//   r    = (sum(s^2) / D + eps)^-1/2                          (fp32, saved as rstd)
//   llama: y = T( T(s r) * W(w + offset) )   HF LlamaRMSNorm: normalised value cast before the
//   weight gemma: y = T( s r (w + offset) )         HF GemmaRMSNorm: fp32 throughout, one cast
//   none:  y = T( T(s T(r)) * T(W(w + offset)) ), the squares and r rounded to T as well
template <typename T, typename W, int V, int C>
__global__ void __launch_bounds__(1024)
    rms_norm_forward_kernel(const T* __restrict__ x, const T* __restrict__ residual,
                            const W* __restrict__ weight, T* __restrict__ y, T* __restrict__ sum,
                            float* __restrict__ rstd_out, int64_t rows, int cols, float eps,
                            float offset, RmsCasting casting) {
  __shared__ float smem[32];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool valid = row < rows;
  const int64_t base = row * cols;

  float s[C][V];
  float ss[1] = {0.f};
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int col = (c * blockDim.x + threadIdx.x) * V;
    if (valid && col < cols) {
      load<T, V>(x + base + col, s[c]);
      if (residual != nullptr) {
        float r[V];
        load<T, V>(residual + base + col, r);
#pragma unroll
        for (int i = 0; i < V; ++i) s[c][i] = round_to<T>(s[c][i] + r[i]);  // cast: the sum is T
        store<T, V>(sum + base + col, s[c]);
      }
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i) s[c][i] = 0.f;
    }
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float sq = s[c][i] * s[c][i];
      ss[0] += casting == RmsCasting::none ? round_to<T>(sq) : sq;  // cast (none): x^2 in T
    }
  }
  row_sum<1>(ss, smem);
  const float rstd = rsqrtf(ss[0] / cols + eps);
  // cast (none): mean, mean + eps and r each in T
  const float rstd_t = round_to<T>(rsqrtf(round_to<T>(round_to<T>(ss[0] / cols) + eps)));
  if (!valid) return;  // (after the block-wide reduction)
  if (threadIdx.x == 0) rstd_out[row] = rstd;

#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int col = (c * blockDim.x + threadIdx.x) * V;
    if (col >= cols) continue;
    float w[V], out[V];
    load<W, V>(weight + col, w);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float wo = round_to<W>(w[i] + offset);  // cast: w + offset in W (as `weight + offset`)
      switch (casting) {
        case RmsCasting::llama: out[i] = round_to<T>(s[c][i] * rstd) * wo; break;
        case RmsCasting::gemma: out[i] = s[c][i] * rstd * (w[i] + offset); break;
        case RmsCasting::none: out[i] = round_to<T>(s[c][i] * rstd_t) * round_to<T>(wo); break;
      }
    }
    store<T, V>(y + base + col, out);  // cast: y to T
  }
}

// Backward, the same for every casting mode (as the composite backend), with
// n = s r and g = dy (w + offset), all fp32:
//   dx = r (g - n mean(g n))  [+ dsum: the fused add's second output gradient]
//   dw = sum over rows of dy n
// Persistent: gridDim.x blocks (a few per SM) walk the rows, a thread
// prefetching its next row while it works on this one (C == 1). Each thread
// sums dw for its columns in registers; at the end block i stores them as
// partial row i (no zeroing, no atomics), and sum_partials reduces the
// partial rows in a fixed order (deterministic).
template <typename T, typename W, int V, int C>
__global__ void __launch_bounds__(C == 1 ? 1024 : 512, 1)
    rms_norm_backward_kernel(const T* __restrict__ dy, const T* __restrict__ dsum,
                             const T* __restrict__ x, const W* __restrict__ weight,
                             const float* __restrict__ rstd, T* __restrict__ dx,
                             float* __restrict__ dw_partials, int64_t rows, int cols,
                             float offset) {
  constexpr bool kPrefetch = C == 1;  // wider rows: registers are short
  __shared__ float smem[32];
  extern __shared__ float red[];

  float acc[C][V];
#pragma unroll
  for (int c = 0; c < C; ++c) {
#pragma unroll
    for (int i = 0; i < V; ++i) acc[c][i] = 0.f;
  }

  using P = Pack<T, V>;
  // One row's x, dy and rstd, zero where there is no row or no column.
  auto load_row = [&](int64_t row, P(&xp)[C], P(&gp)[C], float& r) {
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
  float r;
  if constexpr (kPrefetch) load_row(row, xp, gp, r);
  // `first` (the block's first row) bounds the loop: the same trip count for every thread.
  for (int64_t first = row - threadIdx.y; first < rows; first += stride, row += stride) {
    P xn[C], gn[C];
    float rn;
    if constexpr (kPrefetch) {
      load_row(row + stride, xn, gn, rn);  // in flight during this row's math
    } else {
      load_row(row, xp, gp, r);
    }
    const bool valid = row < rows;
    // The fused add's gradient: loaded now, used after the reduction.
    P dp[C];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int col = (c * blockDim.x + threadIdx.x) * V;
      dp[c] = P{};
      if (dsum != nullptr && valid && col < cols) dp[c] = load_pack<T, V>(dsum + row * cols + col);
    }

    // w + offset, reloaded for every row (an L1 hit) rather than held in registers.
    float wt[C][V];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int col = (c * blockDim.x + threadIdx.x) * V;
      if (col < cols) {
        load<W, V>(weight + col, wt[c]);
      } else {
#pragma unroll
        for (int i = 0; i < V; ++i) wt[c][i] = 0.f;
      }
#pragma unroll
      for (int i = 0; i < V; ++i) wt[c][i] += offset;
    }

    float dot[1] = {0.f};
#pragma unroll
    for (int c = 0; c < C; ++c) {
#pragma unroll
      for (int i = 0; i < V; ++i) {
        dot[0] += to_float(gp[c].v[i]) * wt[c][i] * to_float(xp[c].v[i]) * r;
      }
    }
    row_sum<1>(dot, smem);
    const float mean_gn = dot[0] / cols;

#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int col = (c * blockDim.x + threadIdx.x) * V;
      float out[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float n = to_float(xp[c].v[i]) * r;
        const float g = to_float(gp[c].v[i]);
        out[i] = r * (g * wt[c][i] - n * mean_gn) + to_float(dp[c].v[i]);
        acc[c][i] += g * n;  // zero for padding rows and columns
      }
      if (dx != nullptr && valid && col < cols) store<T, V>(dx + row * cols + col, out);
    }
    if constexpr (kPrefetch) {
#pragma unroll
      for (int c = 0; c < C; ++c) {
        xp[c] = xn[c];
        gp[c] = gn[c];
      }
      r = rn;
    }
  }
  if (dw_partials != nullptr) {
    // Each block stores its own partial row: no zeroing pass before the kernel.
    add_to_partials<C, V, /*kAtomic=*/false>(
        acc, dw_partials + static_cast<int64_t>(blockIdx.x) * cols, cols, red);
  }
}

template <typename T, typename W, int V, int C>
cudaError_t launch_forward(const RmsNormForward& a, const RowLayout& l, cudaStream_t stream) {
  const int rows_per_block = std::max(1, 256 / l.threads);
  const auto blocks = static_cast<unsigned>((a.rows + rows_per_block - 1) / rows_per_block);
  // grid: one block per `rows_per_block` rows; block: l.threads threads per row x rows_per_block
  rms_norm_forward_kernel<T, W, V, C><<<blocks, dim3(l.threads, rows_per_block), 0, stream>>>(
      static_cast<const T*>(a.x), static_cast<const T*>(a.residual),
      static_cast<const W*>(a.weight), static_cast<T*>(a.y), static_cast<T*>(a.sum), a.rstd, a.rows,
      static_cast<int>(a.cols), a.eps, a.offset, a.casting);
  return cudaGetLastError();
}

template <typename T, typename W, int V, int C>
cudaError_t launch_backward(const RmsNormBackward& a, const RowLayout& l, cudaStream_t stream) {
  // One-chunk rows: blocks of at least 256 threads (whole rows), as many per
  // SM as fit 1024 threads; each block's reduction then waits only on its own
  // rows while the SM's other blocks stream theirs.
  const int rows_per_block = C == 1 ? (256 + l.threads - 1) / l.threads : 1;
  const int per_sm =
      C == 1 ? std::max(1, std::min(kRmsBackwardBlocksPerSm, 1024 / (l.threads * rows_per_block)))
             : 1;
  const int blocks = norm_backward_blocks((a.rows + rows_per_block - 1) / rows_per_block, per_sm);
  const int parts = blocks;  // one partial row per block, each written whole
  float* partials = a.dweight != nullptr ? a.workspace : nullptr;
  const size_t smem = rows_per_block > 1 ? sizeof(float) * l.threads * rows_per_block * V : 0;
  // grid: persistent, at most per_sm blocks per SM; block: l.threads threads per row x
  // rows_per_block
  rms_norm_backward_kernel<T, W, V, C><<<blocks, dim3(l.threads, rows_per_block), smem, stream>>>(
      static_cast<const T*>(a.dy), static_cast<const T*>(a.dsum), static_cast<const T*>(a.x),
      static_cast<const W*>(a.weight), a.rstd, static_cast<T*>(a.dx), partials, a.rows,
      static_cast<int>(a.cols), a.offset);
  if (partials != nullptr)
    sum_partials(partials, parts, a.cols, static_cast<W*>(a.dweight), stream);
  return cudaGetLastError();
}

struct Forward {
  template <typename T, typename W, int V, int C>
  static cudaError_t run(const RmsNormForward& a, const RowLayout& l, cudaStream_t s) {
    return launch_forward<T, W, V, C>(a, l, s);
  }
};
struct Backward {
  template <typename T, typename W, int V, int C>
  static cudaError_t run(const RmsNormBackward& a, const RowLayout& l, cudaStream_t s) {
    return launch_backward<T, W, V, C>(a, l, s);
  }
};

}  // namespace

bool norm_cols_supported(int64_t cols, DType dtype, bool aligned) {
  return row_layout(cols, dtype, aligned).ok;
}

size_t norm_backward_workspace_floats(int64_t rows, int64_t cols, int n_sums) {
  // An upper bound: the launch uses at most one block per row.
  // rms_norm (one sum): one partial row per block, up to
  // kRmsBackwardBlocksPerSm blocks per SM; layer_norm (two sums): one per
  // pair of blocks, one block per SM.
  const int per_sm = n_sums == 1 ? kRmsBackwardBlocksPerSm : 1;
  return static_cast<size_t>(norm_backward_blocks(rows, per_sm)) * cols * n_sums;
}

cudaError_t rms_norm_forward(const RmsNormForward& a, cudaStream_t stream) {
  if (a.rows == 0) return cudaSuccess;
  const bool aligned = aligned16(a.x) && aligned16(a.y) && aligned16(a.weight) &&
                       (a.residual == nullptr || (aligned16(a.residual) && aligned16(a.sum)));
  const RowLayout l = row_layout(a.cols, a.x_dtype, aligned);
  if (!l.ok) return cudaErrorInvalidValue;
  return dispatch_dtypes(a.x_dtype, a.w_dtype, [&](auto t, auto w) {
    return by_layout<typename decltype(t)::type, typename decltype(w)::type>(a, l, stream,
                                                                             Forward{});
  });
}

cudaError_t rms_norm_backward(const RmsNormBackward& a, cudaStream_t stream) {
  if (a.rows == 0) {
    if (a.dweight == nullptr) return cudaSuccess;
    return cudaMemsetAsync(a.dweight, 0, dtype_size(a.w_dtype) * a.cols, stream);  // dw = 0
  }
  const bool aligned = aligned16(a.dy) && aligned16(a.x) && aligned16(a.weight) &&
                       (a.dx == nullptr || aligned16(a.dx)) &&
                       (a.dsum == nullptr || aligned16(a.dsum));
  const RowLayout l = row_layout(a.cols, a.x_dtype, aligned);
  if (!l.ok) return cudaErrorInvalidValue;
  return dispatch_dtypes(a.x_dtype, a.w_dtype, [&](auto t, auto w) {
    return by_layout<typename decltype(t)::type, typename decltype(w)::type>(a, l, stream,
                                                                             Backward{});
  });
}

}  // namespace liger::cuda_kernels
