// Several projections of one input as one GEMM: y = x @ cat(W_0, ..., W_n)^T
// (q, k and v of attention: [tokens, hidden] x [hidden, (Hq + 2 Hk) D]). One
// larger GEMM runs faster than three narrow ones (k and v are only Hk D
// wide), and backward needs no sum of three input gradients: d_x is one GEMM
// over the packed output gradient.
//
// One autograd node that saves x and the separate weights, not their
// concatenation: nothing beyond what three torch::linear would keep stays
// alive until backward (sharded weights are released and gathered again as
// before). Backward concatenates the weights again (a copy of the weights,
// small against the activations) for d_x = dy cat(W), and splits d_W = dy^T x
// into the weights' gradients. With one weight there is nothing to
// concatenate: a plain linear layer (o_proj) whose products, like the packed
// ones, go through the kernels' GEMM op (kernels.tuned_gemm).
//
// LoRA (models/lora_operands.h): adapters on some of the weights add
// scaling * dropout(x) A_i^T B_i^T to their blocks of the output inside the
// same node: the A products of all adapters are one GEMM, the delta is
// written first and the base GEMM adds into it. A weight that does not
// require grad (a frozen base) costs no weight-gradient GEMM.
//
// Biases (Qwen2's q, k and v): y = x cat(W)^T + cat(b), the bias going into
// the GEMM as its added input (addmm's beta = 1), never as a pass of its
// own; with adapters the output buffer starts as the bias and the adapters'
// and the base products add into it. d_b = the column sums of dy.
#pragma once

#include "kernels/registry.h"
#include "models/lora_operands.h"

#include <ATen/core/Tensor.h>

#include <vector>

namespace liger::models {

// x: [..., in]; weights: [out_i, in] each, one dtype with x. Returns
// [..., sum out_i]; the gradients equal those of torch::linear per weight.
// `kernels` must outlive the autograd graph (the model's own set). lora:
// adapters per weight (x's dtype), or nullptr. biases: none, or one [out_i]
// per weight (x's dtype).
at::Tensor packed_projection(const kernels::KernelSet& kernels, const at::Tensor& x,
                             const std::vector<at::Tensor>& weights,
                             const LoraOperands* lora = nullptr,
                             const std::vector<at::Tensor>& biases = {});

}  // namespace liger::models
