// LoRA parity with Hugging Face transformers + PEFT (the oracle):
// tests/models/peft_oracle.py builds small random base models with awkward
// sizes (Llama with saved embed_tokens and lm_head, Mistral with adapters on
// q, v, o and down only, Gemma tied with all seven, Qwen2 with its frozen
// q/k/v biases under adapters on q and v, not k), puts PEFT adapters with
// random A and B on them, saves both, and records PEFT's logits, loss and
// every trainable gradient on one batch. We load the base with model.hf_path's
// loader and the adapter folder with ours, run forward + the trainer's loss +
// backward with the kernels off and on, with and without the recomputed GLU,
// and compare; the frozen base must get no gradient. Then we change the
// adapters (one SGD step), export them as a PEFT folder and as a merged
// model: PEFT must load the folder with the logits of its own model holding
// the same tensors (1e-6: names, rank, alpha, targets and saved modules all
// right) and with our logits (1e-5), transformers the merged model with ours.
//
// CPU, fp32: loss, logits and gradients to 1e-5 (max |ours - PEFT| / max |PEFT|).
#include "kernels/registry.h"
#include "models/hf.h"
#include "models/lora.h"
#include "models/peft.h"
#include "models/safetensors.h"
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/models/parity_util.h"
#include "trainer/loss.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <iomanip>
#include <iostream>

using namespace liger;

namespace {

constexpr double kTolerance = 1e-5;

// Runs the oracle once per process; returns its folder.
const std::string& oracle_dir() {
  static const std::string dir = [] {
    const std::string out = testing::temp_dir("lora_parity");
    const std::string command =
        testing::python() + " " + testing::repo_dir() + "/tests/models/peft_oracle.py make " + out;
    const int status = testing::run_and_print(command);
    if (status != 0) {
      throw std::runtime_error("the PEFT oracle failed (exit " + std::to_string(status) +
                               "): are transformers and peft "
                               "installed for " +
                               testing::python() + "? (scripts/setup.sh installs them into .venv)");
    }
    return out;
  }();
  return dir;
}

std::vector<std::string> cases() {
  std::ifstream in(oracle_dir() + "/cases.json");
  return nlohmann::json::parse(in).at("cases").get<std::vector<std::string>>();
}

// The HF base of `folder` with the PEFT adapter of `folder`/adapter loaded,
// the base frozen but the saved modules.
models::Transformer adapted_model(const std::string& folder, const kernels::KernelToggles& toggles,
                                  bool recompute, std::vector<std::string>& modules_to_save) {
  const models::ModelConfig config = models::read_hf_config(folder + "/hf");
  const auto set = kernels::resolve_kernels(toggles, c10::Device(c10::kCPU), at::kFloat);
  models::Transformer model(config, set, at::TensorOptions().dtype(at::kFloat), at::kFloat);
  models::load_hf_weights(*model, folder + "/hf");
  const models::PeftAdapterConfig adapter = models::read_peft_adapter_config(folder + "/adapter");
  modules_to_save = adapter.modules_to_save;
  std::vector<std::string> saved;
  for (const auto& m : modules_to_save) saved.push_back(models::saveable_parameter_name(config, m));
  for (auto& item : model->named_parameters()) {
    item.value().set_requires_grad(std::find(saved.begin(), saved.end(), item.key()) !=
                                   saved.end());
  }
  models::LoraAdapters adapters(config, adapter.lora, at::TensorOptions().dtype(at::kFloat));
  model->set_lora(adapters.ptr());
  models::load_peft_adapter(*model, folder + "/adapter", modules_to_save);
  model->set_recompute_glu(recompute);
  model->train();
  return model;
}

// Every trainable tensor of `model` by our name.
std::vector<std::pair<std::string, at::Tensor>> trainable(models::TransformerImpl& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model.lora()->named_parameters())
    out.emplace_back(item.key(), item.value());
  for (const auto& item : model.named_parameters()) {
    if (item.value().requires_grad()) out.emplace_back(item.key(), item.value());
  }
  return out;
}

}  // namespace

