#include "models/transformer.h"

#include "models/lora.h"
#include "models/packed_projection.h"
#include "models/recomputed_glu.h"

#include <torch/torch.h>

#include <cmath>

namespace liger::models {

WeightImpl::WeightImpl(at::IntArrayRef shape, const at::TensorOptions& options, bool with_bias) {
  weight = register_parameter("weight", torch::empty(shape, options));
  if (with_bias) bias = register_parameter("bias", torch::empty({shape[0]}, options));
}

SelfAttentionImpl::SelfAttentionImpl(const ModelConfig& c, const at::TensorOptions& options) {
  const int64_t d = c.resolved_head_dim();
  q_proj = register_module(
      "q_proj", Weight(at::IntArrayRef{c.num_heads * d, c.hidden_size}, options, c.qkv_bias));
  k_proj = register_module(
      "k_proj", Weight(at::IntArrayRef{c.num_kv_heads * d, c.hidden_size}, options, c.qkv_bias));
  v_proj = register_module(
      "v_proj", Weight(at::IntArrayRef{c.num_kv_heads * d, c.hidden_size}, options, c.qkv_bias));
  o_proj =
      register_module("o_proj", Weight(at::IntArrayRef{c.hidden_size, c.num_heads * d}, options));
  if (c.qk_norm) {
    q_norm = register_module("q_norm", Weight(at::IntArrayRef{d}, options));
    k_norm = register_module("k_norm", Weight(at::IntArrayRef{d}, options));
  }
}

MlpImpl::MlpImpl(const ModelConfig& c, const at::TensorOptions& options) {
  gate_proj = register_module("gate_proj",
                              Weight(at::IntArrayRef{c.intermediate_size, c.hidden_size}, options));
  up_proj = register_module("up_proj",
                            Weight(at::IntArrayRef{c.intermediate_size, c.hidden_size}, options));
  down_proj = register_module("down_proj",
                              Weight(at::IntArrayRef{c.hidden_size, c.intermediate_size}, options));
}

ExpertsImpl::ExpertsImpl(const ModelConfig& c, const at::TensorOptions& options) {
  gate_up_proj = register_parameter(
      "gate_up_proj",
      torch::empty({c.num_experts, 2 * c.intermediate_size, c.hidden_size}, options));
  down_proj = register_parameter(
      "down_proj", torch::empty({c.num_experts, c.hidden_size, c.intermediate_size}, options));
}

SparseMoeImpl::SparseMoeImpl(const ModelConfig& c, const at::TensorOptions& options) {
  gate = register_module("gate", Weight(at::IntArrayRef{c.num_experts, c.hidden_size}, options));
  experts = register_module("experts", Experts(c, options));
}

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& c, const at::TensorOptions& options) {
  self_attn = register_module("self_attn", SelfAttention(c, options));
  if (c.num_experts > 0) {
    moe = register_module("mlp", SparseMoe(c, options));
  } else {
    mlp = register_module("mlp", Mlp(c, options));
  }
  const std::vector<int64_t> norm_shape = {c.hidden_size};
  input_layernorm = register_module("input_layernorm", Weight(norm_shape, options));
  post_attention_layernorm =
      register_module("post_attention_layernorm", Weight(norm_shape, options));
  if (c.post_norms) {
    pre_feedforward_layernorm =
        register_module("pre_feedforward_layernorm", Weight(norm_shape, options));
    post_feedforward_layernorm =
        register_module("post_feedforward_layernorm", Weight(norm_shape, options));
  }
}

BackboneImpl::BackboneImpl(const ModelConfig& c, const at::TensorOptions& options) {
  embed_tokens = register_module("embed_tokens",
                                 Weight(at::IntArrayRef{c.vocab_size, c.hidden_size}, options));
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
    lm_head = register_module(
        "lm_head", Weight(at::IntArrayRef{config_.vocab_size, config_.hidden_size}, param_options));
  }
}

