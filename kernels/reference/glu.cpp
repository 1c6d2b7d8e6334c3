// Reference gated activations: HF LlamaMLP (silu) and GemmaMLP
// (gelu_pytorch_tanh), computed in the input dtype like HF.
#include "kernels/checks.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

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

GluRecomputed recompute_by_autograd(GluFn glu, const Tensor& gate, const Tensor& up,
                                    const Tensor& dh) {
  TORCH_CHECK(dh.sizes() == gate.sizes(), "glu backward: dh has shape ", dh.sizes(),
              " but gate has shape ", gate.sizes());
  const Tensor g = gate.detach().requires_grad_(true), u = up.detach().requires_grad_(true);
  Tensor h;
  {
    at::AutoGradMode grad_mode(true);
    h = glu(g, u);
  }
  const auto grads = torch::autograd::grad({h}, {g, u}, {dh});
  return {h.detach(), grads[0], grads[1]};
}

GluRecomputed swiglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh, bool) {
  return recompute_by_autograd(&swiglu, gate, up, dh);
}

GluRecomputed geglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh, bool) {
  return recompute_by_autograd(&geglu, gate, up, dh);
}

}  // namespace liger::kernels::reference
