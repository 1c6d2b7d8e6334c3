#include "models/recomputed_glu.h"

#include "models/lora.h"

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
at::Tensor rows(const at::Tensor& t) {
  return t.reshape({-1, t.size(-1)});
}

enum Input {
  kX,
  kGateWeight,
  kUpWeight,
  kDownWeight,
  kResidual,
  // LoRA adapters (undefined = none: an empty edge)
  kGateA,
  kGateB,
  kUpA,
  kUpB,
  kDownA,
  kDownB,
  kInputs
};

// The adapter tensors of one GLU MLP, in compute dtype (undefined where a projection has none).
struct MlpLora {
  at::Tensor gate_a, gate_b, up_a, up_b, down_a, down_b;
  double scaling = 1.0, dropout = 0.0;
  at::Tensor x_mask, h_mask;  // dropout's masks on x (gate|up adapters) and h (down), or undefined
  bool gate_or_up() const { return gate_a.defined() || up_a.defined(); }
};

// dropout(t) with `mask` (t's shape), or t.
at::Tensor dropped(const at::Tensor& t, const at::Tensor& mask, double p) {
  return mask.defined() ? apply_lora_dropout(t, mask, p) : t;
}

class RecomputedGluMlpBackward : public Node {
 public:
  RecomputedGluMlpBackward(const kernels::KernelSet* kernels, GluKind kind, const at::Tensor& x,
                           const at::Tensor& gate_weight, const at::Tensor& up_weight,
                           const at::Tensor& down_weight, const at::Tensor& residual,
                           at::Tensor gate, at::Tensor up, const MlpLora& lora,
                           at::Tensor u_gate_up, at::Tensor u_down)
      : kernels_(kernels),
        kind_(kind),
        x_(x, /*is_output=*/false),
        gate_weight_(gate_weight, false),
        up_weight_(up_weight, false),
        down_weight_(down_weight, false),
        gate_(std::move(gate)),
        up_(std::move(up)),
        need_{x.requires_grad(),
              gate_weight.requires_grad(),
              up_weight.requires_grad(),
              down_weight.requires_grad(),
              residual.defined() && residual.requires_grad(),
              lora.gate_a.defined() && lora.gate_a.requires_grad(),
              lora.gate_b.defined() && lora.gate_b.requires_grad(),
              lora.up_a.defined() && lora.up_a.requires_grad(),
              lora.up_b.defined() && lora.up_b.requires_grad(),
              lora.down_a.defined() && lora.down_a.requires_grad(),
              lora.down_b.defined() && lora.down_b.requires_grad()},
        lora_(lora),
        u_gate_up_(std::move(u_gate_up)),
        u_down_(std::move(u_down)) {}

  std::string name() const override { return "RecomputedGluMlpBackward"; }