void TransformerImpl::init_weights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& item : named_parameters()) {
    Tensor& p = item.value();
    if (p.device().is_meta()) continue;
    // Drawn on the CPU with our own generator so the init is identical on
    // every device, then copied (a cast happens here for bf16 parameters).
    p.copy_(initial_value(item.key(), p, generator));
  }
}

Tensor TransformerImpl::initial_value(const std::string& name, const Tensor& p,
                                      at::Generator& generator) const {
  const std::string bias_suffix = ".bias";
  if (name.size() > bias_suffix.size() &&
      name.compare(name.size() - bias_suffix.size(), bias_suffix.size(), bias_suffix) == 0) {
    return torch::zeros(p.sizes(), at::kFloat);  // biases start at zero (HF's nn.Linear init)
  }
  if (p.dim() == 1) {
    // Norm weights: the stored w of y = x * rstd * (offset + w) starts at
    // 1 - offset, so the product starts at 1 (Llama: ones; Gemma: zeros).
    return torch::full(p.sizes(), 1.0 - config_.norm_offset, at::kFloat);
  }
  return at::normal(0.0, config_.init_std, p.sizes(), generator,
                    at::TensorOptions().dtype(at::kFloat));
}

int64_t TransformerImpl::pack_frozen_qkv_weights() {
  torch::NoGradGuard no_grad;
  int64_t packed_layers = 0;
  for (const auto& module : *model->layers) {
    SelfAttentionImpl& attn = *module->as<DecoderLayerImpl>()->self_attn;
    std::vector<Tensor*> weights = {&attn.q_proj->weight, &attn.k_proj->weight,
                                    &attn.v_proj->weight};
    const Tensor& first = *weights.front();
    bool alike = true;
    for (const Tensor* w : weights) {
      alike = alike && !w->requires_grad() && w->dim() == 2 && w->is_contiguous() &&
              !w->is_meta() && w->scalar_type() == first.scalar_type() &&
              w->device() == first.device() && w->size(1) == first.size(1);
    }
    if (!alike) continue;
    const Tensor packed = at::cat({*weights[0], *weights[1], *weights[2]}, 0);
    int64_t row = 0;
    for (Tensor* w : weights) {
      const int64_t rows = w->size(0);
      w->set_data(packed.narrow(0, row, rows));  // the parameter now views its rows
      row += rows;
    }
    ++packed_layers;
  }
  return packed_layers;
}

Tensor TransformerImpl::cast(const Tensor& weight) const {
  // Master weights may be fp32 while compute is bf16: cast at the point of use
  // (autograd sends the gradient back in the weight's own dtype).
  return weight.scalar_type() == compute_dtype_ ? weight : weight.to(compute_dtype_);
}

namespace {

// gemma: x * rstd * (1 + w) all in fp32 inside the op (HF GemmaRMSNorm);
// llama: x * rstd rounded to the compute dtype before the weight.
kernels::RmsNormCasting rms_norm_casting(NormCasting casting) {
  switch (casting) {
    case NormCasting::llama: return kernels::RmsNormCasting::llama;
    case NormCasting::gemma: return kernels::RmsNormCasting::gemma;
    case NormCasting::none: return kernels::RmsNormCasting::none;
  }
  return kernels::RmsNormCasting::llama;  // not reached
}

GluKind glu_kind(MlpActivation activation) {
  switch (activation) {
    case MlpActivation::silu: return GluKind::swiglu;
    case MlpActivation::gelu_tanh: return GluKind::geglu;
  }
  return GluKind::swiglu;  // not reached
}

}  // namespace

std::optional<LoraOperands> TransformerImpl::lora_operands(
    int64_t layer, std::initializer_list<int> targets) const {
  if (!lora_) return std::nullopt;
  LoraOperands out;
  bool any = false;
  for (const int target : targets) {
    const LoraPair* pair = lora_->find(layer, static_cast<LoraTarget>(target));
    out.a.push_back(pair != nullptr ? cast(pair->a->weight) : Tensor());
    out.b.push_back(pair != nullptr ? cast(pair->b->weight) : Tensor());
    any = any || pair != nullptr;
  }
  if (!any) return std::nullopt;
  out.scaling = lora_->options().scaling();
  out.dropout = is_training() ? lora_->options().dropout : 0.0;  // as nn.Dropout: off in eval mode
  return out;
}

