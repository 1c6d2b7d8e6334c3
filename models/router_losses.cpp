#include "models/router_losses.h"

#include <torch/torch.h>

namespace liger::models {

ExpertCounts expert_counts(const std::vector<RouterOutput>& routers, int64_t num_experts) {
  TORCH_CHECK(!routers.empty(), "expert_counts needs the routers of at least one layer");
  const auto f32 = routers.front().logits.options().dtype(at::kFloat);
  ExpertCounts counts{torch::zeros({num_experts}, f32), 0};
  for (const RouterOutput& r : routers) {
    // The op's own top k (fp32 softmax): HF's experts barring exact ties.
    const Tensor flat = r.experts.reshape({-1});
    counts.chosen.index_add_(0, flat, torch::ones({flat.numel()}, f32));
    counts.rows += r.logits.size(0);
  }
  return counts;
}

Tensor load_balancing_loss_part(const std::vector<RouterOutput>& routers, int64_t num_experts,
                                const ExpertCounts& batch) {
  TORCH_CHECK(!routers.empty(), "load_balancing_loss needs the routers of at least one layer");
  TORCH_CHECK(batch.rows > 0, "load_balancing_loss_part: the batch has no router rows");
  Tensor probability;
  for (const RouterOutput& r : routers) {
    // HF: softmax in the logits' dtype; cast: the probabilities summed in fp32
    const Tensor layer = torch::softmax(r.logits, -1).to(at::kFloat).sum(0);
    probability = probability.defined() ? probability + layer : layer;
  }
  const double inv_rows = 1.0 / static_cast<double>(batch.rows);
  return static_cast<double>(num_experts) *
         ((batch.chosen * inv_rows) * (probability * inv_rows)).sum();
}

Tensor load_balancing_loss(const std::vector<RouterOutput>& routers, int64_t num_experts) {
  return load_balancing_loss_part(routers, num_experts, expert_counts(routers, num_experts));
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
