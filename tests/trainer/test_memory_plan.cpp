// The memory plan: which precision and activation checkpointing it picks for
// the shipped Llama-3-8B config on one GPU and on eight, for the other shipped
// 2-9B configs, for the tiny config, against a budget, on the CPU; and the
// estimate's components behind them.
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/trainer/training_fixture.h"
#include "trainer/config.h"
#include "trainer/memory_plan.h"
#include "trainer/model_setup.h"
#include "trainer/trainer.h"

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

using liger::config::ActivationCheckpointing;
using liger::config::ConfigError;
using liger::config::Precision;
using liger::trainer::estimate_memory;
using liger::trainer::MemoryEstimate;
using liger::trainer::MemoryPlan;
using liger::trainer::plan_memory;

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::string source_dir() {
  const char* dir = std::getenv("LIGER_SOURCE_DIR");
  return dir ? dir : ".";
}

liger::config::TrainConfig load(const std::string& name,
                                const std::vector<std::string>& overrides = {}) {
  return liger::config::load_config(source_dir() + "/configs/" + name, overrides);
}

liger::models::ModelConfig model_of(const liger::config::TrainConfig& c) {
  return liger::trainer::resolve_model_config(c, 1024);  // the sample tokenizer's vocabulary
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string plan_error(const liger::config::TrainConfig& c,
                       const liger::trainer::MemoryPlanTarget& target) {
  try {
    plan_memory(model_of(c), c, target);
  } catch (const ConfigError& error) {
    return error.what();
  }
  return "";
}

// Llama-3-8B's shapes and the shipped config's batch (1 x 8192 tokens).
constexpr double kParams = 8030261248.0, kHidden = 4096, kMlp = 14336, kQ = 4096, kKv = 1024,
                 kLayers = 32, kVocab = 128256, kTokens = 8192;

}  // namespace

TEST_CASE("the ladder: fp32 master weights first, then the least recompute") {
  const auto& ladder = liger::trainer::memory_plan_candidates();
  REQUIRE(ladder.size() == 6);
  const Precision precisions[] = {Precision::bf16_mixed, Precision::bf16_mixed,
                                  Precision::bf16_mixed, Precision::bf16,
                                  Precision::bf16,       Precision::bf16};
  const ActivationCheckpointing recompute[] = {
      ActivationCheckpointing::none, ActivationCheckpointing::glu, ActivationCheckpointing::full};
  for (size_t i = 0; i < ladder.size(); ++i) {
    CHECK(ladder[i].precision == precisions[i]);
    CHECK(ladder[i].checkpointing == recompute[i % 3]);
  }
}

TEST_CASE("Llama-3-8B on one 80 GiB GPU: bf16 with full checkpointing, under 76 GiB") {
  const auto c = load("llama3_8b.yaml");
  REQUIRE(c.training.memory_plan == liger::config::MemoryPlanMode::auto_);
  const MemoryPlan plan = plan_memory(model_of(c), c, {1, true, std::nullopt});
  CHECK(plan.chosen.precision == Precision::bf16);
  CHECK(plan.chosen.checkpointing == ActivationCheckpointing::full);
  CHECK(plan.budget_bytes == 0.95 * 80 * kGiB);
  CHECK(plan.estimate.total() < 76 * kGiB);
  CHECK(plan.estimate.total() > 60 * kGiB);
  // Every faster candidate was tried and needs more than the budget.
  REQUIRE(plan.faster.size() == 5);
  for (const auto& [candidate, total] : plan.faster) CHECK(total > plan.budget_bytes);
  const std::string line = plan.describe();
  CHECK(contains(
      line,
      "memory plan: bf16 (stochastic rounding), activation checkpointing full, fused loss: "));
  CHECK(contains(
      line,
      " of the 76.00 GiB budget on 1 GPU (95% of an assumed 80.00 GiB GPU: none is visible here)"));
  CHECK(contains(line, "; faster candidates would need bf16-mixed/none "));

  // The components, from the shapes: bf16 parameters, gradients (summed in
  // .grad across the 8 micro-batches, so alive through every forward) and
  // both AdamW moments in bf16.
  const MemoryEstimate& e = plan.estimate;
  CHECK(e.parameters == kParams * 2);
  CHECK(e.gradients == kParams * 2);
  CHECK(e.gradients_in_forward == kParams * 2);
  CHECK(e.optimizer == kParams * 4);
  CHECK(e.gathered == 0);
  // One layer: norms' inputs and outputs, q, k, v and attention output, gate
  // and up (the product recomputed), bf16; kept: every layer's input and one layer.
  const double layer = kTokens * (4 * kHidden + 2 * kQ + 2 * kKv + 2 * kMlp) * 2;
  CHECK(e.per_layer == Approx(layer));
  CHECK(e.activations == Approx(kLayers * kTokens * kHidden * 2 + layer));
  // The fused loss in speed mode (8 chunks of 256 MiB): a chunk, the fp32
  // [vocab, hidden] weight-gradient sum and its bf16 cast, dL/dx.
  CHECK(e.loss == Approx(256.0 * 1024 * 1024 + kVocab * kHidden * (4 + 2) + kTokens * kHidden * 2));
  // Backward: a layer's MLP and hidden-state gradients, or the embedding's
  // dense gradient before it is added to the sum (the larger here).
  CHECK(e.backward == Approx(kVocab * kHidden * 2));
  CHECK(e.at_loss() > e.at_backward_end());  // the peak: the loss of a later micro-batch
  CHECK(e.total() == Approx(e.parameters + e.optimizer + e.gradients + e.activations + e.loss));
  CHECK(e.total() / kGiB == Approx(65.92).margin(0.01));
}

