// The values of one AdamW update that change from step to step, as the fused
// kernel (kernels/cuda/adamw.cu) reads them from device memory instead of its
// launch arguments: a captured CUDA graph replays every launch with the
// arguments it was captured with, so a learning rate, a bias correction or a
// rounding key that moves per step must come from memory the host rewrites
// before each replay. Torch-free: the host side (kernels/optim.h) and the
// launchers (kernels/cuda/launchers.h) share it.
#pragma once

#include <cstdint>

namespace liger::kernels {

struct AdamWStepValues {
  float decay = 1.f;                      // 1 - lr * weight_decay
  float step_size = 0.f;                  // lr / (1 - beta1^t)
  float inv_bias_correction2_sqrt = 1.f;  // 1 / sqrt(1 - beta2^t)
  uint32_t key_lo = 0, key_hi = 0;        // stochastic rounding key of (seed, tensor, t)
};
static_assert(sizeof(AdamWStepValues) == 20, "AdamWStepValues is copied to the device as 20 bytes");

}  // namespace liger::kernels
