#include "trainer/model_setup.h"

#include "models/hf.h"

#include <c10/cuda/CUDAFunctions.h>
#include <torch/torch.h>

#include <algorithm>

namespace liger::trainer {

c10::Device resolve_device(config::Device device, int64_t local_rank) {
  const bool has_cuda = torch::cuda::is_available();
  if (device == config::Device::cuda && !has_cuda) {
    throw config::ConfigError(
        "training.device = cuda but no CUDA GPU is visible (or this build has no CUDA); use "
        "training.device=cpu or auto");
  }
  if (device == config::Device::cuda || (device == config::Device::auto_ && has_cuda)) {
    const int64_t visible = static_cast<int64_t>(torch::cuda::device_count());
    if (local_rank >= visible) {
      throw config::ConfigError("local rank " + std::to_string(local_rank) + " needs GPU " +
                                std::to_string(local_rank) + " but only " +
                                std::to_string(visible) +
                                " are visible: start at most one rank per GPU on each node");
    }
    const auto index = static_cast<c10::DeviceIndex>(local_rank);
    c10::cuda::set_device(index);  // collectives and allocations default to this GPU
    return c10::Device(c10::kCUDA, index);
  }
  return c10::Device(c10::kCPU);
}

c10::ScalarType scalar_type(config::Dtype dtype) {
  switch (dtype) {
    case config::Dtype::bf16: return c10::kBFloat16;
    case config::Dtype::fp16: return c10::kHalf;
    case config::Dtype::fp32: break;
  }
  return c10::kFloat;
}

// training.precision first (parse_config also writes it into model.dtype and
// master_weights; a TrainConfig built in code may not have), else model.dtype.
c10::ScalarType compute_dtype(const config::TrainConfig& config) {
  switch (config.training.precision) {
    case config::Precision::bf16_mixed:
    case config::Precision::bf16: return c10::kBFloat16;
    case config::Precision::fp32: return c10::kFloat;
    case config::Precision::auto_: break;
  }
  return scalar_type(config.model.dtype);
}

// bf16: bf16 parameters (and so gradients and AdamW state, which follow the
// parameters); bf16-mixed and fp32: fp32; auto: fp32 master weights when
// training.master_weights, else the compute dtype.
c10::ScalarType parameter_dtype(const config::TrainConfig& config) {
  switch (config.training.precision) {
    case config::Precision::bf16: return c10::kBFloat16;
    case config::Precision::bf16_mixed:
    case config::Precision::fp32: return c10::kFloat;
    case config::Precision::auto_: break;
  }
  return config.training.master_weights ? c10::kFloat : compute_dtype(config);
}

bool uses_compute_copies(const config::TrainConfig& config, int64_t world_size) {
  return parameter_dtype(config) == c10::kFloat && compute_dtype(config) != c10::kFloat &&
         world_size == 1;
}

namespace {

// model.hf_path: the architecture is the checkpoint's. Keys that would change
// it are errors (the weights would not fit); max_seq_len may only shorten the
// context the model is built for.
models::ModelConfig resolve_hf_model_config(const config::TrainConfig& config,
                                            std::optional<int64_t> tokenizer_vocab) {
  const auto& m = config.model;
  const std::vector<std::pair<const char*, bool>> fixed = {
      {"vocab_size", m.vocab_size.has_value()},
      {"hidden_size", m.hidden_size.has_value()},
      {"intermediate_size", m.intermediate_size.has_value()},
      {"num_layers", m.num_layers.has_value()},
      {"num_heads", m.num_heads.has_value()},
      {"num_kv_heads", m.num_kv_heads.has_value()},
      {"head_dim", m.head_dim.has_value()},
      {"rope_theta", m.rope_theta.has_value()},
      {"rms_norm_eps", m.rms_norm_eps.has_value()},
      {"tie_embeddings", m.tie_embeddings.has_value()},
      {"sliding_window", m.sliding_window.has_value()},
      {"attn_softcap", m.attn_softcap.has_value()},
      {"final_softcap", m.final_softcap.has_value()},
      {"query_pre_attn_scalar", m.query_pre_attn_scalar.has_value()},
  };
  for (const auto& [key, set] : fixed) {
    if (set) {
      throw config::ConfigError(std::string("model.") + key +
                                " is set together with model.hf_path = '" + m.hf_path +
                                "', whose config.json fixes it; remove model." + key);
    }
  }
  models::ModelConfig c;
  try {
    c = models::read_hf_config(m.hf_path);
  } catch (const models::ModelIoError& error) {
    throw config::ConfigError(std::string("model.hf_path: ") + error.what());
  }
  if (m.max_seq_len) c.max_seq_len = std::min(c.max_seq_len, *m.max_seq_len);
  c.init_std = m.init_std;
  if (tokenizer_vocab && *tokenizer_vocab > c.vocab_size) {
    throw config::ConfigError("data.tokenizer has " + std::to_string(*tokenizer_vocab) +
                              " tokens but the model at model.hf_path = '" + m.hf_path + "' has " +
                              std::to_string(c.vocab_size) + "; use the model's own tokenizer");
  }
  if (config.data.seq_len > c.max_seq_len) {
    throw config::ConfigError("data.seq_len = " + std::to_string(config.data.seq_len) +
                              " is longer than the model's context of " +
                              std::to_string(c.max_seq_len) +
                              " tokens (model.hf_path, model.max_seq_len); lower data.seq_len");
  }
  return c;
}

// The MoE router's training keys override what the preset or config.json says.
void apply_router_keys(const config::ModelSection& m, models::ModelConfig& c) {
  if (m.output_router_logits) c.output_router_logits = *m.output_router_logits;
  if (m.router_aux_loss_coef) c.router_aux_loss_coef = *m.router_aux_loss_coef;
}

}  // namespace

models::ModelConfig resolve_model_config(const config::TrainConfig& config,
                                         std::optional<int64_t> tokenizer_vocab) {
  const auto& m = config.model;
  if (!m.hf_path.empty()) {
    models::ModelConfig c = resolve_hf_model_config(config, tokenizer_vocab);
    apply_router_keys(m, c);
    return c;
  }
  models::ModelConfig c;
  try {
    c = models::preset(config.model.preset);
  } catch (const std::invalid_argument& error) {
    throw config::ConfigError(error.what());
  }
  if (m.vocab_size) c.vocab_size = *m.vocab_size;
  if (m.hidden_size) c.hidden_size = *m.hidden_size;
  if (m.intermediate_size) c.intermediate_size = *m.intermediate_size;
  if (m.num_layers) c.num_layers = *m.num_layers;
  if (m.num_heads) c.num_heads = *m.num_heads;
  if (m.num_kv_heads) c.num_kv_heads = *m.num_kv_heads;
  if (m.head_dim) c.head_dim = *m.head_dim;
  if (m.rope_theta) c.rope_theta = *m.rope_theta;
  if (m.rms_norm_eps) c.rms_norm_eps = *m.rms_norm_eps;
  if (m.tie_embeddings) c.tie_embeddings = *m.tie_embeddings;
  if (m.max_seq_len) c.max_seq_len = *m.max_seq_len;
  if (m.sliding_window) c.sliding_window = *m.sliding_window;
  if (m.attn_softcap) c.attn_softcap = *m.attn_softcap;
  if (m.final_softcap) c.final_softcap = *m.final_softcap;
  if (m.query_pre_attn_scalar) c.query_pre_attn_scalar = *m.query_pre_attn_scalar;
  c.init_std = m.init_std;
  apply_router_keys(m, c);
  // A preset that leaves num_kv_heads to the override of num_heads (MHA) keeps them equal.
  if (m.num_heads && !m.num_kv_heads && c.num_heads % c.num_kv_heads != 0)
    c.num_kv_heads = c.num_heads;

  if (c.vocab_size == 0) {
    if (!tokenizer_vocab) {
      throw config::ConfigError("model.vocab_size is null and the preset '" + m.preset +
                                "' takes it from the tokenizer, which was not loaded");
    }
    c.vocab_size = *tokenizer_vocab;
  }
  if (tokenizer_vocab && *tokenizer_vocab > c.vocab_size) {
    throw config::ConfigError("data.tokenizer has " + std::to_string(*tokenizer_vocab) +
                              " tokens but model.vocab_size = " + std::to_string(c.vocab_size) +
                              "; use a tokenizer that fits or raise model.vocab_size");
  }
  if (config.data.seq_len > c.max_seq_len) {
    throw config::ConfigError(
        "data.seq_len = " + std::to_string(config.data.seq_len) +
        " is longer than model.max_seq_len = " + std::to_string(c.max_seq_len) +
        "; lower data.seq_len or raise model.max_seq_len");
  }
  try {
    c.validate();
  } catch (const std::invalid_argument& error) {
    throw config::ConfigError(error.what());
  }
  return c;
}

kernels::KernelToggles kernel_toggles(const config::KernelsSection& k) {
  kernels::KernelToggles t;
  t.rms_norm = k.rms_norm;
  t.layer_norm = k.layer_norm;
  t.rope = k.rope;
  t.swiglu = k.swiglu;
  t.geglu = k.geglu;
  t.cross_entropy = k.cross_entropy;
  t.fused_linear_cross_entropy = k.fused_linear_cross_entropy;
  t.attention = k.attention;
  t.moe = k.moe;
  t.tuned_gemm = k.tuned_gemm;
  t.plain_attention =
      k.plain_attention == config::PlainAttention::sdpa    ? kernels::PlainAttention::sdpa
      : k.plain_attention == config::PlainAttention::liger ? kernels::PlainAttention::liger
                                                           : kernels::PlainAttention::measured;
  t.strict = k.strict;
  return t;
}

log::Level log_level(config::LogLevel level) {
  switch (level) {
    case config::LogLevel::debug: return log::Level::debug;
    case config::LogLevel::warn: return log::Level::warn;
    case config::LogLevel::error: return log::Level::error;
    case config::LogLevel::info: break;
  }
  return log::Level::info;
}

}  // namespace liger::trainer
