// ModelConfig: the dimensions and family traits of one decoder-only
// transformer, and the named presets users start from.
//
// The transformer reads only traits, never the family name: a family is a
// set of trait values (see apply_family_traits). What each family sets:
//
//   trait                    llama   mistral  gemma        gemma2        qwen2    qwen3
//   mlp_activation           silu    silu     gelu_tanh    gelu_tanh     silu     silu
//   norm_offset / casting    0 llama 0 llama  1 gemma      1 gemma       0 llama  0 llama
//   scale_embeddings         no      no       sqrt(hidden) sqrt(hidden)  no       no
//   post_norms               no      no       no           yes           no       no
//   sliding_window (pattern) -       W (1)    -            W (2)         off *    off *
//   attn / final softcap     -       -        -            50 / 30       -        -
//   query_pre_attn_scalar    -       -        -            256 (or 144)  -        -
//   qkv_bias                 no      no       no           no            yes      no
//   qk_norm                  no      no       no           no            no       yes
//
// Gemma 2's pattern 2: odd layers global. * Qwen: off unless config.json's
// use_sliding_window; then layers from max_window_layers on slide
// (sliding_window_first_layer), the ones below attend globally.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace liger::models {

// ---- modes ------------------------------------------------------------------
// Each mode is an enum past parsing. Its names (in model_config.json, logs and
// messages) live in one table in model_config.cpp, read by to_string, the
// parse_* function and operator<<. A parse_* function throws
// std::invalid_argument naming the mode, the text and the known names.

// The architecture a checkpoint belongs to: which Hugging Face class imports
// and exports it, and the trait values it starts from (apply_family_traits).
enum class ModelFamily { llama, mistral, gemma, gemma2, qwen2, qwen3 };
// The MLP's gated activation: silu = SwiGLU, gelu_tanh = GeGLU.
enum class MlpActivation { silu, gelu_tanh };
// Where RMSNorm rounds to the compute dtype (kernels::RmsNormCasting; see
// kernels/ops.h): llama = before the weight, gemma = all in fp32, none.
enum class NormCasting { llama, gemma, none };
// RoPE frequency scaling: none, or Llama 3.1's.
enum class RopeScalingType { none, llama3 };

std::string to_string(ModelFamily family);
std::string to_string(MlpActivation activation);
std::string to_string(NormCasting casting);
std::string to_string(RopeScalingType type);
ModelFamily parse_model_family(const std::string& name);
MlpActivation parse_mlp_activation(const std::string& name);
NormCasting parse_norm_casting(const std::string& name);
RopeScalingType parse_rope_scaling_type(const std::string& name);
std::ostream& operator<<(std::ostream& out, ModelFamily family);
std::ostream& operator<<(std::ostream& out, MlpActivation activation);
std::ostream& operator<<(std::ostream& out, NormCasting casting);
std::ostream& operator<<(std::ostream& out, RopeScalingType type);

// RoPE frequency scaling (HF rope_scaling / rope_parameters). Only Llama 3's
// scheme is implemented; HF config import rejects the others by name.
struct RopeScaling {
  RopeScalingType type = RopeScalingType::none;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  ModelFamily family =
      ModelFamily::llama;  // HF import/export and messages; the transformer reads traits
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // 0: hidden_size / num_heads
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  double rms_norm_eps = 1e-5;
  bool tie_embeddings = false;
  int64_t max_seq_len = 2048;
  double init_std = 0.02;

  // ---- family traits ------------------------------------------------------
  MlpActivation mlp_activation = MlpActivation::silu;
  // RMSNorm: y = x * rstd * (norm_offset + w). Gemma stores w - 1: offset 1,
  // and its weights start at 0 (Llama's at 1).
  double norm_offset = 0.0;
  NormCasting norm_casting = NormCasting::llama;
  bool scale_embeddings = false;  // multiply embeddings by sqrt(hidden) (Gemma)
  bool post_norms = false;        // Gemma 2: norms after attention and MLP too
  int64_t sliding_window = 0;     // > 0: local layers see this many keys (self included)
  // Which layers slide: 1 = every layer (Mistral); N > 1 = layer i is global
  // when (i + 1) % N == 0, local otherwise (Gemma 2: N = 2, layer 0 local).
  int64_t sliding_window_pattern = 1;
  // Layers below this index are global whatever the pattern says (Qwen's
  // max_window_layers: the bottom layers attend globally, the rest slide).
  int64_t sliding_window_first_layer = 0;
  double attn_softcap = 0.0;           // > 0: scores <- c * tanh(scores / c) (Gemma 2)
  double final_softcap = 0.0;          // > 0: logits <- c * tanh(logits / c), applied by the loss
  double query_pre_attn_scalar = 0.0;  // > 0: attention scale 1/sqrt(this), else 1/sqrt(head_dim)
  bool qkv_bias = false;  // q, k and v projections add a bias (Qwen2; o and the MLP have none)
  // RMSNorm over head_dim on every query and key head before RoPE, one weight
  // [head_dim] each for q and k (Qwen3's q_norm, k_norm).
  bool qk_norm = false;

  // Token ids from an HF config.json (generation stops on any eos id).
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;

  int64_t resolved_head_dim() const { return head_dim > 0 ? head_dim : hidden_size / num_heads; }
  // The sliding window of layer `layer` (0: global attention).
  int64_t layer_sliding_window(int64_t layer) const;
  // The attention scale (1/sqrt(query_pre_attn_scalar or head_dim)).
  double attention_scale() const;

  // Parameter count from the dimensions alone (no tensors needed).
  int64_t num_parameters() const;
  // The parameters that multiply: q, k, v, o, gate, up, down of every layer
  // and lm_head (a matmul whether tied to the embedding or not).
  int64_t matmul_parameters() const;
  // Training FLOPs per token at sequence length `seq_len` (forward + backward,
  // no recompute): 6 x the parameters that multiply (every matrix incl.
  // lm_head, not the embedding lookup) + 12 x layers x hidden x seq for the
  // attention scores and values (the usual MFU convention, no causal halving).
  double training_flops_per_token(int64_t seq_len) const;

  // Throws std::invalid_argument naming the model.* key that is wrong.
  void validate() const;
};

// Every field as JSON text (checkpoints store it as model_config.json so that
// a step-N/ folder describes its model without the YAML that made it), and
// back. parse throws std::invalid_argument naming `origin` and the key.
std::string model_config_to_json(const ModelConfig& config);
ModelConfig model_config_from_json(const std::string& text, const std::string& origin);

// Sets config.family and the trait values of that family; leaves the
// dimensions alone.
void apply_family_traits(ModelConfig& config, ModelFamily family);

// Names accepted by preset().
const std::vector<std::string>& preset_names();
// The preset's dimensions and traits. "tiny", "tiny_qwen2" and "tiny_qwen3"
// leave vocab_size 0: the tokenizer decides. Throws std::invalid_argument for
// an unknown name, listing the known ones.
ModelConfig preset(const std::string& name);

}  // namespace liger::models
