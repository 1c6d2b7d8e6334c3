// The sum of squares of every element of many tensors: the square of the
// global gradient norm that gradient clipping divides by. One pass over the
// gradients: the CUDA kernel (kernels/cuda/sum_of_squares.cu) in CUDA
// builds for CUDA tensors, else ATen's multi-tensor norm.
#pragma once

#include "kernels/optim.h"

#include <ATen/core/Tensor.h>

#include <vector>

namespace liger::kernels {

// sum over t, i of float(tensors[t][i])^2 as an fp32 scalar tensor on the
// tensors' device, without a host synchronisation. Floating tensors of any
// dtype and layout, all on one device; none: zero on the CPU. The CUDA path
// adds in a fixed order (the same result for the same inputs); its order
// differs from ATen's, so the two agree to fp32 rounding.
Tensor sum_of_squares(const std::vector<Tensor>& tensors, OptimPath path = OptimPath::automatic);

}  // namespace liger::kernels
