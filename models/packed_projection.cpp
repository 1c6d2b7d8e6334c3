#include "models/packed_projection.h"

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

// Whether `weights` are consecutive row blocks of one buffer, frozen
// (TransformerImpl::pack_frozen_qkv_weights): then their stack is a view.
bool consecutive_rows(const std::vector<at::Tensor>& weights) {
  const at::Tensor& first = weights.front();
  for (size_t i = 0; i < weights.size(); ++i) {
    const at::Tensor& w = weights[i];
    if (w.requires_grad() || w.dim() != 2 || !w.is_contiguous() || !w.has_storage() ||
        w.scalar_type() != first.scalar_type() || w.size(1) != first.size(1) ||
        !w.storage().is_alias_of(first.storage())) {
      return false;
    }
    if (i > 0 && w.storage_offset() != weights[i - 1].storage_offset() + weights[i - 1].numel()) {
      return false;
    }
  }
  return true;
}

// cat(weights) along rows; the weight itself when there is one, a view when
// they are consecutive rows of one buffer.
at::Tensor stacked(const std::vector<at::Tensor>& weights) {
  if (weights.size() == 1) return weights[0];
  if (consecutive_rows(weights)) {
    int64_t rows = 0;
    for (const at::Tensor& w : weights) rows += w.size(0);
    const int64_t cols = weights.front().size(1);
    return weights.front().as_strided({rows, cols}, {cols, 1}, weights.front().storage_offset());
  }
  return at::cat(weights, 0);
}

// The adapters present, in weight order: which weight each belongs to.
struct AdapterLayout {
  std::vector<size_t> weight_of;    // adapter j -> weight index
  std::vector<int64_t> row_offset;  // weight i -> its first column in the packed output
  int64_t rank = 0;
  bool all_weights = true;  // every weight has an adapter
};

AdapterLayout adapter_layout(const std::vector<at::Tensor>& weights, const LoraOperands* lora) {
  AdapterLayout layout;
  int64_t row = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    layout.row_offset.push_back(row);
    row += weights[i].size(0);
    if (lora != nullptr && i < lora->a.size() && lora->a[i].defined()) {
      layout.weight_of.push_back(i);
      layout.rank = lora->a[i].size(0);
    } else {
      layout.all_weights = false;
    }
  }
  return layout;
}

// Edges: x, then each weight, then each adapter's A, then each adapter's B,
// then each bias.
class PackedProjectionBackward : public Node {
 public:
  PackedProjectionBackward(const kernels::KernelSet* kernels, const at::Tensor& x,
                           const std::vector<at::Tensor>& weights, const LoraOperands* lora,
                           AdapterLayout layout, at::Tensor u, at::Tensor mask,
                           const std::vector<at::Tensor>& biases)
      : kernels_(kernels),
        x_(x, /*is_output=*/false),
        layout_(std::move(layout)),
        u_(std::move(u)),
        mask_(std::move(mask)) {
    for (const at::Tensor& w : weights) {
      weights_.emplace_back(w, /*is_output=*/false);
      rows_.push_back(w.size(0));
      need_w_.push_back(w.requires_grad());
    }
    need_x_ = x.requires_grad();
    for (const size_t i : layout_.weight_of) {
      a_.emplace_back(lora->a[i], false);
      b_.emplace_back(lora->b[i], false);
      need_a_ = need_a_ || lora->a[i].requires_grad();
      need_b_.push_back(lora->b[i].requires_grad());
    }
    if (lora != nullptr) {
      scaling_ = lora->scaling;
      dropout_ = lora->dropout;
    }
    for (const at::Tensor& b : biases) need_bias_.push_back(b.requires_grad());
  }

  std::string name() const override { return "PackedProjectionBackward"; }

