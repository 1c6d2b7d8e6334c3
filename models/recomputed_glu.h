// The MLP's down projection of a GLU activation, y = glu(gate, up) W^T, as one
// autograd node that keeps gate, up and W for backward but not the product
// h = glu(gate, up): [tokens, intermediate], the largest activation of a
// decoder layer (Llama-3.2-1B at 8192 tokens: 128 MiB per layer). Backward
// recomputes h with the same kernel (one elementwise pass) and then
//   dW = dy^T h,   dh = dy W,   (dgate, dup) = the GLU op's own backward of dh.
// The values and gradients equal those of glu() followed by torch::linear.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

namespace liger::models {

// glu: the activation op as the model calls it (kernels::KernelSet::swiglu or
// geglu, with autograd). gate, up: [..., intermediate]; weight: [hidden, intermediate].
using GluOp = std::function<at::Tensor(const at::Tensor& gate, const at::Tensor& up)>;
at::Tensor glu_down_projection_recomputed(const GluOp& glu, const at::Tensor& gate, const at::Tensor& up,
                                          const at::Tensor& weight);

}  // namespace liger::models
