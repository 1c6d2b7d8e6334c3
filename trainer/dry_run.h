// --dry-run: validates the config, builds the model on the meta device (no
// weights allocated, so an 8B config works on a laptop) and reports the
// parameter count, a memory estimate and the kernel selection table.
#pragma once

#include "trainer/config.h"

#include <string>

namespace liger::trainer {

struct DryRunReport {
  int64_t num_parameters = 0;
  int64_t active_parameters = 0;  // those one token passes through (MoE: its k experts)
  std::string text;               // what liger-train prints
};

DryRunReport dry_run(const config::TrainConfig& config);

}  // namespace liger::trainer
