// Launchers of the cross-entropy kernels (cross_entropy.cu): plain C++ over
// raw device pointers, sizes and a stream; nothing here knows about torch.
//
// Per row n with label y, vocabulary size V and logits x (any float dtype,
// all math in fp32):
//   z_j   = c * tanh(x_j / c)           (softcap c > 0; else z = x)
//   lse   = log sum_j exp(z_j)          (online softmax: one pass for max and sum)
//   loss  = (1 - e)(lse - z_y) + e (lse - sum_j z_j / V) + s lse^2    (0 if y is ignored)
//   dz_j  = exp(z_j - lse)(1 + 2 s lse) - e / V - (1 - e)[j == y]
//   dx_j  = dz_j * (1 - (z_j / c)^2)    (softcap only), times a device-side scale
//           and, where given, a per-row scale
// e = label_smoothing, s = z_loss_scale. Ignored rows get loss 0 and gradient 0.
#pragma once

#include "kernels/cuda/launchers.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace liger::cuda_kernels {

struct CrossEntropyArgs {
  const void* logits = nullptr;  // [rows, row_stride] of `dtype`; this pass sees columns [0, cols)
  void* grad =
      nullptr;  // [rows, row_stride] of `dtype`, or nullptr (no gradient); may equal logits
  const int64_t* labels = nullptr;  // [rows]
  int64_t rows = 0;
  int64_t cols =
      0;  // columns in this pass (V for whole rows, the block width for vocabulary blocks)
  int64_t row_stride = 0;  // elements between rows of logits and grad
  int64_t col_offset = 0;  // vocabulary index of column 0 (vocabulary blocks)
  int64_t vocab = 0;       // V, the full vocabulary
  DType dtype = DType::f32;
  int64_t ignore_index = -100;
  float label_smoothing = 0.f;
  float z_loss_scale = 0.f;
  float softcap = 0.f;
  const float* grad_scale = nullptr;  // device scalar multiplying every gradient, or nullptr (1)
  // [rows] fp32 multiplying row n's gradient (on top of grad_scale), or nullptr (1):
  // per-row weights such as the preference losses' per-sequence coefficients.
  const float* row_scale = nullptr;
};

// Whole rows (cols == vocab): per-row loss, optionally lse, and the gradient,
// reading each row from HBM once (the row is kept in shared memory as far as
// it fits). loss: [rows] fp32; lse: [rows] fp32 or nullptr.
cudaError_t cross_entropy_rows(const CrossEntropyArgs& a, float* loss, float* lse,
                               cudaStream_t stream);

// Vocabulary blocks, pass 1: folds the block's columns into running per-row
// statistics (max, sum of exp relative to max, sum of z, z of the label).
// `first` resets them. Blocks are processed one launch after another.
struct RowStats {
  float* max = nullptr;
  float* sumexp = nullptr;
  float* sum_z = nullptr;
  float* z_label = nullptr;
};
cudaError_t cross_entropy_block_stats(const CrossEntropyArgs& a, RowStats stats, bool first,
                                      cudaStream_t stream);
// After the last block: loss and lse per row from the statistics.
cudaError_t cross_entropy_finish_stats(const int64_t* labels, int64_t rows, int64_t vocab,
                                       int64_t ignore_index, float label_smoothing,
                                       float z_loss_scale, RowStats stats, float* loss, float* lse,
                                       cudaStream_t stream);
// Vocabulary blocks, pass 2: the gradient of the block's columns from lse.
cudaError_t cross_entropy_block_grad(const CrossEntropyArgs& a, const float* lse,
                                     cudaStream_t stream);

// data *= *scale, skipped entirely (every block returns at once) when *scale == 1:
// backward's multiplication by grad_output without a host synchronisation.
cudaError_t scale_unless_one(void* data, int64_t n, DType dtype, const float* scale,
                             cudaStream_t stream);

}  // namespace liger::cuda_kernels
