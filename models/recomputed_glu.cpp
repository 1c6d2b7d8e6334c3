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

// [..., n] as [rows, n]
at::Tensor rows(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}); }

enum Input { kX, kGateWeight, kUpWeight, kDownWeight, kResidual, kInputs };

class RecomputedGluMlpBackward : public Node {
 public:
  RecomputedGluMlpBackward(const kernels::KernelSet* kernels, GluKind kind, const at::Tensor& x,
                           const at::Tensor& gate_weight, const at::Tensor& up_weight,
                           const at::Tensor& down_weight, const at::Tensor& residual, at::Tensor gate,
                           at::Tensor up)
      : kernels_(kernels),
        kind_(kind),
        x_(x, /*is_output=*/false),
        gate_weight_(gate_weight, false),
        up_weight_(up_weight, false),
        down_weight_(down_weight, false),
        gate_(std::move(gate)),
        up_(std::move(up)),
        need_{x.requires_grad(), gate_weight.requires_grad(), up_weight.requires_grad(),
              down_weight.requires_grad(), residual.defined() && residual.requires_grad()} {}

  std::string name() const override { return "RecomputedGluMlpBackward"; }

  variable_list apply(variable_list&& grads) override {
    const at::Tensor& dy = grads[0];
    variable_list out(kInputs);
    if (!dy.defined()) return out;
    TORCH_CHECK(!consumed_, "glu_mlp_recomputed: backward ran a second time through the same graph, but "
                "the first one wrote the gradients over gate and up (to save memory); run backward "
                "once per forward (no retain_graph)");
    if (need_[kResidual]) out[kResidual] = dy;  // y = residual + ...: its gradient is dy itself
    const bool need_glu = need_[kX] || need_[kGateWeight] || need_[kUpWeight];
    if (!need_glu && !need_[kDownWeight]) return out;
    const at::Tensor x = rows(x_.unpack()), down_weight = down_weight_.unpack();
    const at::Tensor dy2 = rows(dy);  // [tokens, hidden]
    at::Tensor h, d_gate, d_up;
    if (need_glu) {
      const at::Tensor dh = kernels_->matmul(dy2, down_weight);  // dh = dy Wd
      // gate and up are this node's (made under no_grad in forward): overwritten in place.
      const kernels::GluRecomputed r = kind_ == GluKind::geglu ? kernels_->geglu_recompute(gate_, up_, dh, true)
                                                               : kernels_->swiglu_recompute(gate_, up_, dh, true);
      consumed_ = true;
      h = r.h;
      d_gate = r.d_gate;
      d_up = r.d_up;
    } else {
      torch::NoGradGuard no_grad;
      h = glu_forward(*kernels_, kind_, gate_, up_);
    }
    // Weight gradients: dW = dout^T in (fp32 accumulation inside the GEMMs).
    if (need_[kDownWeight]) out[kDownWeight] = kernels_->matmul(dy2.t(), h).to(down_weight.scalar_type());
    if (need_[kGateWeight]) out[kGateWeight] = kernels_->matmul(d_gate.t(), x);
    if (need_[kUpWeight]) out[kUpWeight] = kernels_->matmul(d_up.t(), x);
    if (need_[kX]) {
      at::Tensor dx = kernels_->matmul(d_gate, gate_weight_.unpack());
      kernels_->matmul(d_up, up_weight_.unpack(), dx, dx);  // dx += dup Wu: beta = 1 in the GEMM, no separate add
      out[kX] = dx.view(x_.unpack().sizes());
    }
    return out;
  }

  void release_variables() override {
    x_.reset_data();
    gate_weight_.reset_data();
    up_weight_.reset_data();
    down_weight_.reset_data();
    gate_ = at::Tensor();
    up_ = at::Tensor();
  }

 private:
  const kernels::KernelSet* kernels_;
  GluKind kind_;
  SavedVariable x_, gate_weight_, up_weight_, down_weight_;
  at::Tensor gate_, up_;  // [tokens, intermediate], not graph tensors: this node's buffers
  bool need_[kInputs];
  bool consumed_ = false;
};

}  // namespace

at::Tensor glu_mlp_recomputed(const kernels::KernelSet& kernels, GluKind kind, const at::Tensor& x,
                              const at::Tensor& gate_weight, const at::Tensor& up_weight,
                              const at::Tensor& down_weight, const at::Tensor& residual) {
  const int64_t hidden = x.size(-1);
  TORCH_CHECK(gate_weight.dim() == 2 && gate_weight.sizes() == up_weight.sizes() && gate_weight.size(1) == hidden,
              "glu_mlp_recomputed: gate weight ", gate_weight.sizes(), " and up weight ", up_weight.sizes(),
              " must both be [intermediate, ", hidden, "]");
  TORCH_CHECK(down_weight.dim() == 2 && down_weight.size(1) == gate_weight.size(0),
              "glu_mlp_recomputed: down weight ", down_weight.sizes(), " does not take ", gate_weight.size(0),
              " inputs");
  std::vector<int64_t> shape = x.sizes().vec();  // the output's: x's with hidden -> down_weight's rows
  shape.back() = down_weight.size(0);
  TORCH_CHECK(!residual.defined() || residual.sizes() == at::IntArrayRef(shape), "glu_mlp_recomputed: residual ",
              residual.sizes(), " does not match the output ", at::IntArrayRef(shape));
  at::Tensor gate, up, y;
  {
    torch::NoGradGuard no_grad;  // h lives only for this product; gate and up go to the node
    const at::Tensor x2 = rows(x);
    gate = kernels.matmul(x2, gate_weight.t());
    up = kernels.matmul(x2, up_weight.t());
    const at::Tensor h = glu_forward(kernels, kind, gate, up);
    y = kernels.matmul(h, down_weight.t(), residual.defined() ? rows(residual) : at::Tensor());  // residual + h Wd^T in one GEMM
    y = at::_unsafe_view(y, shape);  // not an autograd view: the node below becomes its history
  }
  if (torch::autograd::compute_requires_grad(x, gate_weight, up_weight, down_weight, residual)) {
    // An undefined residual still takes its edge slot (an empty edge).
    auto node = std::make_shared<RecomputedGluMlpBackward>(&kernels, kind, x, gate_weight, up_weight, down_weight,
                                                           residual, std::move(gate), std::move(up));
    node->set_next_edges(torch::autograd::collect_next_edges(x, gate_weight, up_weight, down_weight, residual));
    torch::autograd::set_history(y, node);
  }
  return y;
}

}  // namespace liger::models
