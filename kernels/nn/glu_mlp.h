// liger::nn::SwiGLUMLP and GeGLUMLP: the gated MLP of Llama-style blocks,
//   down_proj(act(gate_proj(x)) * up_proj(x)),  act = silu (SwiGLU) or gelu_tanh (GeGLU),
// with the product act(gate) * up from the swiglu / geglu op, its backend
// chosen by the registry for the input's device and dtype
// (kernels/nn/functional.h). The projections are torch::nn::Linear.
//   liger::nn::SwiGLUMLP mlp(liger::nn::SwiGLUMLPOptions(512, 1376));
#pragma once

#include "kernels/op_list.h"

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

namespace liger::nn {

struct GLUMLPOptions {
  GLUMLPOptions(int64_t hidden_size, int64_t intermediate_size)
      : hidden_size_(hidden_size), intermediate_size_(intermediate_size) {}
  TORCH_ARG(int64_t, hidden_size);        // x's last dimension, and the output's
  TORCH_ARG(int64_t, intermediate_size);  // the gate's and up's width
  // Biases on the three projections (Llama has none).
  TORCH_ARG(bool, bias) = false;
  // true: the best fused backend for the input; false: the reference.
  TORCH_ARG(bool, fused) = true;
};
using SwiGLUMLPOptions = GLUMLPOptions;
using GeGLUMLPOptions = GLUMLPOptions;

// kActivation: kernels::Op::swiglu or kernels::Op::geglu.
template <kernels::Op kActivation>
class GLUMLPImpl : public torch::nn::Cloneable<GLUMLPImpl<kActivation>> {
 public:
  GLUMLPImpl(int64_t hidden_size, int64_t intermediate_size)
      : GLUMLPImpl(GLUMLPOptions(hidden_size, intermediate_size)) {}
  explicit GLUMLPImpl(const GLUMLPOptions& options);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  // x: [..., hidden_size]. Returns [..., hidden_size] in x's dtype.
  at::Tensor forward(const at::Tensor& x);

  GLUMLPOptions options;
  torch::nn::Linear gate_proj{nullptr};  // hidden_size -> intermediate_size
  torch::nn::Linear up_proj{nullptr};    // hidden_size -> intermediate_size
  torch::nn::Linear down_proj{nullptr};  // intermediate_size -> hidden_size
};

// Defined in glu_mlp.cpp for these two activations only.
extern template class GLUMLPImpl<kernels::Op::swiglu>;
extern template class GLUMLPImpl<kernels::Op::geglu>;

using SwiGLUMLPImpl = GLUMLPImpl<kernels::Op::swiglu>;
using GeGLUMLPImpl = GLUMLPImpl<kernels::Op::geglu>;
TORCH_MODULE(SwiGLUMLP);
TORCH_MODULE(GeGLUMLP);

}  // namespace liger::nn
