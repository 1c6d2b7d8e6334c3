// liger::nn::CrossEntropyLoss and FusedLinearCrossEntropyLoss: torch::nn
// modules around the cross_entropy and fused_linear_cross_entropy ops, their
// backend chosen by the registry for the input's device and dtype
// (kernels/nn/functional.h). The fused one takes the lm_head's weight and the
// hidden states and never holds the [tokens, vocab] logits:
//   torch::nn::Linear lm_head(torch::nn::LinearOptions(128, 256).bias(false));
//   liger::nn::FusedLinearCrossEntropyLoss loss_fn;
//   torch::Tensor loss = loss_fn(lm_head->weight, hidden, target);  // hidden [..., 128]
#pragma once

#include "kernels/ops.h"

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

namespace liger::nn {

struct CrossEntropyLossOptions {
  // Targets equal to this count neither in the loss nor in the mean's denominator.
  TORCH_ARG(int64_t, ignore_index) = -100;
  // eps: (1 - eps) * CE + eps * mean over the vocabulary of -log p.
  TORCH_ARG(double, label_smoothing) = 0.0;
  // Adds z_loss_scale * lse^2 per counted token.
  TORCH_ARG(double, z_loss_scale) = 0.0;
  // > 0: logits <- softcap * tanh(logits / softcap) first (Gemma 2).
  TORCH_ARG(double, softcap) = 0.0;
  // mean over counted tokens, their sum, or the per-token loss (none: [N], 0 where ignored).
  TORCH_ARG(kernels::Reduction, reduction) = kernels::Reduction::mean;
  // true: the best fused backend for the input; false: the reference.
  TORCH_ARG(bool, fused) = true;
};

struct FusedLinearCrossEntropyLossOptions {
  TORCH_ARG(int64_t, ignore_index) = -100;
  TORCH_ARG(double, label_smoothing) = 0.0;
  TORCH_ARG(double, z_loss_scale) = 0.0;
  TORCH_ARG(double, softcap) = 0.0;
  TORCH_ARG(kernels::Reduction, reduction) = kernels::Reduction::mean;
  // The memory budget of one chunk of logits, in fp32 MiB.
  TORCH_ARG(double, chunk_mb) = 256.0;
  TORCH_ARG(bool, fused) = true;
};

class CrossEntropyLossImpl : public torch::nn::Cloneable<CrossEntropyLossImpl> {
 public:
  explicit CrossEntropyLossImpl(const CrossEntropyLossOptions& options = {});

  void reset() override {}
  void pretty_print(std::ostream& stream) const override;
  // logits: [..., V] (any float dtype), target: [...] int64. The loss is fp32.
  at::Tensor forward(const at::Tensor& logits, const at::Tensor& target);

  CrossEntropyLossOptions options;
};

class FusedLinearCrossEntropyLossImpl
    : public torch::nn::Cloneable<FusedLinearCrossEntropyLossImpl> {
 public:
  explicit FusedLinearCrossEntropyLossImpl(const FusedLinearCrossEntropyLossOptions& options = {});

  void reset() override {}
  void pretty_print(std::ostream& stream) const override;
  // cross_entropy(input @ weight^T + bias, target), Liger-Kernel's argument
  // order. weight: [V, H] in input's dtype, input: [..., H], target: [...]
  // int64, bias: [V] or undefined. The loss is fp32.
  at::Tensor forward(const at::Tensor& weight, const at::Tensor& input, const at::Tensor& target,
                     const at::Tensor& bias = {});

  FusedLinearCrossEntropyLossOptions options;
};

TORCH_MODULE(CrossEntropyLoss);
TORCH_MODULE(FusedLinearCrossEntropyLoss);

}  // namespace liger::nn
