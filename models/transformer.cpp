#include "models/transformer.h"

#include <torch/torch.h>

#include <cmath>

namespace liger::models {

WeightImpl::WeightImpl(at::IntArrayRef shape, const at::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty(shape, options));
}

SelfAttentionImpl::SelfAttentionImpl(const ModelConfig& c, const at::TensorOptions& options) {
  const int64_t d = c.resolved_head_dim();
  q_proj = register_module("q_proj", Weight(at::IntArrayRef{c.num_heads * d, c.hidden_size}, options));
  k_proj = register_module("k_proj", Weight(at::IntArrayRef{c.num_kv_heads * d, c.hidden_size}, options));
  v_proj = register_module("v_proj", Weight(at::IntArrayRef{c.num_kv_heads * d, c.hidden_size}, options));
  o_proj = register_module("o_proj", Weight(at::IntArrayRef{c.hidden_size, c.num_heads * d}, options));
}

MlpImpl::MlpImpl(const ModelConfig& c, const at::TensorOptions& options) {
  gate_proj = register_module("gate_proj", Weight(at::IntArrayRef{c.intermediate_size, c.hidden_size}, options));
  up_proj = register_module("up_proj", Weight(at::IntArrayRef{c.intermediate_size, c.hidden_size}, options));
  down_proj = register_module("down_proj", Weight(at::IntArrayRef{c.hidden_size, c.intermediate_size}, options));
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, const at::TensorOptions& options) {
  self_attn = register_module("self_attn", SelfAttention(c, options));
  mlp = register_module("mlp", Mlp(c, options));
  input_layernorm = register_module("input_layernorm", Weight(at::IntArrayRef{c.hidden_size}, options));
  post_attention_layernorm =
      register_module("post_attention_layernorm", Weight(at::IntArrayRef{c.hidden_size}, options));
}

BackboneImpl::BackboneImpl(const ModelConfig& c, const at::TensorOptions& options) {
  embed_tokens = register_module("embed_tokens", Weight(at::IntArrayRef{c.vocab_size, c.hidden_size}, options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(DecoderLayer(c, options));
  norm = register_module("norm", Weight(at::IntArrayRef{c.hidden_size}, options));
}

TransformerImpl::TransformerImpl(const ModelConfig& config, kernels::KernelSet kernels,
                                 const at::TensorOptions& param_options,
                                 at::ScalarType compute_dtype)
    : config_(config), kernels_(std::move(kernels)), compute_dtype_(compute_dtype) {
  config_.validate();
  model = register_module("model", Backbone(config_, param_options));
  if (!config_.tie_embeddings) {
    lm_head = register_module("lm_head", Weight(at::IntArrayRef{config_.vocab_size, config_.hidden_size},
                                                param_options));
  }
}

void TransformerImpl::init_weights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& item : named_parameters()) {
    Tensor& p = item.value();
    if (p.device().is_meta()) continue;
    // Draw on the CPU with our own generator so the init is identical on
    // every device, then copy (a cast happens here for bf16 parameters).
    Tensor values;
    if (p.dim() == 1) {
      values = torch::ones(p.sizes(), at::kFloat);  // norm weights
    } else {
      values = at::normal(0.0, config_.init_std, p.sizes(), generator, at::TensorOptions().dtype(at::kFloat));
    }
    p.copy_(values);
  }
}

Tensor TransformerImpl::cast(const Tensor& weight) const {
  // Master weights may be fp32 while compute is bf16: cast at the point of use
  // (autograd sends the gradient back in the weight's own dtype).
  return weight.scalar_type() == compute_dtype_ ? weight : weight.to(compute_dtype_);
}

Tensor TransformerImpl::norm(const WeightImpl& weight, const Tensor& x) const {
  kernels::RmsNormOptions options;
  options.eps = config_.rms_norm_eps;
  options.casting = kernels::RmsNormCasting::llama;
  return kernels_.rms_norm(x, cast(weight.weight), options);
}

std::pair<Tensor, Tensor> TransformerImpl::rope_tables(const Tensor& position_ids, int64_t seq_len,
                                                       const at::Device& device) const {
  const int64_t d = config_.resolved_head_dim();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  // inv_freq[i] = theta^(-2i/d), i in [0, d/2)  (fp32, as HF)
  Tensor exponent = torch::arange(0, d, 2, f32) / static_cast<double>(d);
  Tensor inv_freq = torch::pow(config_.rope_theta, exponent).reciprocal();
  Tensor positions = position_ids.defined() ? position_ids.to(at::kFloat)
                                            : torch::arange(seq_len, f32).unsqueeze(0);
  // freqs[b, t, i] = pos[b, t] * inv_freq[i]; HF repeats them: cat(freqs, freqs)
  Tensor freqs = positions.unsqueeze(-1) * inv_freq;
  Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

Tensor TransformerImpl::attention(const SelfAttentionImpl& attn, const Tensor& x, const Tensor& cos,
                                  const Tensor& sin) const {
  const int64_t batch = x.size(0), seq = x.size(1);
  const int64_t d = config_.resolved_head_dim();
  Tensor q = torch::linear(x, cast(attn.q_proj->weight)).view({batch, seq, config_.num_heads, d});
  Tensor k = torch::linear(x, cast(attn.k_proj->weight)).view({batch, seq, config_.num_kv_heads, d});
  Tensor v = torch::linear(x, cast(attn.v_proj->weight)).view({batch, seq, config_.num_kv_heads, d});
  std::tie(q, k) = kernels_.rope(q, k, cos, sin);
  kernels::AttentionOptions options;
  options.causal = true;
  Tensor out = kernels_.attention(q, k, v, options);  // [B, T, Hq, D]
  return torch::linear(out.reshape({batch, seq, config_.num_heads * d}), cast(attn.o_proj->weight));
}

Tensor TransformerImpl::mlp_forward(const MlpImpl& mlp, const Tensor& x) const {
  Tensor gate = torch::linear(x, cast(mlp.gate_proj->weight));
  Tensor up = torch::linear(x, cast(mlp.up_proj->weight));
  return torch::linear(kernels_.swiglu(gate, up), cast(mlp.down_proj->weight));
}

Tensor TransformerImpl::forward(const Tensor& ids, const Tensor& position_ids) {
  TORCH_CHECK(ids.dim() == 2, "Transformer::forward expects ids [batch, seq], got ", ids.sizes());
  const int64_t seq = ids.size(1);
  TORCH_CHECK(seq <= config_.max_seq_len, "sequence of ", seq,
              " tokens is longer than model.max_seq_len = ", config_.max_seq_len);
  // Gather rows in the stored dtype, then cast only those rows.
  Tensor x = torch::embedding(model->embed_tokens->weight, ids).to(compute_dtype_);
  auto [cos, sin] = rope_tables(position_ids, seq, ids.device());
  for (const auto& module : *model->layers) {
    const auto& layer = *module->as<DecoderLayerImpl>();
    x = x + attention(*layer.self_attn, norm(*layer.input_layernorm, x), cos, sin);
    x = x + mlp_forward(*layer.mlp, norm(*layer.post_attention_layernorm, x));
  }
  return norm(*model->norm, x);
}

Tensor TransformerImpl::lm_head_weight() const {
  return config_.tie_embeddings ? model->embed_tokens->weight : lm_head->weight;
}

Tensor TransformerImpl::logits(const Tensor& hidden) const {
  return torch::linear(hidden, cast(lm_head_weight()));
}

int64_t TransformerImpl::num_parameters() const {
  int64_t total = 0;
  for (const auto& p : parameters()) total += p.numel();
  return total;
}

}  // namespace liger::models
