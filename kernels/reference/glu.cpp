// Reference gated activations: HF LlamaMLP (silu) and GemmaMLP
// (gelu_pytorch_tanh), computed in the input dtype like HF.
#include "kernels/checks.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>

namespace liger::kernels::reference {

// silu(gate) * up, silu(g) = g * sigmoid(g)
Tensor swiglu(const Tensor& gate, const Tensor& up) {
  checks::glu_args("swiglu", gate, up);
  return at::silu(gate) * up;
}

// gelu_tanh(gate) * up, gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
Tensor geglu(const Tensor& gate, const Tensor& up) {
  checks::glu_args("geglu", gate, up);
  return at::gelu(gate, "tanh") * up;
}

}  // namespace liger::kernels::reference
