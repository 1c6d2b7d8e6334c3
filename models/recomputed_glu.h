// The MLP's down projection of a GLU activation, y = glu(gate, up) W^T, as one
// autograd node that keeps gate, up and W for backward but not the product
// h = glu(gate, up): [tokens, intermediate], the largest activation of a
// decoder layer (Llama-3.2-1B at 8192 tokens: 128 MiB per layer). Backward
//   dh = dy W,   (h, dgate, dup) = the GLU op's recomputing backward of dh,
//   dW = dy^T h
// where the middle step recomputes h and takes the GLU gradients in one pass
// (the cuda kernel reads gate, up and dh once; kernels/ops.h GluRecomputeFn),
// writing dgate and dup over gate's and up's buffers when they are graph
// intermediates, as the GLU op itself does. The values and gradients equal
// those of glu() followed by torch::linear.
#pragma once

#include "kernels/registry.h"

#include <ATen/core/Tensor.h>

namespace liger::models {

enum class GluKind { swiglu, geglu };

// kernels: the set the model calls (it must outlive the autograd graph).
// gate, up: [..., intermediate]; weight: [hidden, intermediate].
at::Tensor glu_down_projection_recomputed(const kernels::KernelSet& kernels, GluKind kind,
                                          const at::Tensor& gate, const at::Tensor& up,
                                          const at::Tensor& weight);

}  // namespace liger::models