TEST_CASE("Llama-3-8B sharded over 8 GPUs: bf16-mixed without recompute") {
  const auto c = load("llama3_8b.yaml");
  const MemoryPlan plan = plan_memory(model_of(c), c, {8, true, std::nullopt});
  CHECK(plan.chosen.precision == Precision::bf16_mixed);
  CHECK(plan.chosen.checkpointing == ActivationCheckpointing::none);
  CHECK(plan.faster.empty());
  CHECK(contains(plan.describe(),
                 "memory plan: bf16-mixed, activation checkpointing none, fused loss: "));
  CHECK(contains(plan.describe(), "budget per GPU with 8 ranks sharing the model"));
  const MemoryEstimate& e = plan.estimate;
  // fp32 shards of parameters, gradients (in their flat buffers through the
  // forwards) and both moments: 16 bytes per parameter over 8 ranks.
  CHECK(e.parameters == kParams * 4 / 8);
  CHECK(e.gradients == kParams * 4 / 8);
  CHECK(e.gradients_in_forward == kParams * 4 / 8);
  CHECK(e.optimizer == kParams * 8 / 8);
  // Gathered in bf16: two layers and the embedding and lm_head.
  const double layer_params =
      kHidden * kQ * 2 + kHidden * kKv * 2 + 3 * kHidden * kMlp + 2 * kHidden;
  CHECK(e.gathered == Approx((2 * layer_params + 2 * kVocab * kHidden) * 2));
  // Every layer's activations, the product kept.
  CHECK(e.activations ==
        Approx(kLayers * kTokens * (4 * kHidden + 2 * kQ + 2 * kKv + 3 * kMlp) * 2));
  // Backward: lm_head's full bf16 gradient and its fp32 reduce-scatter staging.
  CHECK(e.backward == Approx(kVocab * kHidden * (2 + 4)));
  CHECK(e.total() < 76 * kGiB);
  CHECK(e.total() / kGiB == Approx(54.98).margin(0.01));

  // Two ranks: more memory per GPU, so more recompute than with eight.
  const MemoryPlan two = plan_memory(model_of(c), c, {2, true, std::nullopt});
  CHECK(two.chosen.precision == Precision::bf16_mixed);
  CHECK(two.chosen.checkpointing == ActivationCheckpointing::full);
}

