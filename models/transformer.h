// One decoder-only transformer, parameterised by ModelConfig (family traits
// live there, not in per-family copies). Parameter names follow Hugging Face
// (model.layers.0.self_attn.q_proj.weight, ...), so safetensors import and
// export map one to one.
//
// forward(ids) returns the final-norm hidden states: the fused linear cross
// entropy consumes those with lm_head_weight(); logits() exists for eval and
// generation only. forward_cached() runs the same layers over new tokens only,
// reading and extending a KvCache (generation).
#pragma once

#include "kernels/registry.h"
#include "models/lora_operands.h"
#include "models/model_config.h"
#include "models/tied_embedding.h"

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <vector>

namespace at {
class Generator;
}

namespace liger::models {

using at::Tensor;

class LoraAdaptersImpl;  // models/lora.h

// A module that holds a parameter named "weight" (HF's nn.Linear without
// bias, nn.Embedding, RMSNorm all store exactly that) and, for a projection
// with a bias (Qwen2's q, k and v), one named "bias" [shape[0]].
class WeightImpl : public torch::nn::Module {
 public:
  WeightImpl(at::IntArrayRef shape, const at::TensorOptions& options, bool with_bias = false);
  Tensor weight;
  Tensor bias;  // undefined without a bias
};
TORCH_MODULE(Weight);

// q, k and v carry biases with qkv_bias; q_norm and k_norm ([head_dim]
// RMSNorm weights) exist with qk_norm only.
class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(const ModelConfig& config, const at::TensorOptions& options);
  Weight q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  Weight q_norm{nullptr}, k_norm{nullptr};
};
TORCH_MODULE(SelfAttention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& config, const at::TensorOptions& options);
  Weight gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

// The experts of a sparse MoE block, stored as transformers 5 holds them:
// gate_up_proj [E, 2F, H] (each expert's gate rows, then its up rows) and
// down_proj [E, H, F].
class ExpertsImpl : public torch::nn::Module {
 public:
  ExpertsImpl(const ModelConfig& config, const at::TensorOptions& options);
  Tensor gate_up_proj, down_proj;
};
TORCH_MODULE(Experts);

// Mixtral's MLP (HF's names under mlp.): the router gate [E, H] and the experts.
class SparseMoeImpl : public torch::nn::Module {
 public:
  SparseMoeImpl(const ModelConfig& config, const at::TensorOptions& options);
  Weight gate{nullptr};
  Experts experts{nullptr};
};
TORCH_MODULE(SparseMoe);

// What one MoE layer's router decided in the last forward: the logits
// [tokens, E] (with autograd) and the chosen experts [tokens, k].
struct RouterOutput {
  Tensor logits, experts;
};

// Without post_norms (Llama, Mistral, Gemma):
//   x += attn(input_layernorm(x));  x += mlp(post_attention_layernorm(x))
// With post_norms (Gemma 2; HF's names, where post_attention_layernorm
// normalises the attention OUTPUT):
//   x += post_attention_layernorm(attn(input_layernorm(x)))
//   x += post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))
class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, const at::TensorOptions& options);
  SelfAttention self_attn{nullptr};
  Mlp mlp{nullptr};        // the dense MLP, or
  SparseMoe moe{nullptr};  // with num_experts > 0 the MoE block, registered as "mlp"
  Weight input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Weight pre_feedforward_layernorm{nullptr},
      post_feedforward_layernorm{nullptr};  // post_norms only
};
TORCH_MODULE(DecoderLayer);

// HF's "model." prefix: embeddings, layers, final norm.
class BackboneImpl : public torch::nn::Module {
 public:
  BackboneImpl(const ModelConfig& config, const at::TensorOptions& options);
  Weight embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  Weight norm{nullptr};
};
TORCH_MODULE(Backbone);

// Keys and values of the tokens seen so far, per layer, after RoPE, in
// compute dtype: [B, T, Hk, D]. Filled by TransformerImpl::forward_cached.
struct KvCache {
  std::vector<Tensor> keys, values;
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(1); }
  void clear() {
    keys.clear();
    values.clear();
  }
};

