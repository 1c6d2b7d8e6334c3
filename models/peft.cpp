#include "models/peft.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace liger::models {
namespace {

constexpr const char* kPrefix = "base_model.model.";
constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";

// The base projection an adapter of `target` in `layer` sits on.
WeightImpl& base_projection(TransformerImpl& model, int64_t layer, LoraTarget target) {
  auto& decoder = *model.model->layers->ptr(static_cast<size_t>(layer))->as<DecoderLayerImpl>();
  switch (target) {
    case LoraTarget::q_proj: return *decoder.self_attn->q_proj.ptr();
    case LoraTarget::k_proj: return *decoder.self_attn->k_proj.ptr();
    case LoraTarget::v_proj: return *decoder.self_attn->v_proj.ptr();
    case LoraTarget::o_proj: return *decoder.self_attn->o_proj.ptr();
    case LoraTarget::gate_proj: return *decoder.mlp->gate_proj.ptr();
    case LoraTarget::up_proj: return *decoder.mlp->up_proj.ptr();
    case LoraTarget::down_proj: return *decoder.mlp->down_proj.ptr();
  }
  throw std::logic_error("base_projection: unknown target");
}

// Every tensor of the adapter folder a model with these adapters and
// modules_to_save has: our name -> the tensor (the adapters', then the
// saved modules' parameters).
std::vector<std::pair<std::string, at::Tensor>> adapter_tensors(
    const TransformerImpl& model, const std::vector<std::string>& modules_to_save) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  if (model.lora() != nullptr) {
    for (const auto& item : model.lora()->named_parameters())
      out.emplace_back(item.key(), item.value());
  }
  const auto base = model.named_parameters();
  for (const std::string& module : modules_to_save) {
    const std::string name = saveable_parameter_name(model.config(), module);
    out.emplace_back(module == "embed_tokens" ? "model.embed_tokens.weight" : "lm_head.weight",
                     base[name]);
  }
  return out;
}

}  // namespace

std::string peft_tensor_name(const std::string& name) {
  return kPrefix + name;
}

const std::vector<std::string>& saveable_module_names() {
  static const std::vector<std::string> names = {"embed_tokens", "lm_head"};
  return names;
}

std::string saveable_parameter_name(const ModelConfig& config, const std::string& module) {
  if (module == "embed_tokens" || (module == "lm_head" && config.tie_embeddings))
    return "model.embed_tokens.weight";
  if (module == "lm_head") return "lm_head.weight";
  throw std::invalid_argument(
      "'" + module + "' is not a module PEFT can save in full here (embed_tokens, lm_head)");
}