TEST_CASE("the shipped 2-9B configs plan a fit: one 80 GiB GPU, Gemma-2-9B on two or in LoRA") {
  struct Expected {
    const char* config;
    Precision precision;
    ActivationCheckpointing checkpointing;
  };
  for (const auto& e :
       {Expected{"mistral_7b.yaml", Precision::bf16, ActivationCheckpointing::full},
        Expected{"gemma_7b.yaml", Precision::bf16, ActivationCheckpointing::full},
        Expected{"llama2_7b.yaml", Precision::bf16, ActivationCheckpointing::none},
        Expected{"gemma_2b.yaml", Precision::bf16_mixed, ActivationCheckpointing::glu},
        Expected{"gemma2_2b.yaml", Precision::bf16_mixed, ActivationCheckpointing::glu},
        Expected{"qwen2_5_7b.yaml", Precision::bf16, ActivationCheckpointing::full},
        Expected{"qwen3_8b.yaml", Precision::bf16, ActivationCheckpointing::full}}) {
    INFO(e.config);
    const auto c = load(e.config);
    REQUIRE(c.training.memory_plan == liger::config::MemoryPlanMode::auto_);
    const MemoryPlan plan = plan_memory(model_of(c), c, {1, true, std::nullopt});
    CHECK(plan.chosen.precision == e.precision);
    CHECK(plan.chosen.checkpointing == e.checkpointing);
    CHECK(plan.estimate.total() <= plan.budget_bytes);
  }
  // Gemma-2-9B's full fine-tune needs more than one 80 GiB GPU: the error says
  // what helps; two ranks sharing the model fit, and so does an H200.
  const auto gemma2_9b = load("gemma2_9b.yaml");
  const std::string message = plan_error(gemma2_9b, {1, true, std::nullopt});
  CHECK(contains(message, "nothing fits the 76.00 GiB budget on 1 GPU"));
  CHECK(contains(message, "train LoRA adapters (model.adapter: lora)"));
  const MemoryPlan two = plan_memory(model_of(gemma2_9b), gemma2_9b, {2, true, std::nullopt});
  CHECK(two.chosen.precision == Precision::bf16);
  CHECK(two.estimate.total() <= two.budget_bytes);
  const MemoryPlan h200 = plan_memory(model_of(gemma2_9b), gemma2_9b, {1, true, 139.8 * kGiB});
  CHECK(h200.estimate.total() <= h200.budget_bytes);
  // Its LoRA config (no plan: bf16 base, fp32 adapters) fits one 80 GiB GPU at 8192 tokens.
  const auto lora = load("gemma2_9b_lora.yaml");
  CHECK(lora.data.seq_len == 8192);
  CHECK(estimate_memory(model_of(lora), lora, 1).total() < 0.95 * 80 * kGiB);
}

TEST_CASE("the budget: the GPU's memory, training.memory_budget_gib, or nothing fits") {
  const auto c = load("llama3_8b.yaml");
  // A visible GPU's capacity (an H100 80GB reports about 79.2 GiB).
  const MemoryPlan visible = plan_memory(model_of(c), c, {1, true, 79.2 * kGiB});
  CHECK(visible.budget_bytes == Approx(0.95 * 79.2 * kGiB));
  CHECK(visible.chosen.precision == Precision::bf16);
  CHECK(contains(visible.describe(), "(95% of the 79.20 GiB GPU)"));
  // A budget set by hand; a larger one lets pure bf16 keep the GLU product recomputed only.
  const auto roomy = load("llama3_8b.yaml", {"training.memory_budget_gib=95"});
  const MemoryPlan glu = plan_memory(model_of(roomy), roomy, {1, true, std::nullopt});
  CHECK(glu.budget_bytes == 95 * kGiB);
  CHECK(glu.chosen.precision == Precision::bf16);
  CHECK(glu.chosen.checkpointing == ActivationCheckpointing::glu);
  CHECK(contains(glu.describe(), "budget on 1 GPU (training.memory_budget_gib)"));
  // Nothing fits: one line with the leanest estimate and the switches that help.
  const auto tight =
      load("llama3_8b.yaml", {"training.memory_budget_gib=40", "training.micro_batch_size=2"});
  const std::string message = plan_error(tight, {1, true, std::nullopt});
  CHECK(contains(message,
                 "training.memory_plan = auto: nothing fits the 40.00 GiB budget on 1 GPU "
                 "(training.memory_budget_gib): the leanest candidate, bf16 with activation "
                 "checkpointing full, needs "));
  CHECK(contains(
      message,
      "; to fit, shard over more GPUs (scripts/launch.sh --nproc N), lower data.seq_len (8192), "
      "lower training.micro_batch_size (2)"));
  CHECK(contains(message, " or raise training.memory_budget_gib"));
  CHECK(message.find('\n') == std::string::npos);
  CHECK(contains(plan_error(load("llama3_8b.yaml", {"training.memory_budget_gib=40",
                                                    "kernels.fused_linear_cross_entropy=false"}),
                            {1, true, std::nullopt}),
                 "turn on kernels.fused_linear_cross_entropy"));
}

