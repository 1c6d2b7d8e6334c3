// The preference losses (DPO, ORPO, SimPO) on per-sequence log-probabilities:
// the cheap part of the fused_linear_preference op, after the lm_head. Shared
// by the backends (the loss value), the composite backend (its closed-form
// gradient) and the trainer (the rewards it reports). The definitions are the
// ones of FusedLinearPreferenceFn in kernels/ops.h.
//
// Every tensor here is small: [2P] or [P] fp32 on the op's device.
#pragma once

#include "kernels/ops.h"

namespace liger::kernels {

// The loss of ops.h from logps [2P], counts [2P] and reference_logps ([2P],
// or undefined where the objective has none), as differentiable ATen math:
// the reference backend takes its gradient by autograd.
Tensor preference_loss_of_logps(const Tensor& logps, const Tensor& counts,
                                const Tensor& reference_logps, const PreferenceOptions& options);

// d loss / d logps [2P], in closed form (the composite backend's backward):
//   DPO sigmoid, SimPO   dL/dz = -(1 - ls) sigmoid(-z) + ls sigmoid(z)
//   DPO hinge            dL/du = -beta [1 - beta u > 0]
//   DPO ipo              dL/du = 2 (u - 1 / (2 beta))
//   ORPO                 dL/do = -alpha sigmoid(-o), do/davg_c = 1 / (1 - exp(avg_c)),
//                        do/davg_r = -1 / (1 - exp(avg_r))
// then through u, z or o to logp_c and logp_r (a length average divides by
// n_s), over the pair normaliser; the NLL term adds -weight / chosen tokens
// to every chosen sequence.
Tensor preference_loss_gradient(const Tensor& logps, const Tensor& counts,
                                const Tensor& reference_logps, const PreferenceOptions& options);

// What the trainer reports per pair, in TRL's sense (all [P] fp32):
//   logps_*   the sequence log-probs as the loss reads them: sums for DPO
//             sigmoid and hinge, length averages for DPO ipo, ORPO and SimPO
//   rewards_* DPO: beta (logps_* - reference, read the same way);
//             ORPO: orpo_alpha logps_*; SimPO: beta logps_*
struct PreferencePairStats {
  Tensor logps_chosen, logps_rejected;
  Tensor rewards_chosen, rewards_rejected;
};
PreferencePairStats preference_pair_stats(const Tensor& logps, const Tensor& counts,
                                          const Tensor& reference_logps,
                                          const PreferenceOptions& options);

// Whether the objective reads reference log-probs (DPO does).
inline bool needs_reference(PreferenceObjective objective) {
  return objective == PreferenceObjective::dpo;
}

// Whether the loss reads length-averaged log-probs (ipo, ORPO, SimPO).
bool uses_length_average(const PreferenceOptions& options);

}  // namespace liger::kernels
