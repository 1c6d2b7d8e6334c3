#include "models/router_losses.h"

#include <torch/torch.h>

namespace liger::models {

Tensor load_balancing_loss(const std::vector<RouterOutput>& routers, int64_t num_experts) {
  TORCH_CHECK(!routers.empty(), "load_balancing_loss needs the routers of at least one layer");
  const auto f32 = routers.front().logits.options().dtype(at::kFloat);
  Tensor chosen = torch::zeros({num_experts}, f32);
  Tensor probability = torch::zeros({num_experts}, f32);
  int64_t rows = 0;
  for (const RouterOutput& r : routers) {
    // HF: softmax in the logits' dtype, summed in fp32. The counts come from
    // the op's own top k (fp32 softmax): the same experts barring exact ties.
    const Tensor flat = r.experts.reshape({-1});
    chosen.index_add_(0, flat, torch::ones({flat.numel()}, f32));
    // cast: the probabilities summed in fp32
    probability = probability + torch::softmax(r.logits, -1).to(at::kFloat).sum(0);
    rows += r.logits.size(0);
  }
  const double inv_rows = 1.0 / static_cast<double>(rows);
  return static_cast<double>(num_experts) * ((chosen * inv_rows) * (probability * inv_rows)).sum();
}

Tensor router_z_loss(const std::vector<RouterOutput>& routers) {
  TORCH_CHECK(!routers.empty(), "router_z_loss needs the routers of at least one layer");
  Tensor sum;
  int64_t rows = 0;
  for (const RouterOutput& r : routers) {
    // cast: log-sum-exp in fp32
    const Tensor lse = torch::logsumexp(r.logits.to(at::kFloat), -1);
    const Tensor layer = lse.square().sum();
    sum = sum.defined() ? sum + layer : layer;
    rows += r.logits.size(0);
  }
  return sum / static_cast<double>(rows);
}

}  // namespace liger::models