PeftAdapterConfig read_peft_adapter_config(const std::string& dir) {
  const fs::path path = fs::path(dir) / kConfigFile;
  std::ifstream in(path);
  if (!in) {
    throw ModelIoError(
        path.string() +
        ": cannot read it; model.adapter_path must be a PEFT adapter folder "
        "(adapter_config.json + adapter_model.safetensors, what save_pretrained writes)");
  }
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& error) {
    throw ModelIoError(path.string() + ": not valid JSON (" + error.what() + ")");
  }
  auto fail = [&](const std::string& key, const std::string& why) -> ModelIoError {
    return ModelIoError(path.string() + ": " + key + " = " +
                        (j.contains(key) ? j[key].dump() : "(missing)") + ": " + why);
  };
  if (j.value("peft_type", std::string()) != "LORA")
    throw fail("peft_type", "only LoRA adapters (LORA) are supported");
  for (const char* flag : {"use_dora", "use_rslora", "fan_in_fan_out", "lora_bias"}) {
    if (j.contains(flag) && j[flag].is_boolean() && j[flag].get<bool>()) {
      throw fail(flag, "not supported (plain LoRA: y = x W^T + alpha/r x A^T B^T)");
    }
  }
  if (j.contains("bias") && j["bias"].is_string() && j["bias"] != "none")
    throw fail("bias", "only 'none' is supported");
  for (const char* pattern : {"rank_pattern", "alpha_pattern"}) {
    if (j.contains(pattern) && !j[pattern].is_null() && !j[pattern].empty()) {
      throw fail(pattern, "per-module ranks or alphas are not supported");
    }
  }
  for (const char* unsupported :
       {"layers_to_transform", "target_parameters", "trainable_token_indices"}) {
    if (j.contains(unsupported) && !j[unsupported].is_null() && !j[unsupported].empty()) {
      throw fail(unsupported, "not supported");
    }
  }
  PeftAdapterConfig out;
  if (!j.contains("r") || !j["r"].is_number_integer() || j["r"].get<int64_t>() < 1)
    throw fail("r", "expected an integer >= 1");
  out.lora.rank = j["r"].get<int64_t>();
  if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number())
    throw fail("lora_alpha", "expected a number");
  out.lora.alpha = j["lora_alpha"].get<double>();
  out.lora.dropout = j.value("lora_dropout", 0.0);
  const json& targets = j.contains("target_modules") ? j["target_modules"] : json();
  std::vector<std::string> names;
  if (targets.is_string() && (targets == "all-linear" || targets == "all_linear")) {
    names = all_lora_target_names();
  } else if (targets.is_array()) {
    for (const auto& t : targets) {
      if (!t.is_string()) throw fail("target_modules", "expected a list of module names");
      names.push_back(t.get<std::string>());
    }
  } else {
    throw fail("target_modules",
               "expected a list of module names (q_proj, k_proj, v_proj, o_proj, gate_proj, "
               "up_proj, down_proj) or 'all-linear'");
  }
  for (int i = 0; i < kNumLoraTargets; ++i) {  // in our order, whatever the file's
    const auto target = static_cast<LoraTarget>(i);
    if (std::find(names.begin(), names.end(), lora_target_name(target)) != names.end())
      out.lora.targets.push_back(target);
  }
  for (const std::string& name : names) {
    if (!lora_target_from_name(name)) {
      throw fail("target_modules",
                 "'" + name +
                     "' is not a projection this trainer adapts (q_proj, k_proj, v_proj, "
                     "o_proj, gate_proj, up_proj, down_proj)");
    }
  }
  if (j.contains("modules_to_save") && j["modules_to_save"].is_array()) {
    for (const auto& m : j["modules_to_save"]) {
      const std::string name = m.is_string() ? m.get<std::string>() : std::string();
      const auto& saveable = saveable_module_names();
      if (std::find(saveable.begin(), saveable.end(), name) == saveable.end()) {
        throw fail("modules_to_save", "'" + name + "' is not supported (embed_tokens, lm_head)");
      }
      out.modules_to_save.push_back(name);
    }
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> read_peft_adapter_tensors(const std::string& dir) {
  const safetensors::File file((fs::path(dir) / kWeightsFile).string());
  std::vector<std::pair<std::string, at::Tensor>> out;
  const std::string prefix = kPrefix;
  for (const auto& info : file.tensors()) {
    if (info.name.rfind(prefix, 0) != 0) {
      throw ModelIoError(file.path() + ": tensor " + info.name + " does not start with '" + prefix +
                         "': not a PEFT adapter of a causal LM");
    }
    out.emplace_back(info.name.substr(prefix.size()), file.read(info.name));
  }
  return out;
}

void load_peft_adapter(TransformerImpl& model, const std::string& dir,
                       const std::vector<std::string>& modules_to_save) {
  torch::NoGradGuard no_grad;
  const std::string file = (fs::path(dir) / kWeightsFile).string();
  std::map<std::string, at::Tensor> stored;
  for (auto& [name, value] : read_peft_adapter_tensors(dir)) stored.emplace(name, value);
  const auto targets = adapter_tensors(model, modules_to_save);
  for (const auto& [name, target] : targets) {
    const auto found = stored.find(name);
    if (found == stored.end()) {
      throw ModelIoError(
          file + ": has no tensor " + peft_tensor_name(name) +
          " (the adapter was made for other target modules, modules_to_save or layers)");
    }
    if (found->second.sizes() != target.sizes()) {
      throw ModelIoError(file + ": " + peft_tensor_name(name) + " has shape " +
                         c10::str(found->second.sizes()) + " but the model expects " +
                         c10::str(target.sizes()) + " (another rank or base model)");
    }
  }
  for (const auto& [name, value] : stored) {
    bool used = false;
    for (const auto& item : targets) used = used || item.first == name;
    if (!used) {
      throw ModelIoError(
          file + ": tensor " + peft_tensor_name(name) +
          " has no place in this model (another model, or modules_to_save not configured)");
    }
  }
  // cast: stored dtype -> each parameter's dtype and device
  for (const auto& [name, target] : targets) target.detach().copy_(stored.at(name));
}

void save_peft_adapter(const TransformerImpl& model, const std::string& dir_text,
                       const PeftExportOptions& options) {
  TORCH_CHECK(model.lora() != nullptr, "save_peft_adapter: the model has no LoRA adapters");
  const fs::path dir(dir_text);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir))
    throw ModelIoError(dir.string() + ": cannot create the output folder");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, value] : adapter_tensors(model, options.modules_to_save)) {
    // cast: to the storage dtype, on the CPU
    tensors.emplace_back(peft_tensor_name(name),
                         value.detach().to(at::kCPU, options.dtype).contiguous());
  }
  // Tied embeddings with a saved embedding: PEFT keeps the head tied to the
  // trained copy (ensure_weight_tying) and stores it under both names.
  std::vector<std::string> modules = options.modules_to_save;
  const bool tied_saved = model.config().tie_embeddings && !modules.empty();
  if (tied_saved) {
    for (const char* module : {"embed_tokens", "lm_head"}) {
      if (std::find(modules.begin(), modules.end(), module) != modules.end()) continue;
      modules.push_back(module);
      const at::Tensor embedding =
          model.model->embed_tokens->weight.detach().to(at::kCPU, options.dtype).contiguous();
      tensors.emplace_back(
          peft_tensor_name(std::string(module) == "lm_head" ? "lm_head.weight"
                                                            : "model.embed_tokens.weight"),
          embedding);
    }
  }
  safetensors::write((dir / kWeightsFile).string(), tensors);

  const LoraOptions& lora = model.lora()->options();
  json targets = json::array();
  for (const LoraTarget t : lora.targets) targets.push_back(lora_target_name(t));
  json config = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path",
       options.base_model_name_or_path.empty() ? json() : json(options.base_model_name_or_path)},
      {"r", lora.rank},
      {"lora_alpha", lora.alpha},
      {"lora_dropout", lora.dropout},
      {"target_modules", targets},
      {"modules_to_save", modules.empty() ? json() : json(modules)},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"init_lora_weights", true},
      {"use_rslora", false},
      {"use_dora", false},
      {"inference_mode", true},
      {"ensure_weight_tying", tied_saved},
  };
  std::ofstream out(dir / kConfigFile);
  out << config.dump(2) << "\n";
  out.close();
  if (!out) throw ModelIoError((dir / kConfigFile).string() + ": write failed");
}

void merge_lora(TransformerImpl& model) {
  if (model.lora() == nullptr) return;
  torch::NoGradGuard no_grad;
  const LoraAdaptersImpl& adapters = *model.lora();
  for (int64_t layer = 0; layer < model.config().num_layers; ++layer) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const auto target = static_cast<LoraTarget>(t);
      const LoraPair* pair = adapters.find(layer, target);
      if (pair == nullptr) continue;
      at::Tensor& w = base_projection(model, layer, target).weight;
      // W + scaling * B A, in fp32 (casts: each operand to fp32, the sum back to W's dtype).
      const at::Tensor delta =
          at::mm(pair->b->weight.to(at::kFloat), pair->a->weight.to(at::kFloat));
      w.copy_(w.to(at::kFloat).add(delta.to(w.device()), adapters.options().scaling()));
    }
  }
  model.set_lora(nullptr);
}

}  // namespace liger::models
