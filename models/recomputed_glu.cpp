#include "models/recomputed_glu.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/torch.h>

namespace liger::models {
namespace {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

class RecomputedGluDownBackward : public Node {
 public:
  RecomputedGluDownBackward(GluOp glu, const at::Tensor& gate, const at::Tensor& up, const at::Tensor& weight,
                            bool need_gate, bool need_up, bool need_weight)
      : glu_(std::move(glu)),
        gate_(gate, /*is_output=*/false),
        up_(up, /*is_output=*/false),
        weight_(weight, /*is_output=*/false),
        need_{need_gate, need_up, need_weight} {}

  std::string name() const override { return "RecomputedGluDownBackward"; }

  variable_list apply(variable_list&& grads) override {
    const at::Tensor& dy = grads[0];
    const at::Tensor gate = gate_.unpack(), up = up_.unpack(), weight = weight_.unpack();
    variable_list out(3);
    if (!dy.defined()) return out;
    // Recompute h with its own autograd graph (the GLU kernel's backward).
    at::Tensor gate_in = gate.detach().requires_grad_(need_[0]);
    at::Tensor up_in = up.detach().requires_grad_(need_[1]);
    at::Tensor h;
    {
      torch::AutoGradMode grad_mode(need_[0] || need_[1]);
      h = glu_(gate_in, up_in);
    }
    const at::Tensor dy2 = dy.reshape({-1, dy.size(-1)});        // [tokens, hidden]
    const at::Tensor h2 = h.detach().reshape({-1, h.size(-1)});  // [tokens, intermediate]
    if (need_[2]) out[2] = at::mm(dy2.t(), h2).to(weight.scalar_type());  // dW = dy^T h (fp32 accumulation in the GEMM)
    if (need_[0] || need_[1]) {
      const at::Tensor dh = at::mm(dy2, weight).view(h.sizes());  // dh = dy W
      std::vector<at::Tensor> inputs;
      if (need_[0]) inputs.push_back(gate_in);
      if (need_[1]) inputs.push_back(up_in);
      const variable_list d = torch::autograd::grad({h}, inputs, {dh});
      size_t next = 0;
      if (need_[0]) out[0] = d[next++];
      if (need_[1]) out[1] = d[next++];
    }
    return out;
  }

  void release_variables() override {
    gate_.reset_data();
    up_.reset_data();
    weight_.reset_data();
  }

 private:
  GluOp glu_;
  SavedVariable gate_, up_, weight_;
  bool need_[3];
};

}  // namespace

at::Tensor glu_down_projection_recomputed(const GluOp& glu, const at::Tensor& gate, const at::Tensor& up,
                                          const at::Tensor& weight) {
  TORCH_CHECK(gate.sizes() == up.sizes(), "glu_down_projection_recomputed: gate ", gate.sizes(), " and up ",
              up.sizes(), " differ");
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == gate.size(-1), "glu_down_projection_recomputed: weight ",
              weight.sizes(), " does not take ", gate.size(-1), " inputs");
  at::Tensor y;
  {
    torch::NoGradGuard no_grad;  // h lives only for this product
    y = torch::linear(glu(gate, up), weight);
  }
  if (torch::autograd::compute_requires_grad(gate, up, weight)) {
    auto node = std::make_shared<RecomputedGluDownBackward>(glu, gate, up, weight, gate.requires_grad(),
                                                            up.requires_grad(), weight.requires_grad());
    node->set_next_edges(torch::autograd::collect_next_edges(gate, up, weight));
    torch::autograd::set_history(y, node);
  }
  return y;
}

}  // namespace liger::models
