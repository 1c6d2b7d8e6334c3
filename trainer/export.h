// Models out of (and into) folders: a training checkpoint step-N/ or a Hugging
// Face model folder -> a Transformer ready for generation; a checkpoint -> a
// Hugging Face folder (config.json + safetensors) that from_pretrained loads.
#pragma once

#include "models/hf.h"
#include "models/transformer.h"
#include "trainer/config.h"

#include <cstdint>
#include <optional>
#include <string>

namespace liger::trainer {

struct LoadedModel {
  models::Transformer model{nullptr};
  config::TrainConfig config;  // the checkpoint's config.yaml (defaults for an HF folder)
};

// Rebuilds the model of a checkpoint folder (model.pt + model_config.json,
// or config.yaml for checkpoints older than model_config.json) on `device`
// in `dtype` (nullopt = the checkpoint's compute dtype). Errors name the
// folder and the fix.
LoadedModel load_checkpoint_model(const std::string& dir, config::Device device,
                                  std::optional<config::Dtype> dtype = std::nullopt);

// Builds the model of a Hugging Face folder and loads its weights.
models::Transformer load_hf_model(const std::string& dir, config::Device device,
                                  config::Dtype dtype = config::Dtype::fp32);

// Writes the checkpoint's model as a Hugging Face folder in `dtype` (nullopt =
// the checkpoint's compute dtype), with the run's tokenizer files and a
// generation_config.json (trainer/export_tokenizer.h). Returns a one-line summary.
// A LoRA checkpoint (model.adapter: lora) is written as a PEFT adapter folder
// (adapter_config.json + adapter_model.safetensors; nullopt = the run's
// parameter dtype), or with `merge` as the merged model (W + alpha/rank B A)
// in a Hugging Face folder.
std::string export_checkpoint(const std::string& checkpoint_dir, const std::string& out_dir,
                              std::optional<config::Dtype> dtype = std::nullopt,
                              int64_t max_shard_bytes = 5LL * 1024 * 1024 * 1024,
                              bool merge = false);

}  // namespace liger::trainer
