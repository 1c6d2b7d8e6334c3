// TrainConfig: the validated, typed form of a YAML config (see
// trainer/config_schema.cpp for every key and configs/reference.yaml for the
// documentation). Torch-free: the trainer turns strings into torch types.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace liger::config {

// A user error in a config file or a --set override. The message names the
// file or key, the value and what is allowed.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ModelSection {
  std::string preset = "tiny";
  std::string hf_path;  // a Hugging Face model folder: config + weights from it ("" = none)
  std::string dtype = "fp32";
  std::optional<int64_t> vocab_size, hidden_size, intermediate_size, num_layers, num_heads,
      num_kv_heads, head_dim, max_seq_len;
  std::optional<double> rope_theta, rms_norm_eps;
  std::optional<bool> tie_embeddings;
  // Family traits over the preset's (null = the preset's).
  std::optional<int64_t> sliding_window;
  std::optional<double> attn_softcap, final_softcap, query_pre_attn_scalar;
  double init_std = 0.02;
  // Parameter-efficient fine-tuning: none | lora (the lora: section), and a
  // PEFT adapter folder to start from ("" = fresh adapters).
  std::string adapter = "none";
  std::string adapter_path;
};

// LoRA adapters (model.adapter: lora): see trainer/adapter_setup.h.
struct LoraSection {
  int64_t rank = 16;
  std::optional<double> alpha;  // null = 2 x rank
  double dropout = 0.0;
  std::vector<std::string> target_modules;  // HF projection names; all_linear = the seven
  std::vector<std::string> modules_to_save;  // embed_tokens, lm_head: trained in full
  double resolved_alpha() const { return alpha ? *alpha : 2.0 * static_cast<double>(rank); }
};

struct DataSection {
  std::vector<std::string> train;
  std::string format = "auto";
  std::string chat_template = "auto";
  std::string token_dtype = "auto";
  std::string packing = "cross_document";
  std::string tokenizer;
  std::string bos_token, eos_token;  // "" = the tokenizer's own
  int64_t seq_len = 256;
  bool add_bos = true;
  bool add_eos = true;
  std::vector<std::string> eval;     // evaluation files
  double eval_fraction = 0.0;        // or: hold out this fraction of the training windows
};

struct TrainingSection {
  std::string device = "auto";
  int64_t steps = 300;
  int64_t micro_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;
  double lr = 1e-3;
  std::string lr_schedule = "cosine";
  int64_t warmup_steps = 10;
  double min_lr_ratio = 0.1;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double grad_clip = 1.0;
  int64_t seed = 1234;
  bool master_weights = true;
  // auto | bf16-mixed | bf16 | fp32; not auto: model.dtype and master_weights
  // are set from it (see trainer/model_setup.h compute_dtype/parameter_dtype).
  std::string precision = "auto";
  bool stochastic_rounding = true;  // bf16 parameters: AdamW rounds its update stochastically
  int64_t threads = 0;
  int64_t eval_every = 0;    // 0 = no evaluation
  int64_t eval_batches = 0;  // 0 = all evaluation windows
  std::string activation_checkpointing = "none";  // none | glu | full (per decoder layer)
  bool cuda_graphs = false;  // capture the whole step once, replay it (one GPU, static shapes)
};

struct KernelsSection {
  bool rms_norm = true, layer_norm = true, rope = true, swiglu = true, geglu = true;
  bool cross_entropy = false;
  bool fused_linear_cross_entropy = true;
  bool tuned_gemm = false;
  bool strict = false;
  double flce_chunk_mb = 256.0;
  std::string flce_mode = "speed";
};

struct ParallelismSection {
  int64_t pipeline_parallel_degree = 1;
  int64_t tensor_parallel_degree = 1;
  int64_t context_parallel_degree = 1;
  int64_t data_parallel_shard_degree = -1;  // -1 = all ranks
  bool reshard_after_forward = true;
  std::string reduce_dtype = "fp32";
  std::string backend = "auto";
  double timeout_s = 600.0;
};

struct CheckpointSection {
  std::string output_dir = "runs/default";
  int64_t every = 100;
  int64_t keep_last = 2;
  std::string resume = "none";
  bool save_final = true;
};

struct LoggingSection {
  int64_t every = 10;
  double peak_tflops = 0.0;  // 0 = detect
  int64_t profile_steps = 0;  // 0 = off
  int64_t profile_first_step = 5;
  std::string level = "info";
  std::string progress_bar = "auto";
  std::string sample_prompt = "ROMEO:";
  int64_t sample_tokens = 0;
  double sample_temperature = 0.8;
  double sample_top_p = 0.95;
};

struct TrainConfig {
  ModelSection model;
  LoraSection lora;
  DataSection data;
  TrainingSection training;
  KernelsSection kernels;
  ParallelismSection parallelism;
  CheckpointSection checkpoint;
  LoggingSection logging;

  // The resolved config (every key, defaults filled in) as YAML: written
  // into each checkpoint so a run can be reproduced from it alone.
  std::string resolved_yaml;
};

// Loads `path`, applies `overrides` ("section.key=value", the value parsed as
// YAML) and validates everything. Throws ConfigError.
TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Same from YAML text (`origin` names it in messages).
TrainConfig parse_config(const std::string& yaml_text, const std::string& origin,
                         const std::vector<std::string>& overrides = {});

}  // namespace liger::config
