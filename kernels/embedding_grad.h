// The backward of an embedding lookup added into an existing gradient of the
// embedding matrix: a tied embedding, whose lm_head gradient is already a
// full [vocab, hidden] tensor, takes the lookup's gradient as an add of the
// touched rows instead of a second dense [vocab, hidden] gradient (a zero
// fill, a scatter and a full add). The CUDA kernel
// (kernels/cuda/embedding_grad.cu) in CUDA builds for CUDA tensors, else ATen.
#pragma once

#include "kernels/optim.h"

#include <ATen/core/Tensor.h>

namespace liger::kernels {

// In place: weight_grad[v, :] += sum over positions t with ids[t] = v of
// grad_out[t, :], the sum in fp32 and each touched row rounded once to
// weight_grad's dtype. weight_grad [vocab, hidden] contiguous; ids int64 of
// any shape, every id in [0, vocab) (checked on the CPU path only: checking
// on the device would synchronise); grad_out [ids..., hidden]; floating
// dtypes (float32, bfloat16, float16), one device. Deterministic: the order
// of the additions depends on the ids only. No host synchronisation.
void add_embedding_grad(const Tensor& weight_grad, const Tensor& ids, const Tensor& grad_out,
                        OptimPath path = OptimPath::automatic);

}  // namespace liger::kernels
