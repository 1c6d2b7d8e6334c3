// The preference losses the fused_linear_preference tests run every backend
// through (tests/kernels/test_preference.cpp on the CPU,
// tests/kernels/test_cuda_preference.cpp on a GPU): each objective and DPO
// loss type, with and without label smoothing and the NLL term, and the
// options they share.
#pragma once

#include "kernels/ops.h"

#include <cstdint>

namespace liger::kernels::test {

struct PreferenceVariant {
  const char* name;
  PreferenceObjective objective;
  DpoLossType loss_type;
  double label_smoothing;
  double nll_weight;
};

inline constexpr PreferenceVariant kPreferenceVariants[] = {
    {"dpo sigmoid", PreferenceObjective::dpo, DpoLossType::sigmoid, 0.0, 0.0},
    {"dpo sigmoid smoothed + nll", PreferenceObjective::dpo, DpoLossType::sigmoid, 0.2, 0.7},
    {"dpo ipo", PreferenceObjective::dpo, DpoLossType::ipo, 0.0, 0.0},
    {"dpo hinge", PreferenceObjective::dpo, DpoLossType::hinge, 0.0, 0.0},
    {"orpo", PreferenceObjective::orpo, DpoLossType::sigmoid, 0.0, 0.0},
    {"simpo", PreferenceObjective::simpo, DpoLossType::sigmoid, 0.1, 0.0},
    {"simpo + nll", PreferenceObjective::simpo, DpoLossType::sigmoid, 0.0, 1.0},
};

// The variant's options for `pairs` pairs: beta 0.5, ORPO's alpha 0.3,
// SimPO's gamma 0.4, the op's default chunk size.
inline PreferenceOptions preference_options(const PreferenceVariant& v, int64_t pairs) {
  PreferenceOptions o;
  o.objective = v.objective;
  o.loss_type = v.loss_type;
  o.label_smoothing = v.label_smoothing;
  o.nll_weight = v.nll_weight;
  o.beta = 0.5;
  o.orpo_alpha = 0.3;
  o.simpo_gamma = 0.4;
  o.num_pairs = pairs;
  return o;
}

}  // namespace liger::kernels::test
