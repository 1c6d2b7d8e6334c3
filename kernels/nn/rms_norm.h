// liger::nn::RMSNorm: a torch::nn module around the rms_norm op, its backend
// chosen by the registry for the input's device and dtype
// (kernels/nn/functional.h).
//   liger::nn::RMSNorm norm(liger::nn::RMSNormOptions(4096).eps(1e-5));
//   y = norm(x);  // x: [..., 4096]
#pragma once

#include "kernels/ops.h"

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

namespace liger::nn {

struct RMSNormOptions {
  /* implicit */ RMSNormOptions(int64_t hidden_size) : hidden_size_(hidden_size) {}
  // The size of the normalised (last) dimension and of the weight.
  TORCH_ARG(int64_t, hidden_size);
  TORCH_ARG(double, eps) = 1e-6;
  // y = x_normalised * (offset + weight): Gemma stores weight - 1 and uses offset 1.
  TORCH_ARG(double, offset) = 0.0;
  // Where the op casts to the input dtype (llama, gemma, none: see kernels/ops.h).
  TORCH_ARG(kernels::RmsNormCasting, casting) = kernels::RmsNormCasting::llama;
  // true: the best fused backend for the input; false: the reference.
  TORCH_ARG(bool, fused) = true;
};

class RMSNormImpl : public torch::nn::Cloneable<RMSNormImpl> {
 public:
  RMSNormImpl(int64_t hidden_size) : RMSNormImpl(RMSNormOptions(hidden_size)) {}
  explicit RMSNormImpl(const RMSNormOptions& options);

  void reset() override;
  // weight = 1 - offset, so that offset + weight starts at 1 (the identity scale).
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;
  // x: [..., hidden_size]. Returns x's shape and dtype.
  at::Tensor forward(const at::Tensor& x);

  RMSNormOptions options;
  at::Tensor weight;  // [hidden_size]
};

TORCH_MODULE(RMSNorm);

}  // namespace liger::nn
