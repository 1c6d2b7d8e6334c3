// PEFT adapter folders (what peft's save_pretrained writes and
// PeftModel.from_pretrained loads): adapter_config.json +
// adapter_model.safetensors, LoRA only. Tensor names are PEFT's:
// "base_model.model." + our name, e.g.
//   base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
//   base_model.model.lm_head.weight            (a module in modules_to_save)
// Also the merge of the adapters into the base weights (W + scaling B A).
#pragma once

#include "models/lora.h"
#include "models/safetensors.h"
#include "models/transformer.h"

#include <c10/core/ScalarType.h>

#include <string>
#include <vector>

namespace liger::models {

// "base_model.model." + name
std::string peft_tensor_name(const std::string& name);

// The modules a full copy of which trains beside the adapters, in HF names.
const std::vector<std::string>& saveable_module_names();  // embed_tokens, lm_head
// Our parameter name of a saveable module ("lm_head" -> "lm_head.weight";
// tied embeddings: both are "model.embed_tokens.weight").
std::string saveable_parameter_name(const ModelConfig& config, const std::string& module);

struct PeftAdapterConfig {
  LoraOptions lora;
  std::vector<std::string> modules_to_save;
};
// Reads DIR/adapter_config.json. A ModelIoError naming the file and key for
// anything this trainer would compute differently (not LoRA, DoRA, rsLoRA,
// per-module ranks, biases, unknown target modules).
PeftAdapterConfig read_peft_adapter_config(const std::string& dir);

// Copies DIR/adapter_model.safetensors into `model`'s adapters (which must
// have the folder's targets and rank) and into the parameters of
// `modules_to_save`. A missing or extra tensor, or another shape, is a
// ModelIoError naming the file and the tensor.
void load_peft_adapter(TransformerImpl& model, const std::string& dir,
                       const std::vector<std::string>& modules_to_save);
// The folder's tensors by OUR names (no "base_model.model." prefix), as stored.
std::vector<std::pair<std::string, at::Tensor>> read_peft_adapter_tensors(const std::string& dir);

struct PeftExportOptions {
  at::ScalarType dtype = at::kFloat;         // storage dtype of the tensors
  std::vector<std::string> modules_to_save;  // written in full beside the adapters
  std::string base_model_name_or_path;       // recorded in adapter_config.json ("" = null)
};
// Writes DIR/adapter_config.json and DIR/adapter_model.safetensors (creating DIR).
void save_peft_adapter(const TransformerImpl& model, const std::string& dir,
                       const PeftExportOptions& options);

// W += scaling * B A for every adapter of `model` (in fp32, then cast to the
// weight's dtype), then removes the adapters: the model computes what the
// adapters did (up to rounding) as a plain model.
void merge_lora(TransformerImpl& model);

}  // namespace liger::models
