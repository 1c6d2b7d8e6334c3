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

at::Tensor glu_forward(const kernels::KernelSet& k, GluKind kind, const at::Tensor& gate,
                       const at::Tensor& up) {
  return kind == GluKind::geglu ? k.geglu(gate, up) : k.swiglu(gate, up);
}

// Whether backward may write a gradient over `t`'s buffer: an intermediate
// the graph owns (not a leaf, not a view of another tensor).
bool graph_owned(const at::Tensor& t) { return t.requires_grad() && !t.is_leaf() && !t.is_view(); }

class RecomputedGluDownBackward : public Node {
 public:
  RecomputedGluDownBackward(const kernels::KernelSet* kernels, GluKind kind, const at::Tensor& gate,
                            const at::Tensor& up, const at::Tensor& weight)
      : kernels_(kernels),
        kind_(kind),
        gate_(gate, /*is_output=*/false),
        up_(up, /*is_output=*/false),
        weight_(weight, /*is_output=*/false),
        need_{gate.requires_grad(), up.requires_grad(), weight.requires_grad()},
        overwrite_(graph_owned(gate) && graph_owned(up)) {}

  std::string name() const override { return "RecomputedGluDownBackward"; }

  variable_list apply(variable_list&& grads) override {
    const at::Tensor& dy = grads[0];
    variable_list out(3);
    if (!dy.defined()) return out;
    TORCH_CHECK(!consumed_, "glu_down_projection_recomputed: backward ran a second time through the "
                "same graph, but the first one wrote the gradients over gate and up (to save "
                "memory); run backward once per forward (no retain_graph)");
    const at::Tensor gate = gate_.unpack(), up = up_.unpack(), weight = weight_.unpack();
    const at::Tensor dy2 = dy.reshape({-1, dy.size(-1)});  // [tokens, hidden]
    at::Tensor h;
    if (need_[0] || need_[1]) {
      const at::Tensor dh = at::mm(dy2, weight).view(gate.sizes());  // dh = dy W
      const kernels::GluRecomputed r =
          kind_ == GluKind::geglu ? kernels_->geglu_recompute(gate, up, dh, overwrite_)
                                  : kernels_->swiglu_recompute(gate, up, dh, overwrite_);
      consumed_ = overwrite_;
      h = r.h;
      if (need_[0]) out[0] = r.d_gate;
      if (need_[1]) out[1] = r.d_up;
    } else if (need_[2]) {
      torch::NoGradGuard no_grad;
      h = glu_forward(*kernels_, kind_, gate, up);
    }
    if (need_[2]) {
      // dW = dy^T h (fp32 accumulation in the GEMM)
      out[2] = at::mm(dy2.t(), h.reshape({-1, h.size(-1)})).to(weight.scalar_type());
    }
    return out;
  }

  void release_variables() override {
    gate_.reset_data();
    up_.reset_data();
    weight_.reset_data();
  }

 private:
  const kernels::KernelSet* kernels_;
  GluKind kind_;
  SavedVariable gate_, up_, weight_;
  bool need_[3];
  bool overwrite_;
  bool consumed_ = false;
};

}  // namespace

at::Tensor glu_down_projection_recomputed(const kernels::KernelSet& kernels, GluKind kind,
                                          const at::Tensor& gate, const at::Tensor& up,
                                          const at::Tensor& weight) {
  TORCH_CHECK(gate.sizes() == up.sizes(), "glu_down_projection_recomputed: gate ", gate.sizes(), " and up ",
              up.sizes(), " differ");
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == gate.size(-1), "glu_down_projection_recomputed: weight ",
              weight.sizes(), " does not take ", gate.size(-1), " inputs");
  at::Tensor y;
  {
    torch::NoGradGuard no_grad;  // h lives only for this product
    y = torch::linear(glu_forward(kernels, kind, gate, up), weight);
  }
  if (torch::autograd::compute_requires_grad(gate, up, weight)) {
    auto node = std::make_shared<RecomputedGluDownBackward>(&kernels, kind, gate, up, weight);
    node->set_next_edges(torch::autograd::collect_next_edges(gate, up, weight));
    torch::autograd::set_history(y, node);
  }
  return y;
}

}  // namespace liger::models
