// The router losses of an MoE model (models/router_losses.h) against their
// formulas written out in double precision: values, and the gradients w.r.t.
// the router logits in closed form.
#include "models/router_losses.h"
#include "tests/catch.h"

#include <torch/torch.h>

#include <cmath>
#include <vector>

using liger::models::RouterOutput;
using torch::Tensor;

namespace {

constexpr int64_t kExperts = 5, kTopK = 2;

// Two layers' routers over 7 tokens, the experts chosen by top k.
std::vector<RouterOutput> routers(std::vector<Tensor>& leaves) {
  std::vector<RouterOutput> out;
  for (int layer = 0; layer < 2; ++layer) {
    leaves.push_back((torch::randn({7, kExperts}) * 2.0).requires_grad_(true));
    out.push_back({leaves.back(), std::get<1>(torch::topk(leaves.back().detach(), kTopK, -1))});
  }
  return out;
}

}  // namespace

TEST_CASE("load-balancing loss: E x sum_e f_e P_e over every layer's rows, and its gradient") {
  torch::manual_seed(3);
  std::vector<Tensor> leaves;
  const std::vector<RouterOutput> r = routers(leaves);
  const Tensor aux = liger::models::load_balancing_loss(r, kExperts);
  CHECK(aux.scalar_type() == torch::kFloat);
  aux.backward();

  // f_e: share of rows choosing e; P_e: mean probability of e; R = rows of all layers.
  const double rows = 14.0;
  std::vector<double> count(kExperts, 0.0), probability(kExperts, 0.0);
  for (const RouterOutput& layer : r) {
    const Tensor p = torch::softmax(layer.logits.detach().to(torch::kDouble), -1);
    for (int64_t t = 0; t < 7; ++t) {
      for (int64_t s = 0; s < kTopK; ++s) count[layer.experts[t][s].item<int64_t>()] += 1.0;
      for (int64_t e = 0; e < kExperts; ++e) probability[e] += p[t][e].item<double>();
    }
  }
  double expected = 0.0;
  for (int64_t e = 0; e < kExperts; ++e) expected += count[e] / rows * probability[e] / rows;
  expected *= kExperts;
  CHECK(std::abs(aux.item<double>() - expected) <= 1e-6 * expected);

  // d aux / d logits of a row: p * (g - <g, p>), g_e = E count_e / R^2 (f has no gradient).
  const Tensor g = torch::tensor(count, torch::kDouble) * (kExperts / (rows * rows));
  for (size_t layer = 0; layer < r.size(); ++layer) {
    const Tensor p = torch::softmax(r[layer].logits.detach().to(torch::kDouble), -1);
    const Tensor grad = p * (g - (p * g).sum(-1, true));
    CHECK(torch::allclose(leaves[layer].grad().to(torch::kDouble), grad, 1e-6, 1e-7));
  }
}

TEST_CASE("load-balancing loss is k when every router is uniform, whichever experts it picks") {
  const Tensor logits = torch::zeros({6, kExperts});
  const Tensor experts =
      torch::tensor({0, 1, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4}, torch::kLong).view({6, kTopK});
  const Tensor aux = liger::models::load_balancing_loss({{logits, experts}}, kExperts);
  CHECK(std::abs(aux.item<double>() - kTopK) <= 1e-6);
}

TEST_CASE("router z-loss: mean over every layer's rows of logsumexp^2, and its gradient") {
  torch::manual_seed(4);
  std::vector<Tensor> leaves;
  const std::vector<RouterOutput> r = routers(leaves);
  const Tensor z = liger::models::router_z_loss(r);
  z.backward();
  double expected = 0.0;
  for (size_t layer = 0; layer < r.size(); ++layer) {
    const Tensor l = r[layer].logits.detach().to(torch::kDouble);
    const Tensor lse = torch::logsumexp(l, -1);
    expected += lse.square().sum().item<double>();
    // d z / d logits = 2 lse softmax / R
    const Tensor grad = 2.0 * lse.unsqueeze(-1) * torch::softmax(l, -1) / 14.0;
    CHECK(torch::allclose(leaves[layer].grad().to(torch::kDouble), grad, 1e-6, 1e-7));
  }
  expected /= 14.0;
  CHECK(std::abs(z.item<double>() - expected) <= 1e-6 * expected);
}

TEST_CASE("load-balancing loss in parts: with the batch's counts the parts sum to the whole") {
  // Rows 0-2 and 3-6 of each layer as two micro-batches: their parts, each
  // with the whole batch's expert counts, add up to the loss of all rows,
  // and each row's gradient is the one the whole loss gives it.
  torch::manual_seed(5);
  std::vector<Tensor> leaves;
  const std::vector<RouterOutput> r = routers(leaves);
  const liger::models::ExpertCounts counts = liger::models::expert_counts(r, kExperts);
  CHECK(counts.rows == 14);
  CHECK(counts.chosen.sum().item<double>() == 14.0 * kTopK);
  const Tensor whole = liger::models::load_balancing_loss(r, kExperts);
  whole.backward();
  std::vector<Tensor> whole_grads;
  for (const Tensor& leaf : leaves) whole_grads.push_back(leaf.grad().clone());

  std::vector<Tensor> part_leaves;
  Tensor sum;
  for (const auto& [first, length] : {std::pair<int64_t, int64_t>{0, 3}, {3, 4}}) {
    std::vector<RouterOutput> piece;
    for (const RouterOutput& layer : r) {
      part_leaves.push_back(layer.logits.detach().narrow(0, first, length).requires_grad_(true));
      piece.push_back({part_leaves.back(), layer.experts.narrow(0, first, length)});
    }
    const Tensor part = liger::models::load_balancing_loss_part(piece, kExperts, counts);
    part.backward();
    sum = sum.defined() ? sum + part.detach() : part.detach();
    // Not the piece's own loss: its f_e differs from the batch's.
    const Tensor own = liger::models::load_balancing_loss(piece, kExperts);
    CHECK(std::abs(own.item<double>() - part.item<double>()) > 1e-3 * own.item<double>());
  }
  CHECK(std::abs(sum.item<double>() - whole.item<double>()) <= 1e-6 * whole.item<double>());
  for (size_t layer = 0; layer < r.size(); ++layer) {
    // part_leaves: piece 0's layers, then piece 1's
    const Tensor grad = torch::cat({part_leaves[layer].grad(), part_leaves[2 + layer].grad()});
    CHECK(torch::allclose(grad, whole_grads[layer], 1e-5, 1e-7));
  }
}
