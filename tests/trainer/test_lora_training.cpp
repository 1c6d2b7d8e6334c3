// LoRA end to end in the trainer, on the CPU in fp32 (and bf16-mixed):
//  - only the adapters (and modules_to_save) train; the frozen base stays
//    bitwise what it was built as; checkpoints hold the adapters only;
//  - resume is exact; gradient accumulation and activation checkpointing
//    (glu, full) agree up to fp32 rounding, which AdamW amplifies on the
//    adapters' first steps (B starts at zero; about 5e-5 at worst), far
//    below what a 5% larger learning rate moves;
//  - export: a PEFT adapter folder and the merged model, from a checkpoint;
//  - config errors name the key; the memory estimate knows LoRA.
#include "models/hf.h"
#include "models/lora.h"
#include "models/peft.h"
#include "models/safetensors.h"
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/trainer/training_fixture.h"
#include "trainer/adapter_setup.h"
#include "trainer/checkpoint.h"
#include "trainer/export.h"
#include "trainer/memory_estimate.h"
#include "trainer/model_setup.h"
#include "trainer/trainer.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using namespace liger;
using liger::testing::Parameters;

namespace {

struct RunOutput {
  Parameters base, adapters;
  trainer::TrainResult result;
};

RunOutput train(const config::TrainConfig& config, int64_t stop_after = 0) {
  trainer::Trainer t(config);
  RunOutput out;
  out.result = t.run(stop_after);
  for (const auto& item : t.model().named_parameters())
    out.base[item.key()] = item.value().detach().clone();
  REQUIRE(t.model().lora() != nullptr);
  for (const auto& item : t.model().lora()->named_parameters()) {
    out.adapters[item.key()] = item.value().detach().to(at::kFloat).clone();
  }
  return out;
}

std::vector<std::string> lora_overrides(std::vector<std::string> more = {}) {
  std::vector<std::string> all = {"model.adapter=lora", "lora.rank=3", "lora.alpha=9",
                                  "training.steps=6", "training.lr=0.01"};
  all.insert(all.end(), more.begin(), more.end());
  return all;
}

config::TrainConfig lora_config(const std::string& name, std::vector<std::string> more = {}) {
  return liger::testing::tiny_config(liger::testing::fresh_dir(name),
                                     lora_overrides(std::move(more)));
}

std::vector<nlohmann::json> read_metrics(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

}  // namespace

TEST_CASE(
    "LoRA training: the adapters learn, the base stays bitwise, checkpoints hold the adapters "
    "only") {
  config::TrainConfig c =
      lora_config("lora_basic", {"checkpoint.save_final=true", "training.steps=12"});
  const RunOutput run = train(c);
  // The base as the run built it (the preset's init with training.seed).
  const models::ModelConfig model_config = trainer::resolve_model_config(c, 1024);
  models::Transformer fresh(model_config, kernels::KernelSet::reference(),
                            at::TensorOptions().dtype(at::kFloat), at::kFloat);
  fresh->init_weights(static_cast<uint64_t>(c.training.seed));
  for (const auto& item : fresh->named_parameters()) {
    INFO(item.key());
    CHECK(torch::equal(run.base.at(item.key()), item.value()));
  }
  // Every adapter trained: B moved off zero, A off its init.
  CHECK(run.adapters.size() == 2 * 7 * 2);
  for (const auto& [name, value] : run.adapters) {
    INFO(name);
    if (name.find("lora_B") != std::string::npos) CHECK(value.abs().max().item<double>() > 0.0);
  }
  const auto rows = read_metrics(c.checkpoint.output_dir);
  REQUIRE(rows.size() == 12);
  CHECK(rows.back().at("loss").get<double>() < rows.front().at("loss").get<double>());

  // The checkpoint: the adapters and their AdamW state, nothing of the base.
  const std::string step = c.checkpoint.output_dir + "/step-12";
  const trainer::NamedTensors saved = trainer::CheckpointManager::read_whole_parameters(step);
  CHECK(saved.size() == run.adapters.size());
  for (const auto& [name, value] : saved) {
    INFO(name);
    REQUIRE(run.adapters.count(name) == 1);
    CHECK(torch::equal(value, run.adapters.at(name)));
  }
  int64_t base_bytes = 0;
  for (const auto& item : fresh->named_parameters()) base_bytes += item.value().numel() * 4;
  CHECK(static_cast<int64_t>(fs::file_size(step + "/model.pt")) < base_bytes / 4);

  SECTION(
      "export: a PEFT adapter folder with PEFT's names, and the merged model with the adapters' "
      "logits") {
    const std::string adapter_dir = liger::testing::fresh_dir("lora_export_adapter");
    trainer::export_checkpoint(step, adapter_dir);
    const models::PeftAdapterConfig adapter = models::read_peft_adapter_config(adapter_dir);
    CHECK(adapter.lora.rank == 3);
    CHECK(adapter.lora.alpha == 9.0);
    CHECK(adapter.lora.targets.size() == 7);
    const models::safetensors::File file(adapter_dir + "/adapter_model.safetensors");
    CHECK(file.tensors().size() == run.adapters.size());
    REQUIRE(file.find("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight") != nullptr);
    CHECK(torch::equal(file.read("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"),
                       run.adapters.at("model.layers.1.mlp.down_proj.lora_B.weight")));

    // The checkpoint's model (base + adapters) against the merged export.
    trainer::LoadedModel loaded =
        trainer::load_checkpoint_model(step, config::Device::cpu, config::Dtype::fp32);
    const at::Tensor ids = torch::randint(0, model_config.vocab_size, {2, 11});
    at::Tensor adapted;
    {
      torch::NoGradGuard no_grad;
      adapted = loaded.model->logits(loaded.model->forward(ids));
    }
    const std::string merged_dir = liger::testing::fresh_dir("lora_export_merged");
    trainer::export_checkpoint(step, merged_dir, config::Dtype::fp32, 5LL << 30, /*merge=*/true);
    models::Transformer merged =
        trainer::load_hf_model(merged_dir, config::Device::cpu, config::Dtype::fp32);
    CHECK(merged->lora() == nullptr);
    torch::NoGradGuard no_grad;
    const at::Tensor plain = merged->logits(merged->forward(ids));
    CHECK(((plain - adapted).abs().max() / adapted.abs().max()).item<double>() <= 1e-5);
    // Not the base model's logits: the adapters changed something.
    const at::Tensor base_logits = fresh->logits(fresh->forward(ids));
    CHECK(((base_logits - adapted).abs().max() / adapted.abs().max()).item<double>() > 1e-4);
  }
}

TEST_CASE("LoRA: 6 steps straight equal 3 steps, resume, 3 steps") {
  const RunOutput straight = train(lora_config("lora_straight"));
  const std::string dir = liger::testing::fresh_dir("lora_resumed");
  const RunOutput first =
      train(liger::testing::tiny_config(dir, lora_overrides()), /*stop_after=*/3);
  REQUIRE(first.result.final_step == 3);
  const RunOutput second =
      train(liger::testing::tiny_config(dir, lora_overrides({"checkpoint.resume=auto"})));
  REQUIRE(second.result.final_step == 6);
  CHECK(liger::testing::max_relative_difference(second.adapters, straight.adapters) <= 1e-6);
  CHECK(liger::testing::max_relative_difference(first.adapters, straight.adapters) >
        1e-3);  // it trained on
}

TEST_CASE("LoRA: accumulation and activation checkpointing (glu, full) agree up to rounding") {
  const RunOutput one = train(lora_config("lora_acc_one", {"training.micro_batch_size=8"}));
  const RunOutput four = train(lora_config(
      "lora_acc_four", {"training.micro_batch_size=2", "training.gradient_accumulation_steps=4"}));
  CHECK(liger::testing::max_relative_difference(four.adapters, one.adapters) <= 1e-4);
  for (const char* mode : {"glu", "full"}) {
    INFO("activation_checkpointing " << mode);
    const RunOutput checkpointed =
        train(lora_config(std::string("lora_ckpt_") + mode,
                          {std::string("training.activation_checkpointing=") + mode}));
    CHECK(liger::testing::max_relative_difference(checkpointed.adapters, one.adapters) <= 1e-4);
  }
  // A 5% larger learning rate moves the adapters far more: the checks above can fail.
  const RunOutput faster = train(lora_config("lora_acc_lr", {"training.lr=0.0105"}));
  CHECK(liger::testing::max_relative_difference(faster.adapters, one.adapters) > 1e-3);
}

TEST_CASE(
    "LoRA bf16-mixed: the base frozen in bf16, adapters on bf16 copies of fp32 masters; "
    "modules_to_save trains") {
  const config::TrainConfig c =
      lora_config("lora_bf16", {"training.precision=bf16-mixed", "lora.modules_to_save=[lm_head]",
                                "checkpoint.save_final=true"});
  const RunOutput run = train(c);
  const models::ModelConfig model_config = trainer::resolve_model_config(c, 1024);
  models::Transformer fresh(model_config, kernels::KernelSet::reference(),
                            at::TensorOptions().dtype(at::kBFloat16), at::kBFloat16);
  fresh->init_weights(static_cast<uint64_t>(c.training.seed));
  for (const auto& item : fresh->named_parameters()) {
    INFO(item.key());
    CHECK(run.base.at(item.key()).scalar_type() == at::kBFloat16);
    if (item.key() == "lm_head.weight") {
      CHECK_FALSE(torch::equal(run.base.at(item.key()), item.value()));  // saved module: trained
    } else {
      CHECK(torch::equal(run.base.at(item.key()), item.value()));  // frozen: bitwise the init
    }
  }
  // The checkpoint keeps fp32 masters of what trains, the saved head included.
  const trainer::NamedTensors saved =
      trainer::CheckpointManager::read_whole_parameters(c.checkpoint.output_dir + "/step-6");
  CHECK(saved.size() == 2 * 7 * 2 + 1);
  for (const auto& [name, value] : saved) {
    INFO(name);
    CHECK(value.scalar_type() == at::kFloat);
  }
}

TEST_CASE("LoRA config errors name the key and the fix") {
  auto message = [](const std::vector<std::string>& overrides) -> std::string {
    try {
      trainer::Trainer t(lora_config("lora_errors", overrides));
    } catch (const std::exception& error) {
      return error.what();
    }
    return "(accepted)";
  };
  const std::string typo = message({"lora.target_modules=[q_proj, q_prj]"});
  CHECK(typo.find("lora.target_modules") != std::string::npos);
  CHECK(typo.find("'q_prj'") != std::string::npos);
  CHECK(typo.find("did you mean 'q_proj'") != std::string::npos);
  const std::string head = message({"lora.target_modules=[lm_head]"});
  CHECK(head.find("lora.modules_to_save") != std::string::npos);
  CHECK(message({"lora.rank=0"}).find("lora.rank") != std::string::npos);
  CHECK(message({"lora.modules_to_save=[norm]"}).find("lora.modules_to_save") != std::string::npos);
  // A family without a projection: lora_options is checked against what the model has.
  config::TrainConfig c =
      lora_config("lora_errors_family", {"lora.target_modules=[q_proj, gate_proj]"});
  try {
    trainer::lora_options(c, {models::LoraTarget::q_proj, models::LoraTarget::k_proj});
    FAIL("a target the family lacks was accepted");
  } catch (const config::ConfigError& error) {
    CHECK(std::string(error.what()).find("no gate_proj") != std::string::npos);
  }
  CHECK(message({"model.adapter=none", "model.adapter_path=/nowhere"}).find("model.adapter") !=
        std::string::npos);
  const std::string dropout =
      message({"lora.dropout=0.1", "training.activation_checkpointing=full"});
  CHECK(dropout.find("lora.dropout") != std::string::npos);
  CHECK(dropout.find("training.activation_checkpointing") != std::string::npos);
}

TEST_CASE("LoRA memory estimate: no gradient or AdamW state for the frozen base") {
  config::TrainConfig full = liger::testing::tiny_config(liger::testing::fresh_dir("lora_mem"), {});
  config::TrainConfig lora = lora_config("lora_mem2");
  const models::ModelConfig m = models::preset("llama3_8b");
  full.data.seq_len = lora.data.seq_len = 4096;
  full.training.micro_batch_size = lora.training.micro_batch_size = 1;
  const trainer::MemoryEstimate a = trainer::estimate_memory(m, full, 1);
  const trainer::MemoryEstimate b = trainer::estimate_memory(m, lora, 1);
  models::LoraOptions options = trainer::lora_options(lora, models::lora_targets_of(m));
  const double adapters = static_cast<double>(models::lora_parameter_count(m, options));
  CHECK(b.gradients == Approx(adapters * 4));  // fp32 parameters here: their gradients only
  CHECK(b.optimizer == Approx(adapters * 8));
  CHECK(b.parameters == Approx((static_cast<double>(m.num_parameters()) + adapters) * 4));
  CHECK(b.loss < a.loss);  // no [vocab, hidden] fp32 gradient of a frozen head
}

TEST_CASE(
    "LoRA with cuda graphs: a replayed step trains as the eager one (GPU); bf16 base frozen "
    "bitwise") {
  if (!torch::cuda::is_available()) {
    WARN("no GPU: the LoRA cuda-graph comparison is skipped");
    return;
  }
  for (const std::string precision : {"bf16-mixed", "bf16"}) {
    INFO("training.precision " << precision);
    const std::vector<std::string> common = {"training.device=cuda",
                                             "training.precision=" + precision,
                                             "training.steps=8",
                                             "training.micro_batch_size=4",
                                             "training.gradient_accumulation_steps=2",
                                             "training.warmup_steps=3",
                                             "lora.modules_to_save=[lm_head]",
                                             "training.activation_checkpointing=glu"};
    auto with = [&](const std::string& name, bool graphs) {
      std::vector<std::string> o = common;
      o.push_back(std::string("training.cuda_graphs=") + (graphs ? "true" : "false"));
      return lora_config(name, o);
    };
    const config::TrainConfig eager_config = with("lora_graphs_eager", false);
    const RunOutput eager = train(eager_config);
    const config::TrainConfig graph_config = with("lora_graphs_replayed", true);
    const RunOutput replayed = train(graph_config);
    const auto a = read_metrics(graph_config.checkpoint.output_dir),
               b = read_metrics(eager_config.checkpoint.output_dir);
    REQUIRE(a.size() == 8);
    REQUIRE(b.size() == 8);
    double worst = 0.0;
    for (size_t i = 0; i < a.size(); ++i) {
      worst = std::max(worst, std::abs(a[i]["loss"].get<double>() - b[i]["loss"].get<double>()) /
                                  std::abs(b[i]["loss"].get<double>()));
    }
    const double params =
        liger::testing::max_relative_difference(replayed.adapters, eager.adapters);
    INFO("worst per-step loss difference " << worst << ", adapters " << params);
    CHECK(worst <= 1e-3);
    CHECK(params <= 1e-2);
    for (const auto& [name, value] : eager.base) {
      INFO(name);
      if (name != "lm_head.weight")
        CHECK(torch::equal(value, replayed.base.at(name)));  // both the frozen init
    }
  }
}
