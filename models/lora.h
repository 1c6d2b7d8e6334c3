// LoRA adapters (Hu et al. 2021) in PEFT's layout. A targeted projection
// y = x W^T becomes
//
//   y = x W^T + (alpha / rank) * dropout(x) A^T B^T,   A [rank, in], B [out, rank]
//
// with W frozen. A starts as PEFT's default, kaiming_uniform_(a = sqrt(5)):
// U(-1/sqrt(in), 1/sqrt(in)); B starts at zero, so the first step computes
// the base model exactly.
//
// The adapters live beside the base model, not inside its module tree: the
// Transformer's parameters stay the base model's (HF import and export, the
// base init, FSDP units are untouched by them), and LoraAdapters holds
// lora_A / lora_B per targeted projection under PEFT's names without the
// "base_model.model." prefix and the adapter name:
// "model.layers.0.self_attn.q_proj.lora_A.weight". The transformer adds the
// products inside its projections (models/packed_projection.h,
// models/recomputed_glu.h: the delta goes into the base GEMM's output).
#pragma once

#include "models/model_config.h"
#include "models/transformer.h"

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <string>
#include <vector>

namespace at {
class Generator;
}

namespace liger::models {

// The projections an adapter may target, in HF's names and in this order.
enum class LoraTarget { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj };
constexpr int kNumLoraTargets = 7;
const char* lora_target_name(LoraTarget target);
// "q_proj" -> q_proj; nullopt for anything else.
std::optional<LoraTarget> lora_target_from_name(const std::string& name);
// The seven names ("all_linear" in the config).
std::vector<std::string> all_lora_target_names();
// The projections of `config`'s family an adapter can target: all seven for
// the dense families, q/k/v/o for an MoE model (its experts take none).
std::vector<LoraTarget> lora_targets_of(const ModelConfig& config);

struct LoraOptions;

// Training FLOPs per token with the base frozen (ModelConfig::training_flops_per_token's
// convention): a frozen matmul parameter costs forward 2 + input gradient 2 (no weight
// gradient), the adapters and a trained lm_head (`lm_head_trained`: modules_to_save) 6.
double lora_training_flops_per_token(const ModelConfig& config, const LoraOptions& options,
                                     bool lm_head_trained, int64_t seq_len);
struct LoraOptions {
  int64_t rank = 16;
  double alpha = 32.0;
  double dropout = 0.0;  // on the adapter's input, training only
  std::vector<LoraTarget> targets;
  double scaling() const { return alpha / static_cast<double>(rank); }
  bool targets_projection(LoraTarget target) const;
};

// One projection's adapter.
struct LoraPair {
  WeightImpl* a = nullptr;  // lora_A: [rank, in]
  WeightImpl* b = nullptr;  // lora_B: [out, rank]
};

class LoraAdaptersImpl : public torch::nn::Module {
 public:
  // Parameters created with `param_options` (dtype + device; meta allocates
  // nothing), uninitialised: call init_weights or load them.
  LoraAdaptersImpl(const ModelConfig& config, LoraOptions options,
                   const at::TensorOptions& param_options);

  const LoraOptions& options() const { return options_; }
  // The adapter of `target` in decoder layer `layer`; nullptr when not targeted.
  const LoraPair* find(int64_t layer, LoraTarget target) const;

  // A from PEFT's default init, B = 0, drawn on the CPU from a generator
  // seeded with `seed` (one parameter after the other, named_parameters()
  // order): the same values on every device and for a sharded copy.
  void init_weights(uint64_t seed);
  // The initial value of parameter `name` ([shape] of `p`) as a CPU fp32
  // tensor drawn from `generator` (init_weights is this for every parameter).
  at::Tensor initial_value(const std::string& name, const at::Tensor& p,
                           at::Generator& generator) const;

  int64_t num_parameters() const;

 private:
  LoraOptions options_;
  int64_t num_layers_ = 0;
  std::vector<std::array<LoraPair, kNumLoraTargets>> pairs_;  // [layer][target]
};
TORCH_MODULE(LoraAdapters);

// The seed of fresh adapters' init in a run seeded with `seed`: its own
// stream, so the base model's init is the same with and without adapters.
inline uint64_t lora_init_seed(uint64_t seed) {
  return seed ^ 0x4c6f5241ULL;
}  // "LoRA"

// Whether `name` is an adapter parameter's (…lora_A.weight / …lora_B.weight).
bool is_lora_parameter_name(const std::string& name);
// Trainable LoRA parameters of `options` on `config`'s shapes (no allocation).
int64_t lora_parameter_count(const ModelConfig& config, const LoraOptions& options);

// Dropout on an adapter's input, as torch.nn.Dropout(p) in training: keep
// each element with probability 1 - p and scale the kept ones by 1 / (1 - p).
// The mask is drawn from the default generator of x's device (bool, x's shape).
at::Tensor lora_dropout_mask(const at::Tensor& x, double p);
// x * mask / (1 - p) in x's dtype.
at::Tensor apply_lora_dropout(const at::Tensor& x, const at::Tensor& mask, double p);

}  // namespace liger::models
