// Composite gated activations: save gate and up only, recompute the
// activation in backward (fp32 math there).
#include "kernels/checks.h"
#include "kernels/composite/composite.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

namespace liger::kernels::composite {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

enum class Activation : int64_t { silu, gelu_tanh };

constexpr double kGeluK = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluA = 0.044715;

// out = act(gate) * up, in the input dtype (the same ops as the reference).
// Backward (fp32): d_up = dy * act(gate), d_gate = dy * up * act'(gate), with
//   silu(g)  = g s,  s = sigmoid(g)         silu'(g) = s (1 + g (1 - s))
//   gelu(g)  = 0.5 g (1 + t), t = tanh(K (g + A g^3))
//   gelu'(g) = 0.5 (1 + t) + 0.5 g (1 - t^2) K (1 + 3 A g^2)
struct GluFunction : public torch::autograd::Function<GluFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& gate, const Tensor& up,
                        int64_t activation) {
    ctx->save_for_backward({gate, up});
    ctx->saved_data["activation"] = activation;
    const Tensor act = static_cast<Activation>(activation) == Activation::silu
                           ? at::silu(gate)
                           : at::gelu(gate, "tanh");
    return act * up;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& gate = saved[0];
    const Tensor& up = saved[1];
    const auto activation = static_cast<Activation>(ctx->saved_data["activation"].toInt());

    // cast: backward math in fp32
    const Tensor g = gate.to(at::kFloat);
    const Tensor dy = grad_outputs[0].to(at::kFloat);
    Tensor act, dact;
    if (activation == Activation::silu) {
      const Tensor s = at::sigmoid(g);
      act = g * s;
      dact = s * (1.0 + g * (1.0 - s));
    } else {
      const Tensor t = at::tanh(kGeluK * (g + kGeluA * g * g * g));
      act = 0.5 * g * (1.0 + t);
      dact = 0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * kGeluK * (1.0 + 3.0 * kGeluA * g * g);
    }
    Tensor d_gate, d_up;
    if (ctx->needs_input_grad(0)) {
      d_gate = (dy * up.to(at::kFloat) * dact).to(gate.scalar_type());  // cast: to gate's dtype
    }
    if (ctx->needs_input_grad(1)) {
      d_up = (dy * act).to(up.scalar_type());  // cast: to up's dtype
    }
    return {d_gate, d_up, Tensor()};
  }
};

}  // namespace

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  checks::glu_args("swiglu", gate, up);
  return GluFunction::apply(gate, up, static_cast<int64_t>(Activation::silu));
}

Tensor geglu(const Tensor& gate, const Tensor& up) {
  checks::glu_args("geglu", gate, up);
  return GluFunction::apply(gate, up, static_cast<int64_t>(Activation::gelu_tanh));
}

GluRecomputed swiglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh, bool) {
  return reference::recompute_by_autograd(&swiglu, gate, up, dh);
}

GluRecomputed geglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh, bool) {
  return reference::recompute_by_autograd(&geglu, gate, up, dh);
}

}  // namespace liger::kernels::composite