// Runs around the decoder layers. FSDP-style sharding (gather a layer's
// weights before it runs, free them after) and activation checkpointing plug
// in here; the model knows neither. The default runs each layer as is.
class LayerHooks {
 public:
  using LayerFn = std::function<Tensor(const Tensor&)>;
  virtual ~LayerHooks() = default;
  // At the start of every forward: the embeddings, final norm and lm_head are
  // used outside the layers.
  virtual void before_forward() {}
  // After the embedding lookup, and before the final norm (and lm_head).
  virtual void after_embedding() {}
  virtual void before_head() {}
  // Runs decoder layer `index` on x: layer(x), plus whatever the hooks add.
  virtual Tensor run_layer(int64_t index, const Tensor& x, const LayerFn& layer) {
    return layer(x);
  }
};

class TransformerImpl : public torch::nn::Module {
 public:
  // Parameters are created with `param_options` (dtype + device; the meta
  // device allocates nothing). Activations are computed in `compute_dtype`:
  // each weight is cast to it where it is used, so fp32 master weights with
  // bf16 compute need nothing else.
  TransformerImpl(const ModelConfig& config, kernels::KernelSet kernels,
                  const at::TensorOptions& param_options, at::ScalarType compute_dtype);

  // Normal(0, init_std) for every matrix and embedding; norm weights 1 - norm_offset
  // (ones for Llama, zeros for Gemma's (1 + w)); biases zero: HF's init.
  // Deterministic for a given generator seed.
  void init_weights(uint64_t seed);
  // The initial value of parameter `name` (`p`, one of named_parameters(), in
  // order) as a CPU fp32 tensor, drawn from `generator`: init_weights() is
  // this for every parameter in named_parameters() order with one generator,
  // so a sharded copy of the model can draw the same values one parameter at
  // a time.
  Tensor initial_value(const std::string& name, const Tensor& p, at::Generator& generator) const;

  // Installs (or, with nullptr, removes) the hooks that run around each layer.
  void set_layer_hooks(std::shared_ptr<LayerHooks> hooks) { hooks_ = std::move(hooks); }

  // On: each MLP keeps gate and up for backward but not their GLU product,
  // which backward recomputes (models/recomputed_glu.h). Same values and
  // gradients; [tokens, intermediate] less memory per layer.
  void set_recompute_glu(bool on) { recompute_glu_ = on; }

  // Installs (or, with nullptr, removes) LoRA adapters (models/lora.h): the
  // targeted projections add their low-rank products; their dropout applies
  // while the model is in training mode. The adapters are not submodules:
  // parameters() stays the base model's.
  void set_lora(std::shared_ptr<LoraAdaptersImpl> adapters) { lora_ = std::move(adapters); }
  // Moves each layer's q, k and v weights into one [q + k + v rows, in]
  // buffer, every weight a view of its rows, where all three are frozen
  // (LoRA's base), contiguous and alike: the packed q|k|v projection then
  // reads the stacked weight without a copy per forward and backward
  // (models/packed_projection.h). Values are unchanged; other layers are left
  // as they are. Returns the number of layers packed.
  int64_t pack_frozen_qkv_weights();
  LoraAdaptersImpl* lora() const { return lora_.get(); }

  // ids: [B, T] int64. position_ids: [B, T] or undefined (0..T-1).
  // document_ids: [B, T] or undefined; when given, attention stays inside each
  // document (packed sequences without cross-contamination). document_tokens:
  // their pair-weighted mean length (kernels/document_length.h), or 0 if
  // unknown; it picks the attention kernels, never the values.
  // Returns the final-norm hidden states [B, T, hidden] in compute dtype.
  Tensor forward(const Tensor& ids, const Tensor& position_ids = Tensor(),
                 const Tensor& document_ids = Tensor(), int64_t document_tokens = 0);

  // ids: [B, T] new tokens at positions cache.length() .. + T - 1; appends
  // their keys/values to `cache` and returns their final-norm hidden states.
  // With an empty cache it equals forward(ids). No autograd is intended.
  Tensor forward_cached(const Tensor& ids, KvCache& cache);

