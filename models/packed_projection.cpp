#include "models/packed_projection.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/torch.h>

namespace liger::models {
namespace {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

// Edges: x, then each weight.
// cat(weights) along rows; the weight itself when there is one.
at::Tensor stacked(const std::vector<at::Tensor>& weights) {
  return weights.size() == 1 ? weights[0] : at::cat(weights, 0);
}

class PackedProjectionBackward : public Node {
 public:
  PackedProjectionBackward(const kernels::KernelSet* kernels, const at::Tensor& x,
                           const std::vector<at::Tensor>& weights)
      : kernels_(kernels), x_(x, /*is_output=*/false) {
    for (const at::Tensor& w : weights) {
      weights_.emplace_back(w, /*is_output=*/false);
      rows_.push_back(w.size(0));
    }
    need_x_ = x.requires_grad();
    for (const at::Tensor& w : weights) need_w_.push_back(w.requires_grad());
  }

  std::string name() const override { return "PackedProjectionBackward"; }

  variable_list apply(variable_list&& grads) override {
    variable_list out(1 + weights_.size());
    const at::Tensor& dy = grads[0];
    if (!dy.defined()) return out;
    const at::Tensor x = x_.unpack();
    const at::Tensor dy2 = dy.reshape({-1, dy.size(-1)});  // [tokens, sum out_i]
    if (need_x_) {
      std::vector<at::Tensor> weights;
      for (SavedVariable& w : weights_) weights.push_back(w.unpack());
      // d_x = dy cat(W): one GEMM over the packed gradient (fp32 accumulation in the GEMM).
      out[0] = kernels_->matmul(dy2, stacked(weights)).view(x.sizes());
    }
    bool any_weight = false;
    for (const bool need : need_w_) any_weight = any_weight || need;
    if (any_weight) {
      // d_W = dy^T x for all weights at once, then split by rows (contiguous views).
      const at::Tensor dw = kernels_->matmul(dy2.t(), x.reshape({-1, x.size(-1)}));
      int64_t row = 0;
      for (size_t i = 0; i < weights_.size(); ++i) {
        if (need_w_[i]) out[1 + i] = dw.narrow(0, row, rows_[i]);
        row += rows_[i];
      }
    }
    return out;
  }

  void release_variables() override {
    x_.reset_data();
    for (SavedVariable& w : weights_) w.reset_data();
  }

 private:
  const kernels::KernelSet* kernels_;
  SavedVariable x_;
  std::vector<SavedVariable> weights_;
  std::vector<int64_t> rows_;
  bool need_x_ = false;
  std::vector<bool> need_w_;
};

}  // namespace

at::Tensor packed_projection(const kernels::KernelSet& kernels, const at::Tensor& x,
                             const std::vector<at::Tensor>& weights) {
  TORCH_CHECK(!weights.empty(), "packed_projection: no weights");
  for (const at::Tensor& w : weights) {
    TORCH_CHECK(w.dim() == 2 && w.size(1) == x.size(-1), "packed_projection: weight ", w.sizes(),
                " does not take ", x.size(-1), " inputs");
    TORCH_CHECK(w.scalar_type() == x.scalar_type(), "packed_projection: weight is ", w.scalar_type(),
                " but x is ", x.scalar_type());
  }
  at::Tensor y;
  {
    torch::NoGradGuard no_grad;  // the concatenated weight lives only for this product
    std::vector<int64_t> shape = x.sizes().vec();  // x's with in -> sum out_i
    const at::Tensor w = stacked(weights);
    shape.back() = w.size(0);
    y = at::_unsafe_view(kernels.matmul(x.reshape({-1, x.size(-1)}), w.t()), shape);  // not an autograd view
  }
  bool requires_grad = x.requires_grad();
  for (const at::Tensor& w : weights) requires_grad = requires_grad || w.requires_grad();
  if (requires_grad && torch::GradMode::is_enabled()) {
    auto node = std::make_shared<PackedProjectionBackward>(&kernels, x, weights);
    std::vector<at::Tensor> inputs = {x};
    inputs.insert(inputs.end(), weights.begin(), weights.end());
    node->set_next_edges(torch::autograd::collect_next_edges(inputs));
    torch::autograd::set_history(y, node);
  }
  return y;
}

}  // namespace liger::models
