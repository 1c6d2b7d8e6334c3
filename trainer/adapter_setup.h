// LoRA in the trainer (model.adapter: lora): from the lora: section to
// adapters on a built model, and which parameters train.
//
// The base model is frozen in model.dtype (bf16 on the GPU, the compute
// dtype: no fp32 master copy, no gradient, no optimizer state). The adapters
// and the modules_to_save (embed_tokens, lm_head) train with the run's
// precision, exactly as full parameters do (fp32 masters with bf16 compute
// copies by default). Checkpoints hold only what trains; the base comes from
// model.hf_path (or the preset's init with training.seed) again on resume,
// export and generation.
#pragma once

#include "models/lora.h"
#include "models/transformer.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"

#include <c10/core/ScalarType.h>

#include <functional>
#include <string>
#include <vector>

namespace liger::trainer {

bool uses_lora(const config::TrainConfig& config);

// The dtype of the base model's parameters: under LoRA the compute dtype
// (frozen, no master copy), else parameter_dtype(config).
c10::ScalarType base_parameter_dtype(const config::TrainConfig& config);

// lora.* checked against the model (config::ConfigError naming the key for an
// unknown module, a non-target such as lm_head, or a projection the family
// does not have). `family_targets`: the projections the family has
// (models::lora_targets_of).
models::LoraOptions lora_options(const config::TrainConfig& config,
                                 const std::vector<models::LoraTarget>& family_targets);
// lora.modules_to_save checked (embed_tokens, lm_head).
std::vector<std::string> lora_modules_to_save(const config::TrainConfig& config);

// Without LoRA: every parameter of `model`, by name. With LoRA: adds the
// adapters (parameter_dtype(config), on the model's device) to a model whose
// base weights are loaded, starts them from model.adapter_path or fresh
// (models::lora_init_seed(training.seed)), freezes the base but the
// modules_to_save (which move to parameter_dtype(config)) and returns what
// trains: the adapters' parameters, then the saved modules'.
NamedTensors setup_trainable_parameters(models::TransformerImpl& model,
                                        const config::TrainConfig& config);

// Sharded runs: adds the adapters and freezes the base on a model built on
// the meta device (the sharding creates, inits and loads the real tensors).
void attach_adapters_on_meta(models::TransformerImpl& model, const config::TrainConfig& config);

// The full value of adapter or saved-module parameter `name` from
// model.adapter_path (CPU, as stored); undefined when the run starts fresh.
// For a sharded start.
std::function<at::Tensor(const std::string&)> adapter_path_values(
    const models::TransformerImpl& model, const config::TrainConfig& config);

// Export and generation of a LoRA checkpoint: the model of `config` with its
// base (model.hf_path or the preset's init) and the checkpoint's adapters and
// saved modules (from `dir`), on `device` with parameters in `dtype`.
void load_lora_checkpoint(models::TransformerImpl& model, const config::TrainConfig& config,
                          const std::string& dir);

}  // namespace liger::trainer
