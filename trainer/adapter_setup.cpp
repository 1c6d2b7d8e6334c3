#include "trainer/adapter_setup.h"

#include "models/hf.h"
#include "models/peft.h"
#include "trainer/config_schema.h"
#include "trainer/model_setup.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>

namespace liger::trainer {
namespace {

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

// The adapters, with their options from the config (and, with
// model.adapter_path, checked against the folder's adapter_config.json).
models::LoraOptions checked_options(const models::TransformerImpl& model,
                                    const config::TrainConfig& c) {
  models::LoraOptions options = lora_options(c, models::lora_targets_of(model.config()));
  if (c.model.adapter_path.empty()) return options;
  models::PeftAdapterConfig folder;
  try {
    folder = models::read_peft_adapter_config(c.model.adapter_path);
  } catch (const models::ModelIoError& error) {
    throw config::ConfigError(std::string("model.adapter_path: ") + error.what());
  }
  auto mismatch = [&](const std::string& key, const std::string& ours, const std::string& theirs) {
    return config::ConfigError("model.adapter_path = '" + c.model.adapter_path +
                               "' was trained with " + theirs + " but " + key + " = " + ours +
                               "; set " + key + " to match the adapter");
  };
  if (folder.lora.rank != options.rank) {
    throw mismatch("lora.rank", std::to_string(options.rank),
                   "r = " + std::to_string(folder.lora.rank));
  }
  if (std::abs(folder.lora.alpha - options.alpha) > 1e-9 * std::max(1.0, std::abs(options.alpha))) {
    throw mismatch("lora.alpha", c10::str(options.alpha),
                   c10::str("lora_alpha = ", folder.lora.alpha));
  }
  if (folder.lora.targets != options.targets) {
    std::vector<std::string> names;
    for (const auto t : folder.lora.targets) names.push_back(models::lora_target_name(t));
    throw mismatch("lora.target_modules", joined(c.lora.target_modules),
                   "target_modules [" + joined(names) + "]");
  }
  std::vector<std::string> ours = lora_modules_to_save(c), theirs = folder.modules_to_save;
  std::sort(ours.begin(), ours.end());
  std::sort(theirs.begin(), theirs.end());
  if (ours != theirs) {
    throw mismatch("lora.modules_to_save", "[" + joined(ours) + "]",
                   "modules_to_save [" + joined(theirs) + "]");
  }
  return options;
}

// Freezes the base model but the saved modules; returns the saved modules' parameter names.
std::vector<std::string> freeze_base(models::TransformerImpl& model, const config::TrainConfig& c) {
  std::vector<std::string> saved;
  for (const std::string& module : lora_modules_to_save(c)) {
    const std::string name = models::saveable_parameter_name(model.config(), module);
    if (std::find(saved.begin(), saved.end(), name) == saved.end())
      saved.push_back(name);  // tied: one tensor
  }
  for (auto& item : model.named_parameters()) {
    const bool trains = std::find(saved.begin(), saved.end(), item.key()) != saved.end();
    item.value().set_requires_grad(trains);
  }
  return saved;
}

}  // namespace

bool uses_lora(const config::TrainConfig& c) {
  return c.model.adapter == config::Adapter::lora;
}

c10::ScalarType base_parameter_dtype(const config::TrainConfig& c) {
  return uses_lora(c) ? compute_dtype(c) : parameter_dtype(c);
}

models::LoraOptions lora_options(const config::TrainConfig& c,
                                 const std::vector<models::LoraTarget>& family_targets) {
  models::LoraOptions options;
  if (c.lora.rank < 1) {
    throw config::ConfigError("lora.rank = " + std::to_string(c.lora.rank) +
                              ": the rank must be >= 1 (e.g. 16)");
  }
  options.rank = c.lora.rank;
  options.alpha = config::resolved_lora_alpha(c.lora);
  options.dropout = c.lora.dropout;
  if (options.dropout > 0.0 &&
      c.training.activation_checkpointing == config::ActivationCheckpointing::full) {
    // The recomputed layer would draw other dropout masks than its forward did.
    throw config::ConfigError(
        "lora.dropout = " + c10::str(options.dropout) +
        " with training.activation_checkpointing = full: the recomputed layers would drop "
        "other elements than the forward did; use activation_checkpointing glu or none, or "
        "lora.dropout: 0");
  }
  const std::vector<std::string> known = models::all_lora_target_names();
  std::vector<std::string> names;
  for (const std::string& name : c.lora.target_modules) {
    if (name == "all_linear" || name == "all-linear") {  // every target the model has
      for (const models::LoraTarget target : family_targets)
        names.push_back(models::lora_target_name(target));
    } else if (name == "lm_head" || name == "embed_tokens") {
      throw config::ConfigError(
          "lora.target_modules: '" + name +
          "' is not a LoRA target; train it in full with lora.modules_to_save: [" + name + "]");
    } else if (!models::lora_target_from_name(name)) {
      std::vector<std::string> choices = known;
      choices.push_back("all_linear");
      throw config::ConfigError("lora.target_modules: unknown module '" + name +
                                "'; did you mean '" + config::closest_name(name, choices) +
                                "'? (one of " + joined(choices) + ")");
    } else {
      names.push_back(name);
    }
  }
  if (names.empty()) {
    throw config::ConfigError(
        "lora.target_modules is empty; list the projections to adapt (e.g. [all_linear])");
  }
  for (int i = 0; i < models::kNumLoraTargets; ++i) {  // in the model's order, each once
    const auto target = static_cast<models::LoraTarget>(i);
    if (std::find(names.begin(), names.end(), models::lora_target_name(target)) == names.end())
      continue;
    if (std::find(family_targets.begin(), family_targets.end(), target) == family_targets.end()) {
      throw config::ConfigError(std::string("lora.target_modules: this model has no ") +
                                models::lora_target_name(target) +
                                " to adapt (an MoE model's experts take no adapters here); "
                                "remove it from lora.target_modules");
    }
    options.targets.push_back(target);
  }
  return options;
}

std::vector<std::string> lora_modules_to_save(const config::TrainConfig& c) {
  std::vector<std::string> out;
  for (const std::string& name : c.lora.modules_to_save) {
    const auto& saveable = models::saveable_module_names();
    if (std::find(saveable.begin(), saveable.end(), name) == saveable.end()) {
      throw config::ConfigError("lora.modules_to_save: '" + name +
                                "' cannot be trained in full here; use " + joined(saveable) +
                                " (projections get adapters: lora.target_modules)");
    }
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  }
  return out;
}

NamedTensors setup_trainable_parameters(models::TransformerImpl& model,
                                        const config::TrainConfig& c) {
  NamedTensors trainable;
  if (!uses_lora(c)) {
    for (const auto& item : model.named_parameters())
      trainable.emplace_back(item.key(), item.value());
    return trainable;
  }
  torch::NoGradGuard no_grad;
  const models::LoraOptions options = checked_options(model, c);
  const std::vector<std::string> saved = freeze_base(model, c);
  // The frozen q|k|v weights in one buffer: no copy of them per step.
  model.pack_frozen_qkv_weights();
  const at::Tensor any = model.parameters().front();
  models::LoraAdapters adapters(model.config(), options,
                                at::TensorOptions().dtype(parameter_dtype(c)).device(any.device()));
  model.set_lora(adapters.ptr());
  if (c.model.adapter_path.empty()) {
    adapters->init_weights(models::lora_init_seed(static_cast<uint64_t>(c.training.seed)));
  }
  // The saved modules train with the run's precision: fp32 masters under
  // bf16-mixed (cast: the frozen-dtype value widened, exact).
  auto parameters = model.named_parameters();
  for (const std::string& name : saved) {
    at::Tensor& p = parameters[name];
    if (p.scalar_type() != parameter_dtype(c)) p.set_data(p.to(parameter_dtype(c)));
  }
  if (!c.model.adapter_path.empty()) {
    try {
      models::load_peft_adapter(model, c.model.adapter_path, lora_modules_to_save(c));
    } catch (const models::ModelIoError& error) {
      throw config::ConfigError(std::string("model.adapter_path: ") + error.what());
    }
  }
  for (const auto& item : adapters->named_parameters())
    trainable.emplace_back(item.key(), item.value());
  for (const std::string& name : saved) trainable.emplace_back(name, parameters[name]);
  return trainable;
}

void attach_adapters_on_meta(models::TransformerImpl& model, const config::TrainConfig& c) {
  if (!uses_lora(c)) return;
  const models::LoraOptions options = checked_options(model, c);
  const std::vector<std::string> saved = freeze_base(model, c);
  auto parameters = model.named_parameters();
  for (const std::string& name : saved) {
    at::Tensor& p = parameters[name];
    p.set_data(at::empty(p.sizes(),
                         p.options().dtype(parameter_dtype(c))));  // meta: shapes and dtypes only
  }
  model.set_lora(
      models::LoraAdapters(model.config(), options,
                           at::TensorOptions().dtype(parameter_dtype(c)).device(at::kMeta))
          .ptr());
}

std::function<at::Tensor(const std::string&)> adapter_path_values(
    const models::TransformerImpl& model, const config::TrainConfig& c) {
  if (!uses_lora(c) || c.model.adapter_path.empty())
    return [](const std::string&) { return at::Tensor(); };
  std::map<std::string, at::Tensor> stored;
  try {
    for (auto& [name, value] : models::read_peft_adapter_tensors(c.model.adapter_path))
      stored.emplace(name, value);
  } catch (const models::ModelIoError& error) {
    throw config::ConfigError(std::string("model.adapter_path: ") + error.what());
  }
  const bool tied = model.config().tie_embeddings;
  std::vector<std::string> saved;
  for (const std::string& module : lora_modules_to_save(c)) {
    saved.push_back(models::saveable_parameter_name(model.config(), module));
  }
  return [stored, tied, saved, dir = c.model.adapter_path](const std::string& name) {
    const bool wanted = models::is_lora_parameter_name(name) ||
                        std::find(saved.begin(), saved.end(), name) != saved.end();
    if (!wanted) return at::Tensor();  // the frozen base: not the adapter's
    auto found = stored.find(name);
    if (found == stored.end() && tied && name == "model.embed_tokens.weight")
      found = stored.find("lm_head.weight");
    if (found == stored.end()) {
      throw config::ConfigError("model.adapter_path: " + dir +
                                "/adapter_model.safetensors has no tensor " +
                                models::peft_tensor_name(name));
    }
    return found->second;
  };
}

void load_lora_checkpoint(models::TransformerImpl& model, const config::TrainConfig& c,
                          const std::string& dir) {
  torch::NoGradGuard no_grad;
  // The frozen base, as the run built it.
  if (c.model.hf_path.empty()) {
    model.init_weights(static_cast<uint64_t>(c.training.seed));
  } else {
    try {
      models::load_hf_weights(model, c.model.hf_path);
    } catch (const models::ModelIoError& error) {
      throw config::ConfigError(
          "checkpoint " + dir +
          ": its base model (model.hf_path) could not be loaded: " + error.what());
    }
  }
  config::TrainConfig fresh = c;
  fresh.model.adapter_path.clear();  // the checkpoint's adapters replace the folder's
  fresh.training.master_weights = false;
  fresh.training.precision = config::Precision::auto_;
  const c10::ScalarType dtype = model.parameters().front().scalar_type();
  fresh.model.dtype = dtype == at::kBFloat16 ? config::Dtype::bf16
                      : dtype == at::kHalf   ? config::Dtype::fp16
                                             : config::Dtype::fp32;
  const NamedTensors trainable = setup_trainable_parameters(model, fresh);
  std::map<std::string, at::Tensor> saved;
  for (auto& [name, value] : CheckpointManager::read_whole_parameters(dir))
    saved.emplace(name, value);
  for (const auto& [name, target] : trainable) {
    const auto found = saved.find(name);
    if (found == saved.end() || found->second.sizes() != target.sizes()) {
      throw config::ConfigError("checkpoint " + dir + " has no parameter " + name + " of shape " +
                                c10::str(target.sizes()) +
                                ": it was made with another lora: section or model");
    }
    target.detach().copy_(found->second);  // cast: the saved dtype -> the loaded model's
  }
}

}  // namespace liger::trainer