  variable_list apply(variable_list&& grads) override {
    const at::Tensor& dy = grads[0];
    variable_list out(kInputs);
    if (!dy.defined()) return out;
    TORCH_CHECK(!consumed_,
                "glu_mlp_recomputed: backward ran a second time through the same graph, but "
                "the first one wrote the gradients over gate and up (to save memory); run backward "
                "once per forward (no retain_graph)");
    if (need_[kResidual]) out[kResidual] = dy;  // y = residual + ...: its gradient is dy itself
    const double s = lora_.scaling;
    const bool gate_up_adapters = lora_.gate_or_up();
    const bool need_glu = need_[kX] || need_[kGateWeight] || need_[kUpWeight] || need_[kGateA] ||
                          need_[kGateB] || need_[kUpA] || need_[kUpB];
    const bool need_down = need_[kDownWeight] || need_[kDownA] || need_[kDownB];
    if (!need_glu && !need_down) return out;
    const at::Tensor x = rows(x_.unpack()), down_weight = down_weight_.unpack();
    const at::Tensor dy2 = rows(dy);  // [tokens, hidden]
    // The down adapter: g_d = scaling * dy B_d [tokens, rank].
    at::Tensor g_down;
    if (lora_.down_a.defined() && (need_glu || need_[kDownA]))
      g_down = kernels_->matmul(dy2, lora_.down_b).mul_(s);
    at::Tensor h, d_gate, d_up;
    if (need_glu) {
      // dh = dy Wd (+ (g_d A_d) * mask / (1 - p): the adapter's part first, the base GEMM adds into
      // it)
      at::Tensor dh;
      if (g_down.defined()) {
        dh = dropped(kernels_->matmul(g_down, lora_.down_a), lora_.h_mask, lora_.dropout);
        kernels_->matmul(dy2, down_weight, dh, dh);
      } else {
        dh = kernels_->matmul(dy2, down_weight);
      }
      // gate and up are this node's (made under no_grad in forward): overwritten in place.
      const kernels::GluRecomputed r = kind_ == GluKind::geglu
                                           ? kernels_->geglu_recompute(gate_, up_, dh, true)
                                           : kernels_->swiglu_recompute(gate_, up_, dh, true);
      consumed_ = true;
      h = r.h;
      d_gate = r.d_gate;
      d_up = r.d_up;
    } else {
      torch::NoGradGuard no_grad;
      h = glu_forward(*kernels_, kind_, gate_, up_);
    }
    // Weight gradients: dW = dout^T in (fp32 accumulation inside the GEMMs);
    // a frozen weight (LoRA's base) costs none.
    if (need_[kDownWeight])
      out[kDownWeight] = kernels_->matmul(dy2.t(), h).to(down_weight.scalar_type());
    if (need_[kGateWeight]) out[kGateWeight] = kernels_->matmul(d_gate.t(), x);
    if (need_[kUpWeight]) out[kUpWeight] = kernels_->matmul(d_up.t(), x);
    // The down adapter: dA_d = g_d^T dropout(h), dB_d = dy^T u_d.
    if (need_[kDownA])
      out[kDownA] = kernels_->matmul(g_down.t(), dropped(h, lora_.h_mask, lora_.dropout));
    if (need_[kDownB]) out[kDownB] = kernels_->matmul(dy2.t(), u_down_);
    // The gate|up adapters: g = scaling * [dgate B_g | dup B_u], one column block each.
    at::Tensor g;
    std::vector<at::Tensor> a_list;
    if (gate_up_adapters && need_glu) {
      const int64_t r = (lora_.gate_a.defined() ? lora_.gate_a : lora_.up_a).size(0);
      int64_t blocks = 0;
      std::vector<std::pair<at::Tensor, at::Tensor>>
          parts;  // (d_out, B) per adapter, in gate, up order
      if (lora_.gate_a.defined()) {
        parts.emplace_back(d_gate, lora_.gate_b);
        a_list.push_back(lora_.gate_a);
      }
      if (lora_.up_a.defined()) {
        parts.emplace_back(d_up, lora_.up_b);
        a_list.push_back(lora_.up_a);
      }
      blocks = static_cast<int64_t>(parts.size());
      g = at::empty({x.size(0), blocks * r}, x.options());
      for (int64_t j = 0; j < blocks; ++j) {
        kernels_->matmul(parts[static_cast<size_t>(j)].first, parts[static_cast<size_t>(j)].second,
                         at::Tensor(), g.narrow(1, j * r, r));
      }
      g.mul_(s);
      // dA = g^T dropout(x): both A's in one GEMM, split by rows; dB_i = d_out_i^T u_i.
      if (need_[kGateA] || need_[kUpA]) {
        const at::Tensor da = kernels_->matmul(g.t(), dropped(x, lora_.x_mask, lora_.dropout));
        int64_t j = 0;
        if (lora_.gate_a.defined()) out[kGateA] = da.narrow(0, r * j++, r);
        if (lora_.up_a.defined()) out[kUpA] = da.narrow(0, r * j++, r);
      }
      int64_t j = 0;
      if (lora_.gate_a.defined()) {
        if (need_[kGateB])
          out[kGateB] = kernels_->matmul(d_gate.t(), u_gate_up_.narrow(1, r * j, r));
        ++j;
      }
      if (lora_.up_a.defined() && need_[kUpB])
        out[kUpB] = kernels_->matmul(d_up.t(), u_gate_up_.narrow(1, r * j, r));
    }
    if (need_[kX]) {
      at::Tensor dx;
      if (g.defined()) {
        // (g cat(A)) * mask / (1 - p) first; then dgate Wg and dup Wu accumulate into it.
        dx = dropped(kernels_->matmul(g, a_list.size() == 1 ? a_list[0] : at::cat(a_list, 0)),
                     lora_.x_mask, lora_.dropout);
        kernels_->matmul(d_gate, gate_weight_.unpack(), dx, dx);
      } else {
        dx = kernels_->matmul(d_gate, gate_weight_.unpack());
      }
      kernels_->matmul(d_up, up_weight_.unpack(), dx,
                       dx);  // dx += dup Wu: beta = 1 in the GEMM, no separate add
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
    lora_ = MlpLora();
    u_gate_up_ = at::Tensor();
    u_down_ = at::Tensor();
  }

 private:
  const kernels::KernelSet* kernels_;
  GluKind kind_;
  SavedVariable x_, gate_weight_, up_weight_, down_weight_;
  at::Tensor gate_, up_;  // [tokens, intermediate], not graph tensors: this node's buffers
  bool need_[kInputs];
  bool consumed_ = false;
  // LoRA: the adapters (small; plain tensors here, their edges carry the
  // autograd links), u = scaling * dropout(in) A^T of gate|up and of down.
  MlpLora lora_;
  at::Tensor u_gate_up_, u_down_;
};

at::Tensor adapter_of(const LoraOperands* lora, size_t i, bool a) {
  if (lora == nullptr) return at::Tensor();
  const std::vector<at::Tensor>& list = a ? lora->a : lora->b;
  return i < list.size() ? list[i] : at::Tensor();
}

}  // namespace