  // The lm_head weight [vocab, hidden] (the embedding when tied), as stored.
  Tensor lm_head_weight() const;
  // The routers' logits and choices of the last forward, one per layer
  // (empty for a dense model), handed over once: the router losses
  // (models/router_losses.h) read them.
  std::vector<RouterOutput> take_router_outputs() { return std::move(router_outputs_); }
  // lm_head_weight() as the head over `hidden` reads it: when tied and
  // `hidden` is (a view of) the last forward's output under autograd, the
  // weight through tied_head (models/tied_embedding.h), so that its
  // gradient joins the lookup's in one tensor; else lm_head_weight().
  Tensor lm_head_weight_for(const Tensor& hidden) const;
  // hidden [..., hidden] -> hidden @ lm_head^T [..., vocab] in compute dtype,
  // BEFORE the final softcap: what the loss ops take (they apply
  // config().final_softcap themselves, see trainer/loss.cpp).
  Tensor lm_head_logits(const Tensor& hidden) const;
  // The model's logits, as HF returns them: lm_head_logits with the final
  // softcap applied (Gemma 2). For eval and generation.
  Tensor logits(const Tensor& hidden) const;

  const ModelConfig& config() const { return config_; }
  at::ScalarType compute_dtype() const { return compute_dtype_; }
  const kernels::KernelSet& kernels() const { return kernels_; }
  int64_t num_parameters() const;

  Backbone model{nullptr};
  Weight lm_head{nullptr};  // null when tie_embeddings

 private:
  // The layers over ids at `positions` ([B|1, T] int64); with a cache, the
  // keys/values of earlier tokens come from it and the new ones are appended.
  Tensor run(const Tensor& ids, const Tensor& positions, KvCache* cache,
             const Tensor& document_ids = Tensor(), int64_t document_tokens = 0);
  Tensor attention(const SelfAttentionImpl& attn, const Tensor& x, const Tensor& cos,
                   const Tensor& sin, int64_t layer, KvCache* cache, const Tensor& document_ids,
                   int64_t document_tokens) const;
  // residual (optional): returns residual + mlp(x) (with the GLU product
  // recomputed, the add happens inside the down projection's GEMM).
  Tensor mlp_forward(const MlpImpl& mlp, const Tensor& x, int64_t layer,
                     const Tensor& residual = Tensor()) const;
  // residual + the MoE block over x [B, T, H]; records the router's output.
  Tensor moe_forward(const SparseMoeImpl& moe, const Tensor& x, const Tensor& residual);
  kernels::RmsNormOptions norm_options() const;
  Tensor norm(const WeightImpl& weight, const Tensor& x) const;
  // {norm(x + residual), x + residual}: the residual add fused with the norm;
  // an undefined residual gives {norm(x), x} (x passed through for the stream).
  std::pair<Tensor, Tensor> add_norm(const WeightImpl& weight, const Tensor& x,
                                     const Tensor& residual) const;
  // RoPE inverse frequencies [head_dim / 2] fp32 (with rope_scaling applied).
  Tensor inv_freq(const at::Device& device) const;
  // cos, sin: [B|1, T, head_dim] fp32 for the given positions.
  std::pair<Tensor, Tensor> rope_tables(const Tensor& positions) const;
  Tensor cast(const Tensor& weight) const;
  // The adapters of `targets` (models/lora.h LoraTarget values) in `layer`,
  // cast to the compute dtype; nullopt when none of them has one.
  std::optional<LoraOperands> lora_operands(int64_t layer,
                                            std::initializer_list<int> targets) const;

  ModelConfig config_;
  kernels::KernelSet kernels_;
  at::ScalarType compute_dtype_;
  std::shared_ptr<LayerHooks> hooks_;
  bool recompute_glu_ = false;
  std::shared_ptr<LoraAdaptersImpl> lora_;
  // The last forward's tied-embedding link and its output's storage (weak:
  // the activations are not kept alive); empty when it had no autograd or
  // did not finish.
  struct TiedForward {
    c10::intrusive_ptr<TiedEmbeddingLink> link;
    c10::weak_intrusive_ptr<c10::StorageImpl> output;
  };
  std::optional<TiedForward> tied_;
  std::vector<RouterOutput> router_outputs_;
};
TORCH_MODULE(Transformer);

}  // namespace liger::models
