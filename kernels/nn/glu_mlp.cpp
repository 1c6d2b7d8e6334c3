#include "kernels/nn/glu_mlp.h"

#include "kernels/nn/functional.h"

#include <c10/util/Exception.h>

namespace liger::nn {

namespace {

const char* module_name(kernels::Op activation) {
  return activation == kernels::Op::swiglu ? "liger::nn::SwiGLUMLP" : "liger::nn::GeGLUMLP";
}

}  // namespace

template <kernels::Op kActivation>
GLUMLPImpl<kActivation>::GLUMLPImpl(const GLUMLPOptions& options_) : options(options_) {
  reset();
}

template <kernels::Op kActivation>
void GLUMLPImpl<kActivation>::reset() {
  TORCH_CHECK(options.hidden_size() > 0 && options.intermediate_size() > 0,
              module_name(kActivation),
              ": hidden_size and intermediate_size must be positive, got ", options.hidden_size(),
              " and ", options.intermediate_size());
  const auto linear = [&](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(options.bias()));
  };
  gate_proj = this->register_module("gate_proj",
                                    linear(options.hidden_size(), options.intermediate_size()));
  up_proj =
      this->register_module("up_proj", linear(options.hidden_size(), options.intermediate_size()));
  down_proj = this->register_module("down_proj",
                                    linear(options.intermediate_size(), options.hidden_size()));
}

template <kernels::Op kActivation>
void GLUMLPImpl<kActivation>::pretty_print(std::ostream& stream) const {
  stream << module_name(kActivation) << "(hidden_size=" << options.hidden_size()
         << ", intermediate_size=" << options.intermediate_size()
         << ", bias=" << (options.bias() ? "true" : "false") << ")";
}

template <kernels::Op kActivation>
at::Tensor GLUMLPImpl<kActivation>::forward(const at::Tensor& x) {
  const at::Tensor gate = gate_proj->forward(x);
  const at::Tensor up = up_proj->forward(x);
  const at::Tensor product = kActivation == kernels::Op::swiglu
                                 ? functional::swiglu(gate, up, options.fused())
                                 : functional::geglu(gate, up, options.fused());
  return down_proj->forward(product);
}

template class GLUMLPImpl<kernels::Op::swiglu>;
template class GLUMLPImpl<kernels::Op::geglu>;

}  // namespace liger::nn
