#include "kernels/nn/rms_norm.h"

#include "kernels/nn/functional.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

namespace liger::nn {

RMSNormImpl::RMSNormImpl(const RMSNormOptions& options_) : options(options_) {
  reset();
}

void RMSNormImpl::reset() {
  TORCH_CHECK(options.hidden_size() > 0, "liger::nn::RMSNorm: hidden_size must be positive, got ",
              options.hidden_size());
  weight = register_parameter("weight", torch::empty({options.hidden_size()}));
  reset_parameters();
}

void RMSNormImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  weight.fill_(1.0 - options.offset());
}

void RMSNormImpl::pretty_print(std::ostream& stream) const {
  stream << "liger::nn::RMSNorm(" << options.hidden_size() << ", eps=" << options.eps()
         << ", offset=" << options.offset() << ")";
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  kernels::RmsNormOptions op_options;
  op_options.eps = options.eps();
  op_options.offset = options.offset();
  op_options.casting = options.casting();
  return functional::rms_norm(x, weight, op_options, options.fused());
}

}  // namespace liger::nn