TEST_CASE("the tiny config plans bf16-mixed without recompute on a GPU, fp32 on the CPU") {
  // The defaults (the tiny preset, 8 x 256 tokens) with the plan on.
  const auto planned =
      liger::config::parse_config("training:\n  memory_plan: auto\n", "tiny_plan.yaml");
  const MemoryPlan gpu = plan_memory(model_of(planned), planned, {1, true, std::nullopt});
  CHECK(gpu.chosen.precision == Precision::bf16_mixed);
  CHECK(gpu.chosen.checkpointing == ActivationCheckpointing::none);
  CHECK(gpu.faster.empty());
  // bf16 compute copies of fp32 parameters, bf16 gradients; AdamW state fp32.
  const double params = static_cast<double>(model_of(planned).num_parameters());
  CHECK(gpu.estimate.parameters == params * (4 + 2));
  CHECK(gpu.estimate.gradients == params * 2);
  CHECK(gpu.estimate.gradients_in_forward == 0);  // no accumulation: the step frees them
  CHECK(gpu.estimate.optimizer == params * 8);

  const MemoryPlan cpu = plan_memory(model_of(planned), planned, {1, false, std::nullopt});
  CHECK(cpu.chosen.precision == Precision::fp32);
  CHECK(cpu.chosen.checkpointing == ActivationCheckpointing::none);
  CHECK(cpu.describe() ==
        "memory plan: fp32, activation checkpointing none, fused loss (on the CPU: the plan "
        "budgets GPU memory only)");
}

TEST_CASE("apply_memory_plan: auto rewrites the config as planned, off leaves it") {
  auto c = load("llama3_8b.yaml");
  const auto model = model_of(c);
  const auto line = liger::trainer::apply_memory_plan(c, model, {1, true, std::nullopt});
  REQUIRE(line.has_value());
  CHECK(contains(*line, "memory plan: bf16 (stochastic rounding), activation checkpointing full"));
  CHECK(c.training.memory_plan == liger::config::MemoryPlanMode::off);
  CHECK(c.training.precision == Precision::bf16);
  CHECK(c.training.activation_checkpointing == ActivationCheckpointing::full);
  CHECK(c.model.dtype == liger::config::Dtype::bf16);
  CHECK_FALSE(c.training.master_weights);
  CHECK(liger::trainer::compute_dtype(c) == c10::kBFloat16);
  CHECK(liger::trainer::parameter_dtype(c) == c10::kBFloat16);
  // What checkpoints record: the plan as written keys.
  CHECK(contains(c.resolved_yaml, "memory_plan: off"));
  CHECK(contains(c.resolved_yaml, "precision: bf16\n"));
  CHECK(contains(c.resolved_yaml, "activation_checkpointing: full"));
  // Planned once, the config is left alone.
  const auto again = c;
  CHECK_FALSE(liger::trainer::apply_memory_plan(c, model, {1, true, std::nullopt}).has_value());
  CHECK(c.resolved_yaml == again.resolved_yaml);
}

TEST_CASE(
    "a run with training.memory_plan: auto logs the plan, trains as planned and records it in "
    "checkpoints") {
  const std::string dir = liger::testing::fresh_dir("memory_plan_run");
  const auto c =
      liger::testing::tiny_config(dir, {"training.memory_plan=auto", "training.steps=1",
                                        "checkpoint.save_final=true", "logging.level=info"});
  {
    liger::trainer::Trainer t(c);
    t.run();
    CHECK(t.model().named_parameters()[0].value().scalar_type() ==
          c10::kFloat);  // on the CPU: fp32
  }
  std::ifstream log(dir + "/train.log");
  const std::string log_text((std::istreambuf_iterator<char>(log)),
                             std::istreambuf_iterator<char>());
  CHECK(contains(log_text,
                 "memory plan: fp32, activation checkpointing none, fused loss (on the CPU"));
  const auto recorded = liger::config::load_config(dir + "/step-1/config.yaml");
  CHECK(recorded.training.memory_plan == liger::config::MemoryPlanMode::off);
  CHECK(recorded.training.precision == Precision::fp32);
  CHECK(recorded.training.activation_checkpointing == ActivationCheckpointing::none);
}
