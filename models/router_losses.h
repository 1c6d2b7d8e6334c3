// The auxiliary losses of a sparse MoE model, from the routers' outputs of
// one forward (TransformerImpl::take_router_outputs), all layers together.
//
// Load balancing (Switch Transformer eq. 4-6, HF's load_balancing_loss_func
// without an attention mask): over the R = tokens x layers router rows,
//   f_e = (times expert e was among a row's top k) / R
//   P_e = (sum of the rows' softmax probability of e) / R
//   aux = E x sum_e f_e P_e            (f_e has no gradient)
// Router z-loss (ST-MoE): z = mean over the R rows of logsumexp(logits)^2.
// Both are fp32 scalars on the logits' device; nothing is read back.
#pragma once

#include "models/transformer.h"

#include <vector>

namespace liger::models {

Tensor load_balancing_loss(const std::vector<RouterOutput>& routers, int64_t num_experts);

// The counts behind f_e: how often each expert was chosen over `routers`
// (all layers), [E] fp32 on the logits' device, and the number R of router rows.
struct ExpertCounts {
  Tensor chosen;
  int64_t rows = 0;
};
ExpertCounts expert_counts(const std::vector<RouterOutput>& routers, int64_t num_experts);

// One part of a larger batch's load-balancing loss: f_e from `batch` (the
// counts of the whole batch: every micro-batch, every rank), P_e's sum over
// these rows only, both over the batch's R:
//   part = E x sum_e (batch.chosen_e / R) (sum over these rows of p_e / R)
// The parts of a batch's pieces sum to the batch's loss, and each part's
// gradient is the batch loss's gradient through these rows (f_e has none),
// so accumulating them is exact. With `batch` = expert_counts(routers), the
// part is load_balancing_loss(routers).
Tensor load_balancing_loss_part(const std::vector<RouterOutput>& routers, int64_t num_experts,
                                const ExpertCounts& batch);
Tensor router_z_loss(const std::vector<RouterOutput>& routers);

}  // namespace liger::models
