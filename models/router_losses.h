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
Tensor router_z_loss(const std::vector<RouterOutput>& routers);

}  // namespace liger::models