  variable_list apply(variable_list&& grads) override {
    const size_t adapters = layout_.weight_of.size();
    variable_list out(1 + weights_.size() + 2 * adapters + need_bias_.size());
    const at::Tensor& dy = grads[0];
    if (!dy.defined()) return out;
    const at::Tensor x = x_.unpack();
    const at::Tensor x2 = x.reshape({-1, x.size(-1)});
    const at::Tensor dy2 = dy.reshape({-1, dy.size(-1)});  // [tokens, sum out_i]
    const int64_t r = layout_.rank;
    // dy's block of weight i: [tokens, out_i] (a strided view the GEMMs read as is).
    auto block = [&](size_t i) { return dy2.narrow(1, layout_.row_offset[i], rows_[i]); };
    std::vector<at::Tensor> a;
    for (SavedVariable& saved : a_) a.push_back(saved.unpack());

    // g = scaling * [dy_i B_i]_j: [tokens, adapters * rank], one column block per adapter.
    at::Tensor g;
    if (adapters > 0 && (need_x_ || need_a_)) {
      g = at::empty({dy2.size(0), static_cast<int64_t>(adapters) * r}, dy2.options());
      for (size_t j = 0; j < adapters; ++j) {
        kernels_->matmul(block(layout_.weight_of[j]), b_[j].unpack(), at::Tensor(),
                         g.narrow(1, static_cast<int64_t>(j) * r, r));
      }
      g.mul_(scaling_);
    }
    if (need_x_) {
      std::vector<at::Tensor> weights;
      for (SavedVariable& w : weights_) weights.push_back(w.unpack());
      if (g.defined()) {
        // dx = dy cat(W) + (g cat(A)) * mask / (1 - p): the adapters' part
        // first, then the base GEMM adds into it (beta = 1, no add pass).
        at::Tensor dx = kernels_->matmul(g, stacked(a));
        if (mask_.defined()) dx = apply_lora_dropout(dx, mask_, dropout_);
        kernels_->matmul(dy2, stacked(weights), dx, dx);
        out[0] = dx.view(x.sizes());
      } else {
        // d_x = dy cat(W): one GEMM over the packed gradient (fp32 accumulation in the GEMM).
        out[0] = kernels_->matmul(dy2, stacked(weights)).view(x.sizes());
      }
    }
    bool any_weight = false;
    for (const bool need : need_w_) any_weight = any_weight || need;
    if (any_weight) {
      // d_W = dy^T x for all weights at once, then split by rows (contiguous
      // views). Frozen weights (LoRA's base) cost no GEMM at all.
      const at::Tensor dw = kernels_->matmul(dy2.t(), x2);
      int64_t row = 0;
      for (size_t i = 0; i < weights_.size(); ++i) {
        if (need_w_[i]) out[1 + i] = dw.narrow(0, row, rows_[i]);
        row += rows_[i];
      }
    }
    const size_t a_slot = 1 + weights_.size(), b_slot = a_slot + adapters;
    if (need_a_) {
      // dA = g^T dropout(x): every adapter's A in one GEMM, split by rows.
      const at::Tensor xd = mask_.defined() ? apply_lora_dropout(x2, mask_, dropout_) : x2;
      const at::Tensor da = kernels_->matmul(g.t(), xd);
      for (size_t j = 0; j < adapters; ++j)
        out[a_slot + j] = da.narrow(0, static_cast<int64_t>(j) * r, r);
    }
    for (size_t j = 0; j < adapters; ++j) {
      // dB_i = dy_i^T u_j (u carries the scaling already).
      if (need_b_[j]) {
        out[b_slot + j] = kernels_->matmul(block(layout_.weight_of[j]).t(),
                                           u_.narrow(1, static_cast<int64_t>(j) * r, r));
      }
    }
    bool any_bias = false;
    for (const bool need : need_bias_) any_bias = any_bias || need;
    if (any_bias) {
      // d_b = column sums of dy for all biases at once (ATen's sum accumulates
      // 16-bit inputs in fp32), split by rows; frozen biases (LoRA) cost nothing.
      const at::Tensor db = dy2.sum(0);
      const size_t bias_slot = b_slot + adapters;
      for (size_t i = 0; i < need_bias_.size(); ++i) {
        if (need_bias_[i]) out[bias_slot + i] = db.narrow(0, layout_.row_offset[i], rows_[i]);
      }
    }
    return out;
  }

  void release_variables() override {
    x_.reset_data();
    for (SavedVariable& w : weights_) w.reset_data();
    for (SavedVariable& w : a_) w.reset_data();
    for (SavedVariable& w : b_) w.reset_data();
    u_ = at::Tensor();
    mask_ = at::Tensor();
  }

 private:
  const kernels::KernelSet* kernels_;
  SavedVariable x_;
  std::vector<SavedVariable> weights_;
  std::vector<int64_t> rows_;
  bool need_x_ = false;
  std::vector<bool> need_w_;
  // LoRA
  AdapterLayout layout_;
  std::vector<SavedVariable> a_, b_;
  at::Tensor u_;     // [tokens, adapters * rank]: scaling * dropout(x) cat(A)^T, this node's own
  at::Tensor mask_;  // dropout's on x ([tokens, in] bool), or undefined
  double scaling_ = 1.0, dropout_ = 0.0;
  bool need_a_ = false;
  std::vector<bool> need_b_;
  std::vector<bool> need_bias_;  // one per weight when it has a bias, else empty
};

}  // namespace

