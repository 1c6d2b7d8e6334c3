// Preference training against Hugging Face (tests/trainer/preference_oracle.py):
// a small random Llama, four pairs of token ids, and for DPO (sigmoid with
// label smoothing and an NLL term, ipo, hinge), ORPO and SimPO the loss, the
// reported numbers and every parameter gradient, computed by HF one sequence
// at a time. Here the pairs are packed two per micro-batch into shared rows,
// accumulated over two micro-batches, with the kernels off (materialised
// logits) and on (the chunked composite), the reference a frozen copy of the
// starting weights. Tolerance 1e-5 relative (fp32, CPU). Then the first DPO
// step with preference.reference: model has loss ln 2, with either source of
// reference log-probs, and with LoRA the reference is the base model.
#include "kernels/registry.h"
#include "models/hf.h"
#include "models/safetensors.h"
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/models/parity_util.h"
#include "trainer/adapter_setup.h"
#include "trainer/config.h"
#include "trainer/preference_step.h"

#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

using namespace liger;

namespace {

constexpr double kTolerance = 1e-5;

// Runs the oracle once per process; returns its folder.
const std::string& oracle_dir() {
  static const std::string dir = [] {
    const std::string out = testing::temp_dir("preference_oracle");
    const int status = testing::run_and_print(testing::python() + " " + testing::repo_dir() +
                                              "/tests/trainer/preference_oracle.py make " + out);
    if (status != 0) {
      throw std::runtime_error("the preference oracle failed (exit " + std::to_string(status) +
                               "): is transformers installed for " + testing::python() + "?");
    }
    return out;
  }();
  return dir;
}

std::shared_ptr<const std::vector<data::PreferencePair>> oracle_pairs() {
  std::ifstream in(oracle_dir() + "/pairs.json");
  const nlohmann::json pairs = nlohmann::json::parse(in);
  auto out = std::make_shared<std::vector<data::PreferencePair>>();
  for (const auto& pair : pairs) {
    data::PreferencePair p;
    for (auto [side, doc] : {std::pair<const char*, data::Document*>{"chosen", &p.chosen},
                             {"rejected", &p.rejected}}) {
      doc->tokens = pair.at(side).at("tokens").get<std::vector<int32_t>>();
      doc->loss_mask = pair.at(side).at("mask").get<std::vector<uint8_t>>();
    }
    out->push_back(std::move(p));
  }
  return out;
}

// The config of a variant: its preference: keys from cases.json; two pairs
// per micro-batch, two micro-batches, rows of 16 tokens (sequences share rows).
config::TrainConfig variant_config(const nlohmann::json& variant, const std::string& output_dir,
                                   const std::string& reference = "model",
                                   const std::string& more_yaml = "") {
  std::string yaml = "training:\n  objective: " + variant.at("objective").get<std::string>() +
                     "\n  micro_batch_size: 2\n  gradient_accumulation_steps: 2\n"
                     "data:\n  seq_len: 16\ncheckpoint:\n  output_dir: " +
                     output_dir + "\npreference:\n  reference: " + reference + "\n";
  for (auto it = variant.begin(); it != variant.end(); ++it) {
    if (it.key() == "objective") continue;
    yaml += "  " + it.key() + ": " + it.value().dump() + "\n";
  }
  return config::parse_config(yaml + more_yaml, "test");
}

struct Variant {
  const char* name;
  kernels::KernelToggles toggles;
};

std::vector<Variant> kernel_variants() {
  return {{"kernels off", kernels::KernelToggles::all_off()},
          {"kernels on", kernels::KernelToggles{}}};
}

models::Transformer load_model(const std::string& folder, const kernels::KernelToggles& toggles) {
  const models::ModelConfig config = models::read_hf_config(folder);
  const kernels::KernelSet kernel_set =
      kernels::resolve_kernels(toggles, c10::Device(c10::kCPU), at::kFloat);
  models::Transformer model(config, kernel_set, at::TensorOptions().dtype(at::kFloat), at::kFloat);
  models::load_hf_weights(*model, folder);
  return model;
}

}  // namespace