kernels::RmsNormOptions TransformerImpl::norm_options() const {
  kernels::RmsNormOptions options;
  options.eps = config_.rms_norm_eps;
  options.offset = config_.norm_offset;
  options.casting = rms_norm_casting(config_.norm_casting);
  return options;
}

Tensor TransformerImpl::norm(const WeightImpl& weight, const Tensor& x) const {
  // The weight in compute dtype, as an HF model in that dtype stores it.
  return kernels_.rms_norm(x, cast(weight.weight), norm_options());
}

std::pair<Tensor, Tensor> TransformerImpl::add_norm(const WeightImpl& weight, const Tensor& x,
                                                    const Tensor& residual) const {
  return kernels_.add_rms_norm(x, residual, cast(weight.weight), norm_options());
}

Tensor TransformerImpl::inv_freq(const at::Device& device) const {
  const int64_t d = config_.resolved_head_dim();
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  // inv_freq[i] = theta^(-2i/d), i in [0, d/2)  (fp32, as HF)
  Tensor exponent = torch::arange(0, d, 2, f32) / static_cast<double>(d);
  Tensor inv = torch::pow(config_.rope_theta, exponent).reciprocal();
  const RopeScaling& s = config_.rope_scaling;
  if (s.type == RopeScalingType::llama3) {
    // Llama 3.1: long wavelengths are divided by `factor`, short ones kept,
    // the band between interpolated smoothly (HF _compute_llama3_parameters).
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_freq_wavelen = old_len / s.low_freq_factor;
    const double high_freq_wavelen = old_len / s.high_freq_factor;
    const Tensor wavelen = (2.0 * M_PI) / inv;
    Tensor scaled = torch::where(wavelen > low_freq_wavelen, inv / s.factor, inv);
    const Tensor smooth =
        (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    const Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    const Tensor medium =
        (wavelen < high_freq_wavelen).logical_not() & (wavelen > low_freq_wavelen).logical_not();
    inv = torch::where(medium, smoothed, scaled);
  }
  return inv;
}

std::pair<Tensor, Tensor> TransformerImpl::rope_tables(const Tensor& positions) const {
  // freqs[b, t, i] = pos[b, t] * inv_freq[i]; HF repeats them: cat(freqs, freqs)
  Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq(positions.device());
  Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

Tensor TransformerImpl::attention(const SelfAttentionImpl& attn, const Tensor& x, const Tensor& cos,
                                  const Tensor& sin, int64_t layer, KvCache* cache,
                                  const Tensor& document_ids, int64_t document_tokens) const {
  const int64_t batch = x.size(0), seq = x.size(1);
  const int64_t d = config_.resolved_head_dim();
  const int64_t heads_q = config_.num_heads, heads_k = config_.num_kv_heads;
  // q, k and v from one GEMM over the stacked weights (with their adapters'
  // A products in one more), rotated and split by one op.
  const std::optional<LoraOperands> qkv_lora = lora_operands(
      layer, {static_cast<int>(LoraTarget::q_proj), static_cast<int>(LoraTarget::k_proj),
              static_cast<int>(LoraTarget::v_proj)});
  std::vector<Tensor> qkv_biases;  // Qwen2: added inside the GEMM
  if (config_.qkv_bias) {
    qkv_biases = {cast(attn.q_proj->bias), cast(attn.k_proj->bias), cast(attn.v_proj->bias)};
  }
  const Tensor qkv = packed_projection(
      kernels_, x,
      {cast(attn.q_proj->weight), cast(attn.k_proj->weight), cast(attn.v_proj->weight)},
      qkv_lora ? &*qkv_lora : nullptr, qkv_biases);
  const Tensor heads_view = qkv.view({batch, seq, heads_q + 2 * heads_k, d});
  Tensor q, k, v;
  if (config_.qk_norm && kernels_.fuses_qk_norm()) {
    // Qwen3 with kernels.rms_norm and kernels.rope on: the per-head norms and
    // the rotation in one op (one pass over the packed heads on cuda).
    kernels::QkvHeads heads =
        kernels_.rope_qkv_norm(heads_view, heads_q, heads_k, cast(attn.q_norm->weight),
                               cast(attn.k_norm->weight), norm_options(), cos, sin);
    q = std::move(heads.q);
    k = std::move(heads.k);
    v = std::move(heads.v);
  } else if (config_.qk_norm) {
    // Qwen3: RMSNorm over head_dim on every query and key head, then RoPE.
    // The norms run on the [B, T, H, D] views through the rms_norm op, the
    // rotation through the rope op (rope_qkv takes the unnormed packed heads).
    const std::vector<Tensor> parts = heads_view.split_with_sizes({heads_q, heads_k, heads_k}, 2);
    std::tie(q, k) =
        kernels_.rope(norm(*attn.q_norm, parts[0]), norm(*attn.k_norm, parts[1]), cos, sin);
    v = parts[2];
  } else {
    kernels::QkvHeads heads = kernels_.rope_qkv(heads_view, heads_q, heads_k, cos, sin);
    q = std::move(heads.q);
    k = std::move(heads.k);
    v = std::move(heads.v);
  }
  if (cache != nullptr) {
    // Earlier tokens' keys/values first; the queries are the last `seq`
    // positions of k/v (the attention op aligns them to the end).
    Tensor& keys = cache->keys[layer];
    Tensor& values = cache->values[layer];
    keys = keys.defined() ? torch::cat({keys, k}, 1) : k;
    values = values.defined() ? torch::cat({values, v}, 1) : v;
    k = keys;
    v = values;
  }
  kernels::AttentionOptions options;
  options.causal = true;
  options.scale = config_.attention_scale();
  options.sliding_window = config_.layer_sliding_window(layer);
  options.softcap = config_.attn_softcap;
  options.document_ids = document_ids;
  options.document_tokens = document_tokens;
  Tensor out = kernels_.attention(q, k, v, options);  // [B, T, Hq, D]
  const std::optional<LoraOperands> o_lora =
      lora_operands(layer, {static_cast<int>(LoraTarget::o_proj)});
  return packed_projection(kernels_, out.reshape({batch, seq, config_.num_heads * d}),
                           {cast(attn.o_proj->weight)}, o_lora ? &*o_lora : nullptr);
}

Tensor TransformerImpl::mlp_forward(const MlpImpl& mlp, const Tensor& x, int64_t layer,
                                    const Tensor& residual) const {
  const GluKind glu = glu_kind(config_.mlp_activation);
  const std::optional<LoraOperands> gate_up_lora = lora_operands(
      layer, {static_cast<int>(LoraTarget::gate_proj), static_cast<int>(LoraTarget::up_proj)});
  const std::optional<LoraOperands> down_lora =
      lora_operands(layer, {static_cast<int>(LoraTarget::down_proj)});
  if (recompute_glu_ && torch::GradMode::is_enabled()) {
    // kernels_ is the model's: it outlives the autograd graph.
    return glu_mlp_recomputed(kernels_, glu, x, cast(mlp.gate_proj->weight),
                              cast(mlp.up_proj->weight), cast(mlp.down_proj->weight), residual,
                              gate_up_lora ? &*gate_up_lora : nullptr,
                              down_lora ? &*down_lora : nullptr);
  }
  // Without recomputation gate and up are separate projections, each with its own adapter.
  auto single = [](const std::optional<LoraOperands>& both,
                   size_t i) -> std::optional<LoraOperands> {
    if (!both || !both->a[i].defined()) return std::nullopt;
    LoraOperands one = *both;
    one.a = {both->a[i]};
    one.b = {both->b[i]};
    return one;
  };
  const std::optional<LoraOperands> gate_lora = single(gate_up_lora, 0),
                                    up_lora = single(gate_up_lora, 1);
  Tensor gate = packed_projection(kernels_, x, {cast(mlp.gate_proj->weight)},
                                  gate_lora ? &*gate_lora : nullptr);
  Tensor up =
      packed_projection(kernels_, x, {cast(mlp.up_proj->weight)}, up_lora ? &*up_lora : nullptr);
  Tensor hidden = glu == GluKind::geglu ? kernels_.geglu(gate, up) : kernels_.swiglu(gate, up);
  Tensor out = packed_projection(kernels_, hidden, {cast(mlp.down_proj->weight)},
                                 down_lora ? &*down_lora : nullptr);
  return residual.defined() ? residual + out : out;
}

Tensor TransformerImpl::moe_forward(const SparseMoeImpl& moe, const Tensor& x,
                                    const Tensor& residual) {
  const kernels::MoeOutput out = kernels_.moe(
      x.reshape({-1, x.size(-1)}), cast(moe.gate->weight), cast(moe.experts->gate_up_proj),
      cast(moe.experts->down_proj), config_.num_experts_per_token);
  router_outputs_.push_back({out.router_logits, out.experts});
  const Tensor y = out.y.view(x.sizes());
  return residual.defined() ? residual + y : y;
}

Tensor TransformerImpl::run(const Tensor& ids, const Tensor& positions, KvCache* cache,
                            const Tensor& document_ids, int64_t document_tokens) {
  if (hooks_) hooks_->before_forward();
  router_outputs_.clear();
  const Tensor& embedding = model->embed_tokens->weight;
  // Tied, under autograd: the lookup's backward adds into the head's gradient.
  tied_.reset();
  c10::intrusive_ptr<TiedEmbeddingLink> link;
  if (config_.tie_embeddings && torch::GradMode::is_enabled() && embedding.requires_grad()) {
    link = c10::make_intrusive<TiedEmbeddingLink>();
  }
  // Gather rows in the stored dtype, then cast only those rows.
  Tensor x = link ? tied_lookup(embedding, ids, compute_dtype_, link)
                  : torch::embedding(embedding, ids).to(compute_dtype_);
  if (hooks_) hooks_->after_embedding();
  if (config_.scale_embeddings) {
    // Gemma: times sqrt(hidden) rounded to the compute dtype first, as HF
    // rounds it to the model dtype (sqrt(3072) = 55.4256 becomes 55.5 in bf16).
    x = x * at::scalar_tensor(std::sqrt(static_cast<double>(config_.hidden_size)),
                              at::TensorOptions().dtype(compute_dtype_).device(x.device()));
  }
  Tensor cos, sin;  // not a structured binding: the layer lambda captures them
  std::tie(cos, sin) = rope_tables(positions);
  int64_t index = 0;
  for (const auto& module : *model->layers) {
    // Captured by value: activation checkpointing runs it again in backward,
    // after this function has returned.
    const DecoderLayerImpl* layer_ptr = module->as<DecoderLayerImpl>();
    auto run_layer = [this, layer_ptr, cos, sin, index, cache, document_ids,
                      document_tokens](const Tensor& h) -> Tensor {
      const DecoderLayerImpl& layer = *layer_ptr;
      Tensor y;
      if (config_.post_norms) {
        y = h + norm(*layer.post_attention_layernorm,
                     attention(*layer.self_attn, norm(*layer.input_layernorm, h), cos, sin, index,
                               cache, document_ids, document_tokens));
        const Tensor ffn_in = norm(*layer.pre_feedforward_layernorm, y);
        y = y + norm(*layer.post_feedforward_layernorm,
                     layer.moe ? moe_forward(*layer.moe, ffn_in, Tensor())
                               : mlp_forward(*layer.mlp, ffn_in, index));
      } else {
        // y = h + attention(...) and its norm in one pass (fused on cuda; on
        // backward the add's gradient joins the norm's in the same kernel).
        // h passes through its input norm, so that on backward the residual
        // stream's gradient of h joins the norm's in its kernel too.
        Tensor normed, stream;
        std::tie(normed, stream) = add_norm(*layer.input_layernorm, h, Tensor());
        const Tensor attn = attention(*layer.self_attn, normed, cos, sin, index, cache,
                                      document_ids, document_tokens);
        std::tie(normed, y) = add_norm(*layer.post_attention_layernorm, attn, stream);
        // y + mlp(normed), the add inside the down projection (dense MLP)
        y = layer.moe ? moe_forward(*layer.moe, normed, y)
                      : mlp_forward(*layer.mlp, normed, index, y);
      }
      return y;
    };
    x = hooks_ ? hooks_->run_layer(index, x, run_layer) : run_layer(x);
    ++index;
  }
  if (hooks_) hooks_->before_head();
  Tensor out = norm(*model->norm, x);
  if (link) tied_ = TiedForward{link, out.storage().getWeakStorageImpl()};
  return out;
}

Tensor TransformerImpl::forward(const Tensor& ids, const Tensor& position_ids,
                                const Tensor& document_ids, int64_t document_tokens) {
  TORCH_CHECK(ids.dim() == 2, "Transformer::forward expects ids [batch, seq], got ", ids.sizes());
  const int64_t seq = ids.size(1);
  TORCH_CHECK(seq <= config_.max_seq_len, "sequence of ", seq,
              " tokens is longer than model.max_seq_len = ", config_.max_seq_len);
  const Tensor positions =
      position_ids.defined()
          ? position_ids
          : torch::arange(seq, at::TensorOptions().dtype(at::kLong).device(ids.device()))
                .unsqueeze(0);
  return run(ids, positions, nullptr, document_ids, document_tokens);
}

Tensor TransformerImpl::forward_cached(const Tensor& ids, KvCache& cache) {
  TORCH_CHECK(ids.dim() == 2, "Transformer::forward_cached expects ids [batch, seq], got ",
              ids.sizes());
  const int64_t start = cache.length();
  const int64_t seq = ids.size(1);
  TORCH_CHECK(start + seq <= config_.max_seq_len, "cached context of ", start + seq,
              " tokens is longer than model.max_seq_len = ", config_.max_seq_len);
  if (cache.keys.empty()) {
    cache.keys.resize(static_cast<size_t>(config_.num_layers));
    cache.values.resize(static_cast<size_t>(config_.num_layers));
  }
  const Tensor positions =
      torch::arange(start, start + seq, at::TensorOptions().dtype(at::kLong).device(ids.device()))
          .unsqueeze(0);
  return run(ids, positions, &cache);
}

Tensor TransformerImpl::lm_head_weight() const {
  return config_.tie_embeddings ? model->embed_tokens->weight : lm_head->weight;
}

Tensor TransformerImpl::lm_head_weight_for(const Tensor& hidden) const {
  const Tensor weight = lm_head_weight();
  if (!tied_ || !torch::GradMode::is_enabled() || !hidden.has_storage()) return weight;
  const c10::intrusive_ptr<c10::StorageImpl> output = tied_->output.lock();
  if (!output || output.get() != hidden.storage().unsafeGetStorageImpl()) return weight;
  return tied_head(weight, tied_->link);
}

Tensor TransformerImpl::lm_head_logits(const Tensor& hidden) const {
  return torch::linear(hidden, cast(lm_head_weight_for(hidden)));
}

Tensor TransformerImpl::logits(const Tensor& hidden) const {
  Tensor out = lm_head_logits(hidden);
  const double cap = config_.final_softcap;
  // Gemma 2: logits <- cap * tanh(logits / cap), in the compute dtype as HF.
  if (cap > 0.0) out = torch::tanh(out / cap) * cap;
  return out;
}

int64_t TransformerImpl::num_parameters() const {
  int64_t total = 0;
  for (const auto& p : parameters()) total += p.numel();
  return total;
}

}  // namespace liger::models
