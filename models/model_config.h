// ModelConfig: the dimensions and family traits of one decoder-only
// transformer, and the named presets users start from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace liger::models {

struct ModelConfig {
  std::string family = "llama";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // 0: hidden_size / num_heads
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  bool tie_embeddings = false;
  int64_t max_seq_len = 2048;
  double init_std = 0.02;

  int64_t resolved_head_dim() const { return head_dim > 0 ? head_dim : hidden_size / num_heads; }

  // Parameter count from the dimensions alone (no tensors needed).
  int64_t num_parameters() const;

  // Throws std::invalid_argument naming the model.* key that is wrong.
  void validate() const;
};

// Names accepted by preset().
const std::vector<std::string>& preset_names();
// The preset's dimensions. "tiny" leaves vocab_size 0: the tokenizer decides.
// Throws std::invalid_argument for an unknown name, listing the known ones.
ModelConfig preset(const std::string& name);

}  // namespace liger::models
