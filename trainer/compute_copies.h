// Mixed precision on 16-bit compute copies. With fp32 parameters and bf16
// (or fp16) compute, casting each weight where it is used costs a cast pass
// per weight in forward and a widening pass per gradient in backward (the
// cast's backward), every step. Instead the model's parameters become 16-bit
// autograd leaves (the forward uses them as they are, backward leaves 16-bit
// gradients on them) and the fp32 values move out to the optimizer: AdamW
// reads the 16-bit gradient, updates the fp32 weight and state, and writes
// the new value cast to nearest back into the copy in the same pass.
// Checkpoints keep the fp32 tensors. Same values as the casting path: the
// copy holds exactly fp32_weight.to(bf16), and a gradient widened to fp32
// is exact; only a weight used twice (tied embeddings) sums its two
// gradients in bf16 rather than fp32.
#pragma once

#include "trainer/checkpoint.h"

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <vector>

namespace torch::nn {
class Module;
}

namespace liger::trainer {

struct ComputeCopies {
  NamedTensors masters;            // the fp32 values, named as the model's parameters
  std::vector<at::Tensor> copies;  // the model's parameters, now `dtype`, in the same order
};

// Moves every parameter of `model` onto a `dtype` copy of its value. The
// fp32 tensors returned keep the parameters' storage (no copy of the fp32
// data), with their own version counters and no autograd history.
ComputeCopies move_to_compute_copies(torch::nn::Module& model, at::ScalarType dtype);
// The same for the given parameters only (what trains: LoRA's adapters and
// saved modules; the frozen base stays as it is).
ComputeCopies move_to_compute_copies(const NamedTensors& parameters, at::ScalarType dtype);

}  // namespace liger::trainer