TEST_CASE("preference losses, numbers and gradients equal HF's: DPO, ORPO, SimPO", "[preference]") {
  const std::string& dir = oracle_dir();
  std::ifstream in(dir + "/cases.json");
  const nlohmann::json variants = nlohmann::json::parse(in).at("variants");
  const auto pairs = oracle_pairs();
  std::cout << std::scientific << std::setprecision(2);
  for (auto it = variants.begin(); it != variants.end(); ++it) {
    const models::safetensors::File oracle(dir + "/" + it.key() + ".safetensors");
    for (const Variant& kv : kernel_variants()) {
      INFO(it.key() << ", " << kv.name);
      const config::TrainConfig config = variant_config(it.value(), testing::temp_dir("pref_run"));
      // The reference from the starting weights, then the policy's weights in the model.
      models::Transformer model = load_model(dir + "/reference", kv.toggles);
      trainer::PreferenceTraining training(config, pairs, c10::Device(c10::kCPU));
      training.prepare_reference(*model, /*resuming=*/false);
      models::load_hf_weights(*model, dir + "/policy");

      const std::vector<data::PreferenceBatch> batches = {training.loader().next(),
                                                          training.loader().next()};
      REQUIRE(batches[0].rows < 2 * batches[0].num_pairs);  // sequences share rows
      const trainer::PreferenceStepOutputs out = training.accumulate(*model, batches, nullptr);

      const double hf_loss = oracle.read("loss").item<double>();
      const double loss_error =
          std::abs(out.loss_total.item<double>() - hf_loss) / std::abs(hf_loss);
      CHECK(loss_error <= kTolerance);
      for (const auto& [name, value] : out.metrics) {
        INFO(name);
        const double expected = oracle.read("stat." + name).item<double>();
        CHECK(std::abs(value - expected) <= kTolerance * std::max(1.0, std::abs(expected)));
      }
      double worst = 0.0;
      size_t compared = 0;
      for (const auto& item : model->named_parameters()) {
        INFO(item.key());
        REQUIRE(item.value().grad().defined());
        const double error =
            testing::relative_to_max(item.value().grad(), oracle.read("grad." + item.key()));
        CHECK(error <= kTolerance);
        worst = std::max(worst, error);
        ++compared;
      }
      CHECK(compared == model->named_parameters().size());
      std::cout << it.key() << " " << kv.name << ": loss " << loss_error << ", grads(" << compared
                << ") worst " << worst << "\n";
    }
  }
}

