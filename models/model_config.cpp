#include "models/model_config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstddef>
#include <ostream>
#include <stdexcept>

namespace liger::models {
namespace {

// The one name of each mode value: model_config.json, logs and messages.
template <typename Mode>
struct ModeName {
  Mode mode;
  const char* name;
};

constexpr ModeName<ModelFamily> kFamilyNames[] = {
    {ModelFamily::llama, "llama"}, {ModelFamily::mistral, "mistral"},
    {ModelFamily::gemma, "gemma"}, {ModelFamily::gemma2, "gemma2"},
    {ModelFamily::qwen2, "qwen2"}, {ModelFamily::qwen3, "qwen3"}};
constexpr ModeName<MlpActivation> kActivationNames[] = {{MlpActivation::silu, "silu"},
                                                        {MlpActivation::gelu_tanh, "gelu_tanh"}};
constexpr ModeName<NormCasting> kCastingNames[] = {
    {NormCasting::llama, "llama"}, {NormCasting::gemma, "gemma"}, {NormCasting::none, "none"}};
constexpr ModeName<RopeScalingType> kRopeScalingNames[] = {{RopeScalingType::none, "none"},
                                                           {RopeScalingType::llama3, "llama3"}};

template <typename Mode, std::size_t N>
std::string name_of(const ModeName<Mode> (&names)[N], Mode mode) {
  for (const auto& entry : names) {
    if (entry.mode == mode) return entry.name;
  }
  throw std::logic_error("a mode value has no entry in its name table (models/model_config.cpp)");
}

// `what` names the mode in the message: "model family 'gpt2' is unknown
// (known: llama, mistral, gemma, gemma2)".
template <typename Mode, std::size_t N>
Mode parse_mode(const ModeName<Mode> (&names)[N], const std::string& name, const char* what) {
  std::string known;
  for (const auto& entry : names) {
    if (name == entry.name) return entry.mode;
    known += (known.empty() ? "" : ", ") + std::string(entry.name);
  }
  throw std::invalid_argument(std::string(what) + " '" + name + "' is unknown (known: " + known +
                              ")");
}

}  // namespace

std::string to_string(ModelFamily family) {
  return name_of(kFamilyNames, family);
}
std::string to_string(MlpActivation activation) {
  return name_of(kActivationNames, activation);
}
std::string to_string(NormCasting casting) {
  return name_of(kCastingNames, casting);
}
std::string to_string(RopeScalingType type) {
  return name_of(kRopeScalingNames, type);
}

ModelFamily parse_model_family(const std::string& name) {
  return parse_mode(kFamilyNames, name, "model family");
}
MlpActivation parse_mlp_activation(const std::string& name) {
  return parse_mode(kActivationNames, name, "model mlp_activation");
}
NormCasting parse_norm_casting(const std::string& name) {
  return parse_mode(kCastingNames, name, "model norm_casting");
}
RopeScalingType parse_rope_scaling_type(const std::string& name) {
  return parse_mode(kRopeScalingNames, name, "model rope_scaling type");
}

std::ostream& operator<<(std::ostream& out, ModelFamily family) {
  return out << to_string(family);
}
std::ostream& operator<<(std::ostream& out, MlpActivation activation) {
  return out << to_string(activation);
}
std::ostream& operator<<(std::ostream& out, NormCasting casting) {
  return out << to_string(casting);
}
std::ostream& operator<<(std::ostream& out, RopeScalingType type) {
  return out << to_string(type);
}

int64_t ModelConfig::layer_sliding_window(int64_t layer) const {
  if (sliding_window <= 0 || layer < sliding_window_first_layer) return 0;
  if (sliding_window_pattern > 1 && (layer + 1) % sliding_window_pattern == 0) return 0;
  return sliding_window;
}

double ModelConfig::attention_scale() const {
  const double denominator = query_pre_attn_scalar > 0.0 ? query_pre_attn_scalar
                                                         : static_cast<double>(resolved_head_dim());
  return 1.0 / std::sqrt(denominator);
}

int64_t ModelConfig::num_parameters() const {
  const int64_t d = resolved_head_dim();
  const int64_t attention = hidden_size * num_heads * d                            // q_proj
                            + 2 * hidden_size * num_kv_heads * d                   // k_proj, v_proj
                            + num_heads * d * hidden_size                          // o_proj
                            + (qkv_bias ? (num_heads + 2 * num_kv_heads) * d : 0)  // q/k/v bias
                            + (qk_norm ? 2 * d : 0);                               // q_norm, k_norm
  const int64_t mlp = 3 * hidden_size * intermediate_size;                         // gate, up, down
  // input + post-attention RMSNorm (+ pre/post-feedforward with post_norms)
  const int64_t norms = (post_norms ? 4 : 2) * hidden_size;
  const int64_t layers = num_layers * (attention + mlp + norms);
  const int64_t embeddings = vocab_size * hidden_size * (tie_embeddings ? 1 : 2);
  return layers + embeddings + hidden_size /* final norm */;
}

void ModelConfig::validate() const {
  auto positive = [](int64_t value, const char* key) {
    if (value <= 0) {
      throw std::invalid_argument(std::string(key) + " = " + std::to_string(value) +
                                  " must be positive");
    }
  };
  auto non_negative = [](double value, const char* key) {
    if (!(value >= 0.0) || !std::isfinite(value)) {
      throw std::invalid_argument(std::string(key) + " = " + std::to_string(value) +
                                  " must be >= 0 (0 = off)");
    }
  };
  positive(vocab_size, "model.vocab_size");
  positive(hidden_size, "model.hidden_size");
  positive(intermediate_size, "model.intermediate_size");
  positive(num_layers, "model.num_layers");
  positive(num_heads, "model.num_heads");
  positive(num_kv_heads, "model.num_kv_heads");
  positive(max_seq_len, "model.max_seq_len");
  if (num_heads % num_kv_heads != 0) {
    throw std::invalid_argument("model.num_kv_heads = " + std::to_string(num_kv_heads) +
                                " must divide model.num_heads = " + std::to_string(num_heads) +
                                " (grouped-query attention)");
  }
  if (head_dim == 0 && hidden_size % num_heads != 0) {
    throw std::invalid_argument("model.hidden_size = " + std::to_string(hidden_size) +
                                " is not a multiple of model.num_heads = " +
                                std::to_string(num_heads) + "; set model.head_dim explicitly");
  }
  if (resolved_head_dim() % 2 != 0) {
    throw std::invalid_argument("model.head_dim = " + std::to_string(resolved_head_dim()) +
                                " must be even (RoPE rotates pairs)");
  }
  if (sliding_window < 0) {
    throw std::invalid_argument("model.sliding_window = " + std::to_string(sliding_window) +
                                " must be >= 0 (0 = global attention everywhere)");
  }
  if (sliding_window_pattern < 1) {
    throw std::invalid_argument("model sliding_window_pattern = " +
                                std::to_string(sliding_window_pattern) + " must be >= 1");
  }
  if (sliding_window_first_layer < 0) {
    throw std::invalid_argument("model sliding_window_first_layer = " +
                                std::to_string(sliding_window_first_layer) + " must be >= 0");
  }
  non_negative(attn_softcap, "model.attn_softcap");
  non_negative(final_softcap, "model.final_softcap");
  non_negative(query_pre_attn_scalar, "model.query_pre_attn_scalar");
  if (rope_scaling.type == RopeScalingType::llama3 &&
      (rope_scaling.factor <= 0.0 ||
       rope_scaling.high_freq_factor <= rope_scaling.low_freq_factor ||
       rope_scaling.original_max_position_embeddings <= 0)) {
    throw std::invalid_argument(
        "model rope_scaling (llama3) needs factor > 0, high_freq_factor > low_freq_factor and "
        "original_max_position_embeddings > 0");
  }
}

std::string model_config_to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["family"] = to_string(c.family);
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_layers"] = c.num_layers;
  j["num_heads"] = c.num_heads;
  j["num_kv_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["rope_theta"] = c.rope_theta;
  j["rope_scaling"] = {
      {"type", to_string(c.rope_scaling.type)},
      {"factor", c.rope_scaling.factor},
      {"low_freq_factor", c.rope_scaling.low_freq_factor},
      {"high_freq_factor", c.rope_scaling.high_freq_factor},
      {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["tie_embeddings"] = c.tie_embeddings;
  j["max_seq_len"] = c.max_seq_len;
  j["init_std"] = c.init_std;
  j["mlp_activation"] = to_string(c.mlp_activation);
  j["norm_offset"] = c.norm_offset;
  j["norm_casting"] = to_string(c.norm_casting);
  j["scale_embeddings"] = c.scale_embeddings;
  j["post_norms"] = c.post_norms;
  j["sliding_window"] = c.sliding_window;
  j["sliding_window_pattern"] = c.sliding_window_pattern;
  j["attn_softcap"] = c.attn_softcap;
  j["final_softcap"] = c.final_softcap;
  j["query_pre_attn_scalar"] = c.query_pre_attn_scalar;
  j["sliding_window_first_layer"] = c.sliding_window_first_layer;
  j["qkv_bias"] = c.qkv_bias;
  j["qk_norm"] = c.qk_norm;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_ids"] = c.eos_token_ids;
  return j.dump(2) + "\n";
}

ModelConfig model_config_from_json(const std::string& text, const std::string& origin) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& error) {
    throw std::invalid_argument(origin + ": not valid JSON (" + std::string(error.what()) + ")");
  }
  ModelConfig c;
  try {
    // Every key is required but the three added later (below): the file is
    // written by model_config_to_json.
    c.family = parse_model_family(j.at("family").get<std::string>());
    c.vocab_size = j.at("vocab_size").get<int64_t>();
    c.hidden_size = j.at("hidden_size").get<int64_t>();
    c.intermediate_size = j.at("intermediate_size").get<int64_t>();
    c.num_layers = j.at("num_layers").get<int64_t>();
    c.num_heads = j.at("num_heads").get<int64_t>();
    c.num_kv_heads = j.at("num_kv_heads").get<int64_t>();
    c.head_dim = j.at("head_dim").get<int64_t>();
    c.rope_theta = j.at("rope_theta").get<double>();
    const auto& rs = j.at("rope_scaling");
    c.rope_scaling.type = parse_rope_scaling_type(rs.at("type").get<std::string>());
    c.rope_scaling.factor = rs.at("factor").get<double>();
    c.rope_scaling.low_freq_factor = rs.at("low_freq_factor").get<double>();
    c.rope_scaling.high_freq_factor = rs.at("high_freq_factor").get<double>();
    c.rope_scaling.original_max_position_embeddings =
        rs.at("original_max_position_embeddings").get<int64_t>();
    c.rms_norm_eps = j.at("rms_norm_eps").get<double>();
    c.tie_embeddings = j.at("tie_embeddings").get<bool>();
    c.max_seq_len = j.at("max_seq_len").get<int64_t>();
    c.init_std = j.at("init_std").get<double>();
    c.mlp_activation = parse_mlp_activation(j.at("mlp_activation").get<std::string>());
    c.norm_offset = j.at("norm_offset").get<double>();
    c.norm_casting = parse_norm_casting(j.at("norm_casting").get<std::string>());
    c.scale_embeddings = j.at("scale_embeddings").get<bool>();
    c.post_norms = j.at("post_norms").get<bool>();
    c.sliding_window = j.at("sliding_window").get<int64_t>();
    c.sliding_window_pattern = j.at("sliding_window_pattern").get<int64_t>();
    c.attn_softcap = j.at("attn_softcap").get<double>();
    c.final_softcap = j.at("final_softcap").get<double>();
    c.query_pre_attn_scalar = j.at("query_pre_attn_scalar").get<double>();
    // Added with the Qwen families: absent in older checkpoints, where they were off.
    c.sliding_window_first_layer = j.value("sliding_window_first_layer", int64_t{0});
    c.qkv_bias = j.value("qkv_bias", false);
    c.qk_norm = j.value("qk_norm", false);
    c.bos_token_id = j.at("bos_token_id").get<int64_t>();
    c.eos_token_ids = j.at("eos_token_ids").get<std::vector<int64_t>>();
  } catch (const nlohmann::json::exception& error) {
    std::string message = error.what();
    throw std::invalid_argument(origin + ": " + message.substr(0, message.find('\n')) +
                                " (the file is written by liger-train; do not edit it)");
  } catch (const std::invalid_argument& error) {  // a mode name that parse_* does not know
    throw std::invalid_argument(origin + ": " + error.what() +
                                " (the file is written by liger-train; do not edit it)");
  }
  c.validate();
  return c;
}

void apply_family_traits(ModelConfig& c, ModelFamily family) {
  // Start from Llama's traits; each family changes what differs.
  c.family = family;
  c.mlp_activation = MlpActivation::silu;
  c.norm_offset = 0.0;
  c.norm_casting = NormCasting::llama;
  c.scale_embeddings = false;
  c.post_norms = false;
  c.sliding_window = 0;
  c.sliding_window_pattern = 1;
  c.attn_softcap = 0.0;
  c.final_softcap = 0.0;
  c.query_pre_attn_scalar = 0.0;
  c.sliding_window_first_layer = 0;
  c.qkv_bias = false;
  c.qk_norm = false;
  switch (family) {
    case ModelFamily::llama: return;
    case ModelFamily::mistral:
      c.sliding_window = 4096;  // Mistral 7B v0.1; the HF config says per checkpoint
      return;
    case ModelFamily::gemma:
    case ModelFamily::gemma2:
      c.mlp_activation = MlpActivation::gelu_tanh;
      c.norm_offset = 1.0;
      c.norm_casting = NormCasting::gemma;
      c.scale_embeddings = true;
      if (family == ModelFamily::gemma2) {
        c.post_norms = true;
        c.sliding_window = 4096;
        c.sliding_window_pattern = 2;
        c.attn_softcap = 50.0;
        c.final_softcap = 30.0;
        c.query_pre_attn_scalar = 256.0;
      }
      return;
    case ModelFamily::qwen2:
      c.qkv_bias = true;  // sliding windows only where config.json asks (use_sliding_window)
      return;
    case ModelFamily::qwen3: c.qk_norm = true; return;
  }
}

const std::vector<std::string>& preset_names() {
  static const std::vector<std::string> names = {
      "tiny",       "llama3_1b", "llama3_8b",  "llama2_7b", "mistral_7b",
      "gemma_2b",   "gemma_7b",  "gemma2_2b",  "gemma2_9b", "qwen2_5_7b",
      "qwen3_1_7b", "qwen3_8b",  "tiny_qwen2", "tiny_qwen3"};
  return names;
}

ModelConfig preset(const std::string& name) {
  ModelConfig c;
  apply_family_traits(c, ModelFamily::llama);
  if (name == "tiny") {
    // A few minutes on 2 CPU cores; vocab comes from the tokenizer.
    c.hidden_size = 256;
    c.intermediate_size = 768;
    c.num_layers = 4;
    c.num_heads = 8;
    c.num_kv_heads = 4;
    c.rope_theta = 10000.0;
    c.rms_norm_eps = 1e-5;
    c.tie_embeddings = true;
    c.max_seq_len = 1024;
  } else if (name == "llama3_1b") {  // Llama-3.2-1B
    c.vocab_size = 128256;
    c.hidden_size = 2048;
    c.intermediate_size = 8192;
    c.num_layers = 16;
    c.num_heads = 32;
    c.num_kv_heads = 8;
    c.head_dim = 64;
    c.rope_theta = 500000.0;
    c.rope_scaling.type = RopeScalingType::llama3;
    c.rope_scaling.factor = 32.0;
    c.rope_scaling.low_freq_factor = 1.0;
    c.rope_scaling.high_freq_factor = 4.0;
    c.rope_scaling.original_max_position_embeddings = 8192;
    c.rms_norm_eps = 1e-5;
    c.tie_embeddings = true;
    c.max_seq_len = 131072;
  } else if (name == "llama3_8b") {  // Llama-3-8B (3.1 adds llama3 rope scaling: use hf_path)
    c.vocab_size = 128256;
    c.hidden_size = 4096;
    c.intermediate_size = 14336;
    c.num_layers = 32;
    c.num_heads = 32;
    c.num_kv_heads = 8;
    c.rope_theta = 500000.0;
    c.rms_norm_eps = 1e-5;
    c.tie_embeddings = false;
    c.max_seq_len = 8192;
  } else if (name == "llama2_7b") {
    c.vocab_size = 32000;
    c.hidden_size = 4096;
    c.intermediate_size = 11008;
    c.num_layers = 32;
    c.num_heads = 32;
    c.num_kv_heads = 32;
    c.rope_theta = 10000.0;
    c.rms_norm_eps = 1e-5;
    c.tie_embeddings = false;
    c.max_seq_len = 4096;
  } else if (name == "mistral_7b") {  // Mistral-7B-v0.1
    apply_family_traits(c, ModelFamily::mistral);
    c.vocab_size = 32000;
    c.hidden_size = 4096;
    c.intermediate_size = 14336;
    c.num_layers = 32;
    c.num_heads = 32;
    c.num_kv_heads = 8;
    c.rope_theta = 10000.0;
    c.rms_norm_eps = 1e-5;
    c.tie_embeddings = false;
    c.max_seq_len = 32768;
    c.sliding_window = 4096;
  } else if (name == "gemma_2b" || name == "gemma_7b") {
    apply_family_traits(c, ModelFamily::gemma);
    c.vocab_size = 256000;
    c.head_dim = 256;
    c.rope_theta = 10000.0;
    c.rms_norm_eps = 1e-6;
    c.tie_embeddings = true;
    c.max_seq_len = 8192;
    if (name == "gemma_2b") {
      c.hidden_size = 2048;
      c.intermediate_size = 16384;
      c.num_layers = 18;
      c.num_heads = 8;
      c.num_kv_heads = 1;
    } else {
      c.hidden_size = 3072;
      c.intermediate_size = 24576;
      c.num_layers = 28;
      c.num_heads = 16;
      c.num_kv_heads = 16;
    }
  } else if (name == "gemma2_2b" || name == "gemma2_9b") {
    apply_family_traits(c, ModelFamily::gemma2);
    c.vocab_size = 256000;
    c.head_dim = 256;
    c.rope_theta = 10000.0;
    c.rms_norm_eps = 1e-6;
    c.tie_embeddings = true;
    c.max_seq_len = 8192;
    c.query_pre_attn_scalar = 256.0;
    if (name == "gemma2_2b") {
      c.hidden_size = 2304;
      c.intermediate_size = 9216;
      c.num_layers = 26;
      c.num_heads = 8;
      c.num_kv_heads = 4;
    } else {
      c.hidden_size = 3584;
      c.intermediate_size = 14336;
      c.num_layers = 42;
      c.num_heads = 16;
      c.num_kv_heads = 8;
    }
  } else if (name == "tiny_qwen2" || name == "tiny_qwen3") {
    // The tiny preset's size with Qwen's traits; vocab comes from the tokenizer.
    apply_family_traits(c, name == "tiny_qwen2" ? ModelFamily::qwen2 : ModelFamily::qwen3);
    c.hidden_size = 256;
    c.intermediate_size = 768;
    c.num_layers = 4;
    c.num_heads = 8;
    c.num_kv_heads = 4;
    if (name == "tiny_qwen3") c.head_dim = 64;  // explicit, as Qwen3's (not hidden / heads = 32)
    c.rope_theta = 1000000.0;
    c.rms_norm_eps = 1e-6;
    c.tie_embeddings = true;
    c.max_seq_len = 1024;
  } else if (name == "qwen2_5_7b") {  // Qwen2.5-7B
    apply_family_traits(c, ModelFamily::qwen2);
    c.vocab_size = 152064;
    c.hidden_size = 3584;
    c.intermediate_size = 18944;
    c.num_layers = 28;
    c.num_heads = 28;
    c.num_kv_heads = 4;
    c.rope_theta = 1000000.0;
    c.rms_norm_eps = 1e-6;
    c.tie_embeddings = false;
    c.max_seq_len = 32768;
  } else if (name == "qwen3_1_7b" || name == "qwen3_8b") {  // Qwen3-1.7B, Qwen3-8B
    apply_family_traits(c, ModelFamily::qwen3);
    c.vocab_size = 151936;
    c.head_dim = 128;
    c.rope_theta = 1000000.0;
    c.rms_norm_eps = 1e-6;
    c.max_seq_len = 40960;
    if (name == "qwen3_1_7b") {
      c.hidden_size = 2048;
      c.intermediate_size = 6144;
      c.num_layers = 28;
      c.num_heads = 16;
      c.num_kv_heads = 8;
      c.tie_embeddings = true;
    } else {
      c.hidden_size = 4096;
      c.intermediate_size = 12288;
      c.num_layers = 36;
      c.num_heads = 32;
      c.num_kv_heads = 8;
      c.tie_embeddings = false;
    }
  } else {
    std::string known;
    for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("model.preset = '" + name + "' is unknown (known: " + known + ")");
  }
  return c;
}

}  // namespace liger::models

namespace liger::models {

int64_t ModelConfig::matmul_parameters() const {
  const int64_t d = resolved_head_dim();
  const int64_t q = num_heads * d, kv = num_kv_heads * d;
  const int64_t per_layer =
      hidden_size * q * 2 + hidden_size * kv * 2 + 3 * hidden_size * intermediate_size;
  return num_layers * per_layer + vocab_size * hidden_size;
}

double ModelConfig::training_flops_per_token(int64_t seq_len) const {
  const double q = static_cast<double>(num_heads * resolved_head_dim());
  return 6.0 * static_cast<double>(matmul_parameters()) +
         12.0 * static_cast<double>(num_layers) * q * static_cast<double>(seq_len);
}

}  // namespace liger::models
