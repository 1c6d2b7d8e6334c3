// Optimizer updates the trainer calls through kernels/. One function per rule,
// served by the fused CUDA kernel (kernels/cuda/adamw.cu) when this build has
// CUDA and the tensors are on a CUDA device, else by ATen ops on any device
// (the reference). Both paths do the same fp32 math and draw the same random
// bits; they may differ in the last fp32 bit (operation order), so a
// stochastically rounded element lands on the other bf16 neighbour about
// once in 2^16 draws.
#pragma once

#include "kernels/adamw_step_values.h"

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace liger::kernels {

using at::Tensor;

struct AdamWStepOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;  // decoupled: p <- p (1 - lr weight_decay) before the update
  int64_t step = 1;           // this tensor's update count, 1-based (bias correction)
  // bf16 parameters: the new value is rounded to bf16 stochastically (up with
  // probability equal to the fractional distance, so E[p] is the fp32 result
  // and updates below bf16 resolution survive in expectation). Otherwise, and
  // for fp32/fp16 parameters, to nearest. exp_avg/exp_avg_sq: to nearest.
  bool stochastic_rounding = true;
  // The random bits of element i are a hash of (seed, stream, step, i):
  // reproducible for a seed, different per element, tensor and step.
  // `stream` tells the tensors of one optimizer apart (e.g. their index).
  uint64_t seed = 0;
  uint64_t stream = 0;
  // Optional fp32 scalar on the parameter's device multiplying every gradient
  // element (gradient clipping without a pass over the gradients); undefined = 1.
  at::Tensor grad_scale;
  // Optional: device memory (uint8, sizeof(AdamWStepValues) bytes, 4-byte
  // aligned, on the parameter's device) holding adamw_step_values() of this
  // step. The fused kernel then reads lr, step and key from there rather than
  // from the fields above, so a CUDA graph that captured the launch replays
  // later steps correctly once the host has rewritten that memory. Needs the
  // fused CUDA kernel (a contiguous CUDA parameter); the fields above must
  // still describe the same step (the ATen path and the checks use them).
  at::Tensor step_values;
  // Optional: the parameter's 16-bit compute copy (mixed precision: an fp32
  // parameter, a contiguous bf16/fp16 tensor of its numel on its device). The
  // update writes the new value into it too, cast to nearest: the same bits
  // as param.to(copy dtype) afterwards, without a separate cast pass.
  at::Tensor compute_copy;
};

// The step-dependent values the fused kernel computes from `options` (lr,
// weight_decay, betas, step, seed, stream), rounded to fp32 exactly as it
// rounds them.
AdamWStepValues adamw_step_values(const AdamWStepOptions& options);

enum class OptimPath {
  automatic,  // the fused CUDA kernel where it can run, else ATen
  aten,       // always the ATen ops (the reference)
};

// One AdamW step of torch.optim.AdamW (decoupled weight decay, bias
// correction), in place: param, exp_avg and exp_avg_sq are updated. Math in
// fp32 whatever the storage dtypes. param: float32, bfloat16 or float16;
// exp_avg, exp_avg_sq: param's dtype, contiguous; grad: param's dtype,
// float32, or for an fp32 param bfloat16/float16 (the gradient of its compute
// copy). All of the same numel, on one device. Throws c10::Error otherwise.
void adamw_step(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                const Tensor& exp_avg_sq, const AdamWStepOptions& options,
                OptimPath path = OptimPath::automatic);

// One tensor's AdamW step, as adamw_step takes it.
struct AdamWUpdate {
  Tensor param, grad, exp_avg, exp_avg_sq;
  AdamWStepOptions options;
};

// adamw_step for every update, with the same checks (all of them before any
// tensor changes) and the same results bit for bit as calling adamw_step on
// each in turn. On CUDA (path automatic) the contiguous, 16-byte aligned
// tensors of a device, dtype combination (parameter, gradient, compute copy),
// rounding, betas, eps and grad_scale go through the multi-tensor kernel, up
// to kAdamWTableTensors (kernels/cuda/launchers.h) per launch, on the current
// stream; the others, and every CPU tensor, through adamw_step. The
// parameters must not overlap one another (a repeated parameter is refused).
void adamw_step_many(const std::vector<AdamWUpdate>& updates,
                     OptimPath path = OptimPath::automatic);

// x (any floating dtype; the math is on its fp32 value) rounded to bf16
// stochastically with the bits adamw_step would use for a tensor of x's
// numel with this (seed, stream, step), flat index in row-major order.
// ATen ops, any device. For tests and for checking the kernel.
Tensor stochastic_round_bf16(const Tensor& x, uint64_t seed, uint64_t stream, int64_t step);

}  // namespace liger::kernels