TEST_CASE("the first DPO step with the reference equal to the policy has loss ln 2",
          "[preference]") {
  const std::string& dir = oracle_dir();
  const auto pairs = oracle_pairs();
  const nlohmann::json sigmoid = {{"objective", "dpo"}, {"loss_type", "sigmoid"}, {"beta", 0.1}};
  for (const char* reference : {"model", "precomputed"}) {
    for (const Variant& kv : kernel_variants()) {
      INFO(reference << ", " << kv.name);
      const config::TrainConfig config =
          variant_config(sigmoid, testing::temp_dir("pref_ln2"), reference);
      models::Transformer model = load_model(dir + "/policy", kv.toggles);
      trainer::PreferenceTraining training(config, pairs, c10::Device(c10::kCPU));
      training.prepare_reference(*model, /*resuming=*/false);
      const std::vector<data::PreferenceBatch> batches = {training.loader().next(),
                                                          training.loader().next()};
      const trainer::PreferenceStepOutputs out = training.accumulate(*model, batches, nullptr);
      const double loss = out.loss_total.item<double>();
      // model: the reference runs the same packed rows as the policy (exact);
      // precomputed: other rows (the file's order), equal to rounding.
      CHECK(std::abs(loss - std::log(2.0)) <= (std::string(reference) == "model" ? 1e-7 : 1e-6));
      if (std::string(reference) == "precomputed") {
        // A resumed run reads the file instead of computing (the model has moved on since).
        REQUIRE(std::ifstream(training.reference_file()).good());
        trainer::PreferenceTraining resumed(config, pairs, c10::Device(c10::kCPU));
        models::Transformer moved = load_model(dir + "/reference", kv.toggles);
        resumed.prepare_reference(*moved, /*resuming=*/true);
        const std::vector<data::PreferenceBatch> again = {resumed.loader().next(),
                                                          resumed.loader().next()};
        const auto resumed_out = resumed.accumulate(*model, again, nullptr);
        CHECK(resumed_out.loss_total.item<double>() == loss);
        // A file for other pairs is an error naming it and the fix.
        auto fewer = std::make_shared<std::vector<data::PreferencePair>>(*pairs);
        fewer->pop_back();
        fewer->pop_back();
        trainer::PreferenceTraining other(config, fewer, c10::Device(c10::kCPU));
        std::string message;
        try {
          other.prepare_reference(*moved, /*resuming=*/true);
        } catch (const std::exception& e) {
          message = e.what();
        }
        CHECK(message.find("reference_logps.bin: holds no reference log-probs for the 2 pairs") !=
              std::string::npos);
      }
    }
  }
}

TEST_CASE("with LoRA the reference is the base model: the adapters are off for it, on after",
          "[preference]") {
  const std::string& dir = oracle_dir();
  const auto pairs = oracle_pairs();
  const nlohmann::json sigmoid = {{"objective", "dpo"}, {"loss_type", "sigmoid"}, {"beta", 0.5}};
  const config::TrainConfig config =
      variant_config(sigmoid, testing::temp_dir("pref_lora"), "model",
                     "model:\n  adapter: lora\nlora:\n  rank: 4\n");
  REQUIRE(trainer::uses_lora(config));

  models::Transformer model = load_model(dir + "/policy", kernels::KernelToggles{});
  const auto trainable = trainer::setup_trainable_parameters(*model, config);
  {
    torch::NoGradGuard no_grad;  // B = 0 would make the adapters invisible: move them
    for (const auto& item : trainable) {
      if (item.first.find("lora_B") != std::string::npos) item.second.normal_(0.0, 0.2);
    }
  }
  trainer::PreferenceTraining training(config, pairs, c10::Device(c10::kCPU));
  training.prepare_reference(*model, /*resuming=*/false);
  const std::vector<data::PreferenceBatch> batches = {training.loader().next(),
                                                      training.loader().next()};
  const trainer::PreferenceStepOutputs out = training.accumulate(*model, batches, nullptr);
  REQUIRE(model->lora() != nullptr);  // back on after the reference forward

  // The base model's log-probs of the same batches, from a model without adapters.
  models::Transformer base = load_model(dir + "/policy", kernels::KernelToggles{});
  double base_chosen = 0.0, policy_chosen = 0.0;
  for (const auto& batch : batches) {
    base_chosen += training.sequence_logps(*base, batch).narrow(0, 0, 2).sum().item<double>();
    policy_chosen += training.sequence_logps(*model, batch).narrow(0, 0, 2).sum().item<double>();
  }
  base_chosen /= 4;
  policy_chosen /= 4;
  std::map<std::string, double> metrics(out.metrics.begin(), out.metrics.end());
  CHECK(std::abs(policy_chosen - base_chosen) > 1e-3);  // the adapters change the policy
  CHECK(metrics["logps/chosen"] == Approx(policy_chosen).epsilon(1e-5));
  // rewards/chosen = beta (policy - reference): the reference is the base.
  CHECK(metrics["logps/chosen"] - metrics["rewards/chosen"] / 0.5 ==
        Approx(base_chosen).epsilon(1e-5));
}