TEST_CASE("LoRA parity: logits, loss and every adapter gradient equal PEFT's, the base gets none") {
  kernels::KernelToggles fused_ce;
  fused_ce.fused_linear_cross_entropy = false;
  fused_ce.cross_entropy = true;
  const std::vector<std::pair<const char*, kernels::KernelToggles>> variants = {
      {"kernels off", kernels::KernelToggles::all_off()},
      {"kernels on (flce)", {}},
      {"kernels on (ce)", fused_ce}};
  const std::vector<std::string> names = cases();
  REQUIRE(names.size() == 4);
  std::cout << std::scientific << std::setprecision(2);
  for (const std::string& name : names) {
    const std::string folder = oracle_dir() + "/" + name;
    const models::safetensors::File oracle(folder + "/oracle.safetensors");
    const at::Tensor ids = oracle.read("input_ids"), labels = oracle.read("labels");
    const double peft_loss = oracle.read("loss").item<double>();
    size_t oracle_grads = 0;
    for (const auto& info : oracle.tensors())
      oracle_grads += info.name.rfind("grad.", 0) == 0 ? 1 : 0;
    for (const auto& [variant, toggles] : variants) {
      for (const bool recompute : {false, true}) {
        INFO(name << ", " << variant << ", recomputed GLU " << recompute);
        std::vector<std::string> modules_to_save;
        models::Transformer model = adapted_model(folder, toggles, recompute, modules_to_save);
        const at::Tensor hidden = model->forward(ids);
        const at::Tensor logits = model->logits(hidden);
        const int64_t targets = labels.ne(-100).sum().item<int64_t>();
        const at::Tensor loss =
            trainer::token_loss(*model, hidden, labels, static_cast<double>(targets), 256.0);
        loss.backward();
        const double loss_error = std::abs(loss.item<double>() - peft_loss) / std::abs(peft_loss);
        const double logits_error = testing::relative_to_max(logits, oracle.read("logits"));
        CHECK(loss_error <= kTolerance);
        CHECK(logits_error <= kTolerance);
        double worst = 0.0;
        size_t compared = 0;
        for (const auto& [pname, p] : trainable(*model)) {
          INFO(pname);
          REQUIRE(oracle.find("grad." + pname) != nullptr);
          REQUIRE(p.grad().defined());
          const double error = testing::relative_to_max(p.grad(), oracle.read("grad." + pname));
          CHECK(error <= kTolerance);
          worst = std::max(worst, error);
          ++compared;
        }
        CHECK(compared == oracle_grads);  // no PEFT trainable tensor left unchecked
        for (const auto& item : model->named_parameters()) {
          if (!item.value().requires_grad()) CHECK_FALSE(item.value().grad().defined());
        }
        std::cout << std::left << std::setw(8) << name << std::setw(19) << variant
                  << (recompute ? " glu " : "     ") << " loss " << loss_error << "  logits "
                  << logits_error << "  grads(" << compared << ") worst " << worst << "\n";
      }
    }
  }
}

TEST_CASE(
    "LoRA export: PEFT loads our adapter folder, transformers our merged model, both with our "
    "logits") {
  for (const std::string& name : cases()) {
    INFO(name);
    const std::string folder = oracle_dir() + "/" + name;
    std::vector<std::string> modules_to_save;
    models::Transformer model =
        adapted_model(folder, kernels::KernelToggles{}, false, modules_to_save);
    // One SGD step on what trains, so the export is not the oracle's adapter.
    const models::safetensors::File oracle(folder + "/oracle.safetensors");
    const at::Tensor ids = oracle.read("input_ids"), labels = oracle.read("labels");
    trainer::token_loss(*model, model->forward(ids), labels, 20.0, 256.0).backward();
    {
      torch::NoGradGuard no_grad;
      for (auto& [pname, p] : trainable(*model)) p.sub_(p.grad(), 0.5);
    }
    model->eval();
    const at::Tensor probe = (ids * 7 + 3).remainder(model->config().vocab_size);
    at::Tensor ours;
    {
      torch::NoGradGuard no_grad;
      ours = model->logits(model->forward(probe)).contiguous();
    }
    std::vector<std::pair<std::string, at::Tensor>> written = {{"input_ids", probe},
                                                               {"logits", ours}};
    for (const auto& [pname, p] : trainable(*model))
      written.emplace_back("param." + pname, p.detach().contiguous());
    models::safetensors::write(folder + "/ours.safetensors", written);
    models::PeftExportOptions options;
    options.modules_to_save = modules_to_save;
    models::save_peft_adapter(*model, folder + "/export_adapter", options);

    // Read back by our own loader: the same tensors.
    std::vector<std::string> unused;
    models::Transformer again = adapted_model(folder, kernels::KernelToggles{}, false, unused);
    models::load_peft_adapter(*again, folder + "/export_adapter", modules_to_save);
    for (const auto& [pname, p] : trainable(*model)) {
      INFO(pname);
      bool found = false;
      for (const auto& [qname, q] : trainable(*again)) {
        if (qname == pname) {
          CHECK(torch::equal(p.detach(), q.detach()));
          found = true;
        }
      }
      CHECK(found);
    }

    // Merged: W + alpha/r B A computes the adapted model's logits as a plain model.
    models::merge_lora(*model);
    CHECK(model->lora() == nullptr);
    {
      torch::NoGradGuard no_grad;
      CHECK(testing::relative_to_max(model->logits(model->forward(probe)), ours) <= 1e-5);
    }
    models::save_hf_model(*model, folder + "/export_merged", {});
  }
  const std::string command = testing::python() + " " + testing::repo_dir() +
                              "/tests/models/peft_oracle.py check " + oracle_dir();
  CHECK(testing::run_and_print(command) == 0);
}
