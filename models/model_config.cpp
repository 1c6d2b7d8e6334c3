#include "models/model_config.h"

#include <stdexcept>

namespace liger::models {

int64_t ModelConfig::num_parameters() const {
  const int64_t d = resolved_head_dim();
  const int64_t attention = hidden_size * num_heads * d      // q_proj
                            + 2 * hidden_size * num_kv_heads * d  // k_proj, v_proj
                            + num_heads * d * hidden_size;   // o_proj
  const int64_t mlp = 3 * hidden_size * intermediate_size;   // gate, up, down
  const int64_t norms = 2 * hidden_size;                     // input + post-attention RMSNorm
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
  positive(vocab_size, "model.vocab_size");
  positive(hidden_size, "model.hidden_size");
  positive(intermediate_size, "model.intermediate_size");
  positive(num_layers, "model.num_layers");
  positive(num_heads, "model.num_heads");
  positive(num_kv_heads, "model.num_kv_heads");
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
}

const std::vector<std::string>& preset_names() {
  static const std::vector<std::string> names = {"tiny", "llama3_1b", "llama3_8b", "llama2_7b"};
  return names;
}

ModelConfig preset(const std::string& name) {
  ModelConfig c;
  c.family = "llama";
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
    c.rms_norm_eps = 1e-5;
    c.tie_embeddings = true;
    c.max_seq_len = 131072;
  } else if (name == "llama3_8b") {  // Llama-3-8B / 3.1-8B
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
  } else {
    std::string known;
    for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("model.preset = '" + name + "' is unknown (known: " + known + ")");
  }
  return c;
}

}  // namespace liger::models
