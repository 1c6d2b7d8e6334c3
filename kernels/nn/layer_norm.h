// liger::nn::LayerNorm: a torch::nn module around the layer_norm op, its
// backend chosen by the registry for the input's device and dtype
// (kernels/nn/functional.h).
//   liger::nn::LayerNorm norm(liger::nn::LayerNormOptions(768).eps(1e-5).bias(false));
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

namespace liger::nn {

struct LayerNormOptions {
  /* implicit */ LayerNormOptions(int64_t hidden_size) : hidden_size_(hidden_size) {}
  // The size of the normalised (last) dimension, of the weight and of the bias.
  TORCH_ARG(int64_t, hidden_size);
  TORCH_ARG(double, eps) = 1e-5;
  // Whether the module has a bias (zeros at first).
  TORCH_ARG(bool, bias) = true;
  // true: the best fused backend for the input; false: the reference.
  TORCH_ARG(bool, fused) = true;
};

class LayerNormImpl : public torch::nn::Cloneable<LayerNormImpl> {
 public:
  LayerNormImpl(int64_t hidden_size) : LayerNormImpl(LayerNormOptions(hidden_size)) {}
  explicit LayerNormImpl(const LayerNormOptions& options);

  void reset() override;
  // weight = 1, bias = 0.
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;
  // x: [..., hidden_size]. Returns x's shape and dtype.
  at::Tensor forward(const at::Tensor& x);

  LayerNormOptions options;
  at::Tensor weight;  // [hidden_size]
  at::Tensor bias;    // [hidden_size], or undefined without bias
};

TORCH_MODULE(LayerNorm);

}  // namespace liger::nn