at::Tensor glu_mlp_recomputed(const kernels::KernelSet& kernels, GluKind kind, const at::Tensor& x,
                              const at::Tensor& gate_weight, const at::Tensor& up_weight,
                              const at::Tensor& down_weight, const at::Tensor& residual,
                              const LoraOperands* gate_up_lora, const LoraOperands* down_lora) {
  const int64_t hidden = x.size(-1);
  TORCH_CHECK(gate_weight.dim() == 2 && gate_weight.sizes() == up_weight.sizes() &&
                  gate_weight.size(1) == hidden,
              "glu_mlp_recomputed: gate weight ", gate_weight.sizes(), " and up weight ",
              up_weight.sizes(), " must both be [intermediate, ", hidden, "]");
  TORCH_CHECK(down_weight.dim() == 2 && down_weight.size(1) == gate_weight.size(0),
              "glu_mlp_recomputed: down weight ", down_weight.sizes(), " does not take ",
              gate_weight.size(0), " inputs");
  std::vector<int64_t> shape =
      x.sizes().vec();  // the output's: x's with hidden -> down_weight's rows
  shape.back() = down_weight.size(0);
  TORCH_CHECK(!residual.defined() || residual.sizes() == at::IntArrayRef(shape),
              "glu_mlp_recomputed: residual ", residual.sizes(), " does not match the output ",
              at::IntArrayRef(shape));
  MlpLora lora;
  lora.gate_a = adapter_of(gate_up_lora, 0, true);
  lora.gate_b = adapter_of(gate_up_lora, 0, false);
  lora.up_a = adapter_of(gate_up_lora, 1, true);
  lora.up_b = adapter_of(gate_up_lora, 1, false);
  lora.down_a = adapter_of(down_lora, 0, true);
  lora.down_b = adapter_of(down_lora, 0, false);
  const LoraOperands* any_lora =
      gate_up_lora != nullptr && gate_up_lora->any() ? gate_up_lora : down_lora;
  if (any_lora != nullptr) {
    lora.scaling = any_lora->scaling;
    lora.dropout = any_lora->dropout;
  }
  const double s = lora.scaling;

  at::Tensor gate, up, y, u_gate_up, u_down;
  {
    torch::NoGradGuard no_grad;  // h lives only for this product; gate and up go to the node
    const at::Tensor x2 = rows(x);
    if (lora.gate_or_up()) {
      if (gate_up_lora->dropout > 0.0) lora.x_mask = lora_dropout_mask(x2, lora.dropout);
      // u = scaling * dropout(x) cat(A_g, A_u)^T: one GEMM for both adapters.
      std::vector<at::Tensor> a_list;
      if (lora.gate_a.defined()) a_list.push_back(lora.gate_a);
      if (lora.up_a.defined()) a_list.push_back(lora.up_a);
      u_gate_up = kernels.matmul(dropped(x2, lora.x_mask, lora.dropout),
                                 (a_list.size() == 1 ? a_list[0] : at::cat(a_list, 0)).t());
      u_gate_up.mul_(s);
    }
    // A projection with an adapter: u_i B_i^T first, the base GEMM adds into it.
    const int64_t r =
        lora.gate_a.defined() ? lora.gate_a.size(0) : (lora.up_a.defined() ? lora.up_a.size(0) : 0);
    int64_t block = 0;
    auto project = [&](const at::Tensor& weight, const at::Tensor& b) {
      if (!b.defined()) return kernels.matmul(x2, weight.t());
      at::Tensor out = kernels.matmul(u_gate_up.narrow(1, r * block++, r), b.t());
      return kernels.matmul(x2, weight.t(), out, out);
    };
    gate = project(gate_weight, lora.gate_b);
    up = project(up_weight, lora.up_b);
    const at::Tensor h = glu_forward(kernels, kind, gate, up);
    const at::Tensor res = residual.defined() ? rows(residual) : at::Tensor();
    if (lora.down_a.defined()) {
      // residual + u_d B_d^T in one GEMM, then + h Wd^T in the base GEMM.
      if (down_lora->dropout > 0.0) lora.h_mask = lora_dropout_mask(h, lora.dropout);
      u_down = kernels.matmul(dropped(h, lora.h_mask, lora.dropout), lora.down_a.t());
      u_down.mul_(s);
      y = kernels.matmul(u_down, lora.down_b.t(), res);
      kernels.matmul(h, down_weight.t(), y, y);
    } else {
      y = kernels.matmul(h, down_weight.t(), res);  // residual + h Wd^T in one GEMM
    }
    y = at::_unsafe_view(y, shape);  // not an autograd view: the node below becomes its history
  }
  const std::vector<at::Tensor> inputs = {x,         gate_weight, up_weight,   down_weight,
                                          residual,  lora.gate_a, lora.gate_b, lora.up_a,
                                          lora.up_b, lora.down_a, lora.down_b};
  bool requires_grad = false;
  for (const at::Tensor& t : inputs)
    requires_grad = requires_grad || (t.defined() && t.requires_grad());
  if (requires_grad && torch::GradMode::is_enabled()) {
    // Undefined inputs (no residual, no adapter) still take their edge slots (empty edges).
    auto node = std::make_shared<RecomputedGluMlpBackward>(
        &kernels, kind, x, gate_weight, up_weight, down_weight, residual, std::move(gate),
        std::move(up), lora, std::move(u_gate_up), std::move(u_down));
    node->set_next_edges(torch::autograd::collect_next_edges(inputs));
    torch::autograd::set_history(y, node);
  }
  return y;
}

}  // namespace liger::models
