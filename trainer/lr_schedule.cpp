#include "trainer/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace liger::trainer {

double LrSchedule::at(int64_t step) const {
  // Warmup: lr * step / warmup, reaching the peak at step == warmup.
  if (warmup_steps > 0 && step <= warmup_steps) {
    return peak_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  }
  if (kind == config::LrScheduleKind::constant) return peak_lr;
  const double floor_lr = peak_lr * min_lr_ratio;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
  // progress in [0, 1] over the decay phase
  const double progress = std::clamp(
      static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps), 0.0, 1.0);
  switch (kind) {
    case config::LrScheduleKind::linear: return floor_lr + (peak_lr - floor_lr) * (1.0 - progress);
    case config::LrScheduleKind::cosine:
      return floor_lr + (peak_lr - floor_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
    case config::LrScheduleKind::constant: break;
  }
  // Only a value cast from an integer outside the enum gets here.
  throw std::invalid_argument("training.lr_schedule = " + std::to_string(static_cast<int>(kind)) +
                              " is unknown (use constant, linear or cosine)");
}

}  // namespace liger::trainer
