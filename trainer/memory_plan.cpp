#include "trainer/memory_plan.h"

#include "trainer/config_schema.h"

#include <cstdio>
#include <sstream>

namespace liger::trainer {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::string gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f GiB", bytes / kGiB);
  return text;
}

std::string short_name(const MemoryCandidate& candidate) {
  return std::string(config::name_of(candidate.precision)) + "/" +
         config::name_of(candidate.checkpointing);
}

std::string on_how_many(int64_t world_size) {
  return world_size > 1 ? "per GPU with " + std::to_string(world_size) + " ranks sharing the model"
                        : "on 1 GPU";
}

config::TrainConfig with_candidate(const config::TrainConfig& c, const MemoryCandidate& candidate) {
  config::TrainConfig tried = c;
  tried.training.precision = candidate.precision;
  tried.training.activation_checkpointing = candidate.checkpointing;
  return tried;
}

}  // namespace

const std::vector<MemoryCandidate>& memory_plan_candidates() {
  using config::ActivationCheckpointing;
  using config::Precision;
  static const std::vector<MemoryCandidate> candidates = {
      {Precision::bf16_mixed, ActivationCheckpointing::none},
      {Precision::bf16_mixed, ActivationCheckpointing::glu},
      {Precision::bf16_mixed, ActivationCheckpointing::full},
      {Precision::bf16, ActivationCheckpointing::none},
      {Precision::bf16, ActivationCheckpointing::glu},
      {Precision::bf16, ActivationCheckpointing::full},
  };
  return candidates;
}

std::string MemoryPlan::describe() const {
  std::ostringstream out;
  out << "memory plan: " << config::name_of(chosen.precision);
  if (chosen.precision == config::Precision::bf16) {
    out << (stochastic_rounding ? " (stochastic rounding)" : " (round to nearest)");
  }
  out << ", activation checkpointing " << config::name_of(chosen.checkpointing) << ", "
      << (fused_loss ? "fused loss" : "logits materialised");
  if (!on_cuda) {
    out << " (on the CPU: the plan budgets GPU memory only)";
    return out.str();
  }
  out << ": " << gib(estimate.total()) << " of the " << gib(budget_bytes) << " budget "
      << on_how_many(world_size) << " (" << budget_source << ")";
  if (!faster.empty()) {
    out << "; faster candidates would need";
    for (size_t i = 0; i < faster.size(); ++i) {
      out << (i == 0 ? " " : ", ") << short_name(faster[i].first) << " " << gib(faster[i].second);
    }
  }
  return out.str();
}

MemoryPlan plan_memory(const models::ModelConfig& model, const config::TrainConfig& c,
                       const MemoryPlanTarget& target) {
  MemoryPlan plan;
  plan.on_cuda = target.on_cuda;
  plan.world_size = target.world_size;
  plan.fused_loss = c.kernels.fused_linear_cross_entropy;
  plan.stochastic_rounding = c.training.stochastic_rounding;
  if (!target.on_cuda) {
    plan.chosen = {config::Precision::fp32, config::ActivationCheckpointing::none};
    plan.estimate = estimate_memory(model, with_candidate(c, plan.chosen), target.world_size);
    return plan;
  }
  if (c.training.memory_budget_gib > 0.0) {
    plan.budget_bytes = c.training.memory_budget_gib * kGiB;
    plan.budget_source = "training.memory_budget_gib";
  } else {
    const double capacity = target.gpu_bytes.value_or(kAssumedGpuBytes);
    plan.budget_bytes = kBudgetFraction * capacity;
    char text[128];
    std::snprintf(text, sizeof text, "%.0f%% of %s GPU%s", kBudgetFraction * 100,
                  target.gpu_bytes ? ("the " + gib(capacity)).c_str()
                                   : ("an assumed " + gib(capacity)).c_str(),
                  target.gpu_bytes ? "" : ": none is visible here");
    plan.budget_source = text;
  }
  for (const MemoryCandidate& candidate : memory_plan_candidates()) {
    const MemoryEstimate estimate =
        estimate_memory(model, with_candidate(c, candidate), target.world_size);
    if (estimate.total() <= plan.budget_bytes) {
      plan.chosen = candidate;
      plan.estimate = estimate;
      return plan;
    }
    plan.faster.emplace_back(candidate, estimate.total());
  }
  // Nothing fits: the leanest candidate's estimate and what would help.
  const auto& [leanest, needed] = plan.faster.back();
  std::vector<std::string> remedies = {
      "shard over more GPUs (scripts/launch.sh --nproc N)",
      "lower data.seq_len (" + std::to_string(c.data.seq_len) + ")"};
  if (c.training.micro_batch_size > 1) {
    remedies.push_back("lower training.micro_batch_size (" +
                       std::to_string(c.training.micro_batch_size) + ")");
  }
  if (!c.kernels.fused_linear_cross_entropy)
    remedies.emplace_back("turn on kernels.fused_linear_cross_entropy");
  // LoRA trains a few adapter weights instead of all of them (where this build has it).
  if (config::find_key("model.adapter") != nullptr)
    remedies.emplace_back("train LoRA adapters (model.adapter: lora)");
  if (c.training.memory_budget_gib > 0.0) remedies.emplace_back("raise training.memory_budget_gib");
  std::ostringstream out;
  out << "training.memory_plan = auto: nothing fits the " << gib(plan.budget_bytes) << " budget "
      << on_how_many(target.world_size) << " (" << plan.budget_source
      << "): the leanest candidate, " << config::name_of(leanest.precision)
      << " with activation checkpointing " << config::name_of(leanest.checkpointing) << ", needs "
      << gib(needed) << "; to fit, ";
  for (size_t i = 0; i < remedies.size(); ++i) {
    out << (i == 0 ? "" : i + 1 == remedies.size() ? " or " : ", ") << remedies[i];
  }
  throw config::ConfigError(out.str());
}

std::optional<std::string> apply_memory_plan(config::TrainConfig& c,
                                             const models::ModelConfig& model,
                                             const MemoryPlanTarget& target) {
  if (c.training.memory_plan == config::MemoryPlanMode::off) return std::nullopt;
  const MemoryPlan plan = plan_memory(model, c, target);
  c = config::with_planned_memory(c, plan.chosen.precision, plan.chosen.checkpointing);
  return plan.describe();
}

}  // namespace liger::trainer
