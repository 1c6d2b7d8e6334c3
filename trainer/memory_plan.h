// The memory plan (training.memory_plan: auto): the run's precision and
// activation checkpointing, chosen before anything is built as the first
// candidate, fastest first, whose memory estimate (trainer/memory_estimate.h)
// fits the budget of one GPU. Sharded over more ranks the estimate per GPU
// shrinks and the plan lands on a faster candidate by itself. On the CPU it
// chooses fp32 without checkpointing: the budget is GPU memory.
#pragma once

#include "models/model_config.h"
#include "trainer/config.h"
#include "trainer/memory_estimate.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace liger::trainer {

struct MemoryCandidate {
  config::Precision precision = config::Precision::bf16_mixed;
  config::ActivationCheckpointing checkpointing = config::ActivationCheckpointing::none;
};

// Fastest first, numerics before recompute: fp32 master weights
// (bf16-mixed) while they fit, with the least recompute (none, glu, full);
// then pure bf16 (AdamW rounding stochastically), none, glu, full.
const std::vector<MemoryCandidate>& memory_plan_candidates();

// What the plan is for.
struct MemoryPlanTarget {
  int64_t world_size = 1;  // ranks sharing the model
  bool on_cuda = true;     // false: the CPU, no budget
  std::optional<double>
      gpu_bytes;  // the GPU's memory; nullopt: none visible, an 80 GiB one assumed
};

// The GPU assumed when none is visible (a dry run on a machine without one).
constexpr double kAssumedGpuBytes = 80.0 * 1024 * 1024 * 1024;
// training.memory_budget_gib: 0 takes this fraction of the GPU's memory (the
// rest for the CUDA context, cuBLAS workspaces and the allocator's slack).
constexpr double kBudgetFraction = 0.95;

struct MemoryPlan {
  MemoryCandidate chosen;
  MemoryEstimate estimate;  // the chosen candidate's
  bool on_cuda = true;
  double budget_bytes = 0;
  std::string budget_source;  // how the budget was set, for the log line
  int64_t world_size = 1;
  bool fused_loss = true;
  bool stochastic_rounding = true;
  std::vector<std::pair<MemoryCandidate, double>>
      faster;  // the candidates tried before it, with their totals
  // One line: what it chose, its estimate against the budget, what the faster candidates need.
  std::string describe() const;
};

// The first candidate that fits (on the CPU: fp32, none). Nothing fits: a
// config::ConfigError with the leanest candidate's estimate and the switches
// that help.
MemoryPlan plan_memory(const models::ModelConfig& model, const config::TrainConfig& config,
                       const MemoryPlanTarget& target);

// training.memory_plan: auto: plans, rewrites `config` as planned
// (config::with_planned_memory) and returns the plan's line to log; off:
// leaves `config` as it is and returns nullopt.
std::optional<std::string> apply_memory_plan(config::TrainConfig& config,
                                             const models::ModelConfig& model,
                                             const MemoryPlanTarget& target);

}  // namespace liger::trainer
