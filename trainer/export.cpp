#include "trainer/export.h"

#include "models/peft.h"
#include "trainer/adapter_setup.h"
#include "trainer/checkpoint.h"
#include "trainer/export_tokenizer.h"
#include "trainer/model_setup.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace liger::trainer {
namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The ModelConfig of a checkpoint: model_config.json, else re-resolved from
// config.yaml with the vocabulary read off the stored embedding.
models::ModelConfig checkpoint_model_config(const fs::path& dir,
                                            const config::TrainConfig& config) {
  if (fs::exists(dir / "model_config.json")) {
    try {
      return models::model_config_from_json(read_text(dir / "model_config.json"),
                                            (dir / "model_config.json").string());
    } catch (const std::invalid_argument& error) {
      throw config::ConfigError(error.what());
    }
  }
  torch::serialize::InputArchive archive;
  archive.load_from((dir / "model.pt").string());
  at::Tensor embedding;
  if (!archive.try_read("model.embed_tokens.weight", embedding)) {
    throw config::ConfigError((dir / "model.pt").string() +
                              ": has no model.embed_tokens.weight; not a liger-train checkpoint");
  }
  return resolve_model_config(config, embedding.size(0));
}

}  // namespace

LoadedModel load_checkpoint_model(const std::string& dir_text, config::Device device,
                                  std::optional<config::Dtype> dtype) {
  const fs::path dir(dir_text);
  const bool has_model =
      fs::exists(dir / "model.pt") || fs::exists(dir / "shards.json");  // whole, or sharded
  if (!fs::is_directory(dir) || !has_model || !fs::exists(dir / "config.yaml")) {
    throw config::ConfigError(
        "--checkpoint " + dir_text +
        " is not a checkpoint folder (expected a step-N/ folder with model.pt and "
        "config.yaml, e.g. runs/tiny/step-400)");
  }
  LoadedModel out;
  out.config = config::load_config((dir / "config.yaml").string());
  const models::ModelConfig model_config = checkpoint_model_config(dir, out.config);
  const c10::Device target = resolve_device(device);
  const c10::ScalarType compute = dtype ? scalar_type(*dtype) : compute_dtype(out.config);
  // Parameters in the compute dtype: nothing trains here.
  const kernels::KernelSet kernel_set =
      kernels::resolve_kernels(kernel_toggles(out.config.kernels), target, compute);
  out.model = models::Transformer(model_config, kernel_set,
                                  at::TensorOptions().dtype(compute).device(target), compute);
  if (uses_lora(out.config)) {
    // The checkpoint holds the adapters (and saved modules) only: the base
    // comes from the run's model.hf_path or its init, as in training.
    load_lora_checkpoint(*out.model, out.config, dir.string());
  } else {
    CheckpointManager::load_model(dir.string(), *out.model);
  }
  out.model->eval();
  return out;
}

models::Transformer load_hf_model(const std::string& dir, config::Device device,
                                  config::Dtype dtype) {
  const models::ModelConfig model_config = models::read_hf_config(dir);
  const c10::Device target = resolve_device(device);
  const c10::ScalarType compute = scalar_type(dtype);
  const kernels::KernelSet kernel_set =
      kernels::resolve_kernels(kernels::KernelToggles{}, target, compute);
  models::Transformer model(model_config, kernel_set,
                            at::TensorOptions().dtype(compute).device(target), compute);
  models::load_hf_weights(*model, dir);
  return model;
}

std::string export_checkpoint(const std::string& checkpoint_dir, const std::string& out_dir,
                              std::optional<config::Dtype> dtype, int64_t max_shard_bytes,
                              bool merge) {
  // Loaded in fp32 on the CPU: exact for fp32 checkpoints, and the cast to
  // the storage dtype happens once, in save_hf_model.
  LoadedModel loaded =
      load_checkpoint_model(checkpoint_dir, config::Device::cpu, config::Dtype::fp32);
  const bool lora = uses_lora(loaded.config);
  if (merge && !lora) {
    throw config::ConfigError(
        "--merge: checkpoint " + checkpoint_dir +
        " has no LoRA adapters (model.adapter = none); export it without --merge");
  }
  if (lora && !merge) {
    // A PEFT adapter folder: the adapters (and saved modules) in the run's
    // parameter dtype by default (fp32 under bf16-mixed), as PEFT keeps them.
    models::PeftExportOptions peft;
    peft.dtype = dtype ? scalar_type(*dtype) : parameter_dtype(loaded.config);
    peft.modules_to_save = lora_modules_to_save(loaded.config);
    if (!loaded.config.model.hf_path.empty()) {
      peft.base_model_name_or_path =
          fs::absolute(loaded.config.model.hf_path).lexically_normal().string();
    }
    models::save_peft_adapter(*loaded.model, out_dir, peft);
    std::ostringstream summary;
    summary << "exported the LoRA adapters of " << checkpoint_dir << " (rank "
            << loaded.config.lora.rank << ", " << loaded.model->lora()->num_parameters()
            << " adapter parameters, " << c10::toString(peft.dtype) << ") to " << out_dir
            << " as a PEFT adapter folder; --merge writes the merged model";
    return summary.str();
  }
  if (merge) models::merge_lora(*loaded.model);  // W + alpha/rank B A, in fp32
  const TokenizerExport tokenizer(loaded.config,
                                  loaded.model->config().family);  // found before writing
  models::HfExportOptions options;
  options.dtype = dtype ? scalar_type(*dtype) : compute_dtype(loaded.config);
  options.max_shard_bytes = max_shard_bytes;
  models::save_hf_model(*loaded.model, out_dir, options);
  std::ostringstream summary;
  summary << "exported " << checkpoint_dir << (merge ? " with its LoRA adapters merged" : "")
          << " (" << loaded.model->config().family << ", " << loaded.model->num_parameters()
          << " parameters, " << c10::toString(options.dtype) << ") to " << out_dir << "; "
          << tokenizer.write(out_dir);
  return summary.str();
}

}  // namespace liger::trainer
