#include "kernels/nn/layer_norm.h"

#include "kernels/nn/functional.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

namespace liger::nn {

LayerNormImpl::LayerNormImpl(const LayerNormOptions& options_) : options(options_) {
  reset();
}

void LayerNormImpl::reset() {
  TORCH_CHECK(options.hidden_size() > 0, "liger::nn::LayerNorm: hidden_size must be positive, got ",
              options.hidden_size());
  weight = register_parameter("weight", torch::empty({options.hidden_size()}));
  bias = options.bias() ? register_parameter("bias", torch::empty({options.hidden_size()}))
                        : at::Tensor();
  reset_parameters();
}

void LayerNormImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  weight.fill_(1.0);
  if (bias.defined()) bias.zero_();
}

void LayerNormImpl::pretty_print(std::ostream& stream) const {
  stream << "liger::nn::LayerNorm(" << options.hidden_size() << ", eps=" << options.eps()
         << ", bias=" << (options.bias() ? "true" : "false") << ")";
}

at::Tensor LayerNormImpl::forward(const at::Tensor& x) {
  return functional::layer_norm(x, weight, bias, options.eps(), options.fused());
}

}  // namespace liger::nn
