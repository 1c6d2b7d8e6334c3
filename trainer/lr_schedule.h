// Learning-rate schedules: linear warmup from 0, then constant, linear or
// cosine decay to a floor of min_lr_ratio * lr at the last step.
#pragma once

#include "trainer/config_enums.h"

#include <cstdint>

namespace liger::trainer {

struct LrSchedule {
  config::LrScheduleKind kind = config::LrScheduleKind::cosine;
  double peak_lr = 1e-3;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.0;

  // Learning rate of optimizer step `step` (1-based: the first update is step 1).
  double at(int64_t step) const;
};

}  // namespace liger::trainer
