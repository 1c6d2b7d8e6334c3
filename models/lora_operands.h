// The LoRA operands of one projection (or of several packed ones), as the
// model hands them to the autograd nodes that compute the projections
// (models/packed_projection.h, models/recomputed_glu.h): per weight, its A and
// B in the compute dtype, or nothing.
//
//   y_i = x W_i^T + scaling * dropout(x) A_i^T B_i^T
//
// The nodes compute u = scaling * dropout(x) cat(A_i)^T in ONE GEMM over the
// adapters of a packed input (q|k|v; gate|up), write each u_i B_i^T into its
// block of the output and add the base product in the same buffer (the
// GEMM's beta = 1), so the delta costs no add pass. Backward, with
// g_i = scaling * dy_i B_i:  dA = g^T dropout(x) (one GEMM),
// dB_i = dy_i^T u_i,  dx += (g cat(A_i)) * mask / (1 - p).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace liger::models {

struct LoraOperands {
  std::vector<at::Tensor> a;  // per weight: [rank, in] or undefined (no adapter on that weight)
  std::vector<at::Tensor> b;  // per weight: [out_i, rank] or undefined
  double scaling = 1.0;       // alpha / rank
  // Dropout's p on the adapters' input (> 0 in training only): the node
  // draws the mask (models/lora.h lora_dropout_mask, from the input's device
  // generator) when it computes the adapters' input.
  double dropout = 0.0;

  bool any() const {
    for (const at::Tensor& t : a) {
      if (t.defined()) return true;
    }
    return false;
  }
};

}  // namespace liger::models