at::Tensor packed_projection(const kernels::KernelSet& kernels, const at::Tensor& x,
                             const std::vector<at::Tensor>& weights, const LoraOperands* lora,
                             const std::vector<at::Tensor>& biases) {
  TORCH_CHECK(!weights.empty(), "packed_projection: no weights");
  TORCH_CHECK(biases.empty() || biases.size() == weights.size(),
              "packed_projection: ", biases.size(), " biases for ", weights.size(), " weights");
  for (size_t i = 0; i < biases.size(); ++i) {
    TORCH_CHECK(biases[i].dim() == 1 && biases[i].size(0) == weights[i].size(0) &&
                    biases[i].scalar_type() == x.scalar_type(),
                "packed_projection: bias ", biases[i].sizes(), " ", biases[i].scalar_type(),
                " does not fit weight ", weights[i].sizes(), " and x ", x.scalar_type());
  }
  for (const at::Tensor& w : weights) {
    TORCH_CHECK(w.dim() == 2 && w.size(1) == x.size(-1), "packed_projection: weight ", w.sizes(),
                " does not take ", x.size(-1), " inputs");
    TORCH_CHECK(w.scalar_type() == x.scalar_type(), "packed_projection: weight is ",
                w.scalar_type(), " but x is ", x.scalar_type());
  }
  const AdapterLayout layout = adapter_layout(weights, lora);
  const bool adapted = !layout.weight_of.empty();
  std::vector<at::Tensor> a_list, b_list;
  for (const size_t i : layout.weight_of) {
    const at::Tensor &a = lora->a[i], &b = lora->b[i];
    TORCH_CHECK(a.dim() == 2 && a.size(0) == layout.rank && a.size(1) == x.size(-1) &&
                    b.dim() == 2 && b.size(0) == weights[i].size(0) && b.size(1) == layout.rank,
                "packed_projection: LoRA A ", a.sizes(), " and B ", b.sizes(),
                " do not fit weight ", weights[i].sizes());
    TORCH_CHECK(a.scalar_type() == x.scalar_type() && b.scalar_type() == x.scalar_type(),
                "packed_projection: LoRA weights are ", a.scalar_type(), " but x is ",
                x.scalar_type());
    a_list.push_back(a);
    b_list.push_back(b);
  }
  at::Tensor y, u, mask;
  {
    torch::NoGradGuard no_grad;  // the concatenated weights live only for these products
    std::vector<int64_t> shape = x.sizes().vec();  // x's with in -> sum out_i
    const at::Tensor w = stacked(weights);
    const at::Tensor bias = biases.empty() ? at::Tensor() : stacked(biases);  // [sum out_i]
    shape.back() = w.size(0);
    const at::Tensor x2 = x.reshape({-1, x.size(-1)});
    if (adapted) {
      // u = scaling * dropout(x) cat(A)^T: every adapter's A in one GEMM.
      if (lora->dropout > 0.0) mask = lora_dropout_mask(x2, lora->dropout);
      const at::Tensor xd = mask.defined() ? apply_lora_dropout(x2, mask, lora->dropout) : x2;
      u = kernels.matmul(xd, stacked(a_list).t());
      u.mul_(lora->scaling);
      // Each u_j B_j^T is written into its weight's block of y, that weight's
      // bias coming in as the GEMM's added input; blocks without an adapter
      // start as their bias (or zero), and then y += x cat(W)^T inside the
      // base GEMM (beta = 1).
      if (layout.all_weights) {
        y = at::empty({x2.size(0), w.size(0)}, x2.options());
      } else if (bias.defined()) {
        y = bias.expand({x2.size(0), w.size(0)}).contiguous();
      } else {
        y = at::zeros({x2.size(0), w.size(0)}, x2.options());
      }
      const int64_t r = layout.rank;
      for (size_t j = 0; j < layout.weight_of.size(); ++j) {
        const size_t i = layout.weight_of[j];
        const at::Tensor block = y.narrow(1, layout.row_offset[i], weights[i].size(0));
        const at::Tensor added = !bias.defined()      ? at::Tensor()
                                 : layout.all_weights ? biases[i]  // broadcast over rows
                                                      : block;     // holds the bias already
        kernels.matmul(u.narrow(1, static_cast<int64_t>(j) * r, r), b_list[j].t(), added, block);
      }
      kernels.matmul(x2, w.t(), y, y);
    } else {
      y = kernels.matmul(x2, w.t(), bias);  // + bias broadcast over rows, inside the GEMM
    }
    y = at::_unsafe_view(y, shape);  // not an autograd view
  }
  bool requires_grad = x.requires_grad();
  for (const at::Tensor& w : weights) requires_grad = requires_grad || w.requires_grad();
  for (size_t j = 0; j < a_list.size(); ++j) {
    requires_grad = requires_grad || a_list[j].requires_grad() || b_list[j].requires_grad();
  }
  for (const at::Tensor& b : biases) requires_grad = requires_grad || b.requires_grad();
  if (requires_grad && torch::GradMode::is_enabled()) {
    auto node = std::make_shared<PackedProjectionBackward>(&kernels, x, weights, lora, layout, u,
                                                           mask, biases);
    std::vector<at::Tensor> inputs = {x};
    inputs.insert(inputs.end(), weights.begin(), weights.end());
    inputs.insert(inputs.end(), a_list.begin(), a_list.end());
    inputs.insert(inputs.end(), b_list.begin(), b_list.end());
    inputs.insert(inputs.end(), biases.begin(), biases.end());
    node->set_next_edges(torch::autograd::collect_next_edges(inputs));
    torch::autograd::set_history(y, node);
  }
  return y;
}

}  // namespace liger::models
