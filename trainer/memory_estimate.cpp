#include "trainer/memory_estimate.h"

#include "data/packing.h"
#include "kernels/attention_chunks.h"
#include "models/lora.h"
#include "models/peft.h"
#include "trainer/adapter_setup.h"
#include "trainer/model_setup.h"

#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace liger::trainer {
namespace {

std::string gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return text;
}

// trainer/distributed/fully_sharded.cpp: a unit holding more than twice this
// many elements per rank is reduce-scattered in chunks of it.
constexpr double kReduceChunkElementsPerRank = 64.0 * 1024 * 1024;

}  // namespace

std::string MemoryEstimate::describe() const {
  std::ostringstream out;
  out << "parameters " << gib(parameters) << ", gradients " << gib(gradients) << ", AdamW state "
      << gib(optimizer);
  if (gathered > 0) out << ", gathered weights " << gib(gathered);
  if (reference > 0) out << ", reference copy " << gib(reference);
  out << ", activations " << gib(activations) << " (" << gib(per_layer)
      << " per layer without checkpointing)"
      << ", loss " << gib(loss) << ", backward " << gib(backward) << ": total " << gib(total())
      << " (peak " << (at_loss() >= at_backward_end() ? "at the loss" : "at the end of backward")
      << (gradients_in_forward > 0 ? ", gradients summed across micro-batches" : "") << ")";
  return out.str();
}

int64_t rows_per_micro_batch(const config::TrainConfig& c) {
  return c.training.micro_batch_size * (c.training.objective == config::Objective::sft ? 1 : 2);
}

MemoryEstimate estimate_memory(const models::ModelConfig& m, const config::TrainConfig& c,
                               int64_t world_size) {
  MemoryEstimate e;
  const double world = static_cast<double>(std::max<int64_t>(world_size, 1));
  const double param_bytes = static_cast<double>(c10::elementSize(parameter_dtype(c)));
  const double compute_bytes = static_cast<double>(c10::elementSize(compute_dtype(c)));
  const double h = static_cast<double>(m.hidden_size);
  // The MLP width a token's activations see: an MoE token runs through
  // num_experts_per_token experts, each of intermediate_size ([tokens x k,
  // F] rows, approximated as [tokens, k F] below). Its parameters (all
  // experts and the router) come from num_parameters().
  const double f = static_cast<double>(m.intermediate_size) *
                   static_cast<double>(m.num_experts > 0 ? m.num_experts_per_token : 1);
  const double d = static_cast<double>(m.resolved_head_dim());
  const double q = static_cast<double>(m.num_heads) * d,
               kv = static_cast<double>(m.num_kv_heads) * d;
  const double layers = static_cast<double>(m.num_layers),
               vocab = static_cast<double>(m.vocab_size);
  const double batch = static_cast<double>(rows_per_micro_batch(c)),
               seq = static_cast<double>(c.data.seq_len);
  const double tokens = batch * seq;
  const bool accumulating = c.training.gradient_accumulation_steps > 1;
  const bool copies = uses_compute_copies(c, world_size);
  const bool on_gpu = c.training.device != config::Device::cpu;

  // One decoder layer's parameters (the unit FSDP gathers); MoE: every expert.
  const double layer_params =
      m.num_experts > 0
          ? (static_cast<double>(m.num_parameters()) - vocab * h * (m.tie_embeddings ? 1 : 2) - h) /
                layers
          : h * q * 2 + h * kv * 2 + 3 * h * f + 2 * h;
  const double vocab_params = vocab * h;  // the embedding, or lm_head
  const double all_params = static_cast<double>(m.num_parameters());
  // AdamW's moments follow the parameters' dtype (trainer/optimizer.cpp).
  e.parameters = all_params * param_bytes / world;
  e.gradients = e.parameters;
  e.optimizer = 2 * e.parameters;
  // Accumulating, the gradients (sharded: the shards' flat buffers) live from
  // the first micro-batch's backward to the optimizer step; otherwise the
  // step frees them before the next forward.
  if (accumulating) e.gradients_in_forward = e.gradients;
  if (copies) {  // fp32 weights and 16-bit copies; the gradients are the copies'
    e.parameters = all_params * (param_bytes + compute_bytes);
    e.gradients = all_params * compute_bytes;
    e.gradients_in_forward = 0;
    // Accumulating: each micro-batch's copy gradients are folded into fp32
    // sums, which live through the forwards.
    if (accumulating) {
      e.gradients_in_forward = all_params * param_bytes;
      e.gradients += e.gradients_in_forward;
    }
  }
  // LoRA: the frozen base in the compute dtype without gradient or AdamW
  // state; what trains (adapters, modules_to_save) as above.
  bool frozen_head = false, frozen_embedding = false;
  double lora_rank_columns = 0;  // per token and layer: the adapters' u = dropout(x) A^T
  if (uses_lora(c)) {
    const models::LoraOptions lora = lora_options(c, models::lora_targets_of(m));
    const std::vector<std::string> modules = lora_modules_to_save(c);
    auto saves = [&](const char* name) {
      return std::find(modules.begin(), modules.end(), name) != modules.end();
    };
    frozen_head =
        m.tie_embeddings ? !(saves("embed_tokens") || saves("lm_head")) : !saves("lm_head");
    frozen_embedding = m.tie_embeddings ? frozen_head : !saves("embed_tokens");
    // [vocab, hidden] each; tied, the embedding and the head are one tensor.
    const double saved =
        m.tie_embeddings
            ? (frozen_head ? 0.0 : vocab_params)
            : vocab_params * ((saves("embed_tokens") ? 1 : 0) + (saves("lm_head") ? 1 : 0));
    const double trained = static_cast<double>(models::lora_parameter_count(m, lora)) + saved;
    const double frozen = all_params - saved;
    e.parameters = (frozen * compute_bytes + trained * param_bytes) / world;
    e.gradients = trained * param_bytes / world;
    e.optimizer = 2 * trained * param_bytes / world;
    e.gradients_in_forward = accumulating ? e.gradients : 0.0;
    if (copies) {
      e.parameters += trained * compute_bytes;
      e.gradients_in_forward = accumulating ? trained * param_bytes : 0.0;
      e.gradients = trained * compute_bytes + e.gradients_in_forward;
    }
    lora_rank_columns = static_cast<double>(lora.targets.size()) * static_cast<double>(lora.rank);
    // With dropout, a one-byte mask of each adapted input: x for q|k|v and
    // gate|up, o's and down's inputs.
    if (lora.dropout > 0.0) lora_rank_columns += (2 * h + q + f) / compute_bytes;
  }
  // DPO with preference.reference = model and no LoRA: a frozen copy of the
  // starting weights in the compute dtype on every rank (trainer/preference_step.cpp;
  // with LoRA the reference is the base with the adapters off: no copy).
  if (c.training.objective == config::Objective::dpo &&
      c.preference.reference == config::ReferenceSource::model && !uses_lora(c)) {
    e.reference = all_params * compute_bytes;
  }

  // The fused kernels (norms, RoPE, GLU toggles on) run as our CUDA kernels
  // on a GPU and as the composite backend's ATen ops on the CPU.
  const bool fused =
      c.kernels.rms_norm && c.kernels.rope &&
      (m.mlp_activation == models::MlpActivation::gelu_tanh ? c.kernels.geglu : c.kernels.swiglu);
  const bool composite = fused && !on_gpu;

  // One layer's backward: the MLP's activation gradients ([tokens,
  // intermediate] x 3: the product's, then gate's and up's) and the hidden
  // states' ([tokens, hidden] x 2). The composite GLU's backward computes in
  // fp32 ATen ops: about six fp32 [tokens, intermediate] temporaries at once,
  // two more for gate and the incoming gradient cast to fp32.
  e.backward = composite ? tokens * (f * (24 + (compute_bytes < 4 ? 8 : 0) + compute_bytes) +
                                     2 * h * compute_bytes)
                         : tokens * (3 * f + 2 * h) * compute_bytes;
  // Accumulating into .grad on one process: the embedding's dense gradient is
  // made whole before it is added to the sum.
  if (accumulating && !copies && world == 1 && !frozen_embedding)
    e.backward = std::max(e.backward, vocab_params * param_bytes);
  // The optimizer step, every gradient alive. On a GPU AdamW's kernels keep
  // no temporaries; on the CPU the stochastically rounded and the
  // compute-copy updates (kernels/optim.cpp, ATen ops) hold fp32 operands of
  // a chunk of at most 2^20 elements of one tensor, and the rounding's int64
  // random bits: about 52 bytes an element (20 without rounding).
  const bool stochastic = parameter_dtype(c) == c10::kBFloat16 && c.training.stochastic_rounding;
  if (!on_gpu && (stochastic || copies)) {
    const double chunk = std::min(std::max({vocab_params, h * f, h * q}), 1048576.0);
    e.backward = std::max(e.backward, chunk * (stochastic ? 52.0 : 20.0));
  }

  if (world > 1) {
    // reshard_after_forward: the running layer and the prefetched one; off,
    // every layer stays gathered from its forward to its backward. The
    // embeddings and lm_head while they are in use.
    const double vocab_units = m.tie_embeddings ? vocab_params : 2 * vocab_params;
    const double layers_gathered =
        c.parallelism.reshard_after_forward ? 2 * layer_params : layers * layer_params;
    e.gathered = (layers_gathered + vocab_units) * compute_bytes;
    // A unit's backward leaves its full gradients (compute dtype) to a
    // reduce-scatter staged in the reduce dtype; a layer's is in flight while
    // the next layer's backward runs.
    const double reduce_bytes = c.parallelism.reduce_dtype == config::ReduceDtype::bf16 ? 2.0 : 4.0;
    auto reduce_memory = [&](double full) {
      const double per_rank = std::ceil(full / world);
      const double chunk =
          per_rank > 2 * kReduceChunkElementsPerRank ? kReduceChunkElementsPerRank : per_rank;
      return full * compute_bytes + world * chunk * reduce_bytes;
    };
    e.backward = std::max(e.backward + reduce_memory(layer_params), reduce_memory(vocab_params));
  }

  // Saved for backward per token and layer, in the compute dtype. With the
  // fused kernels: the two norms' inputs and outputs (4h), q, k, v for
  // attention and its output (2q + 2kv; RoPE keeps only its tables), the
  // MLP's gate, up and product (3f); composite: also the packed q|k|v
  // projection (q + 2kv), which v, a view of it, keeps alive. With the
  // reference ops (ATen keeps more intermediates): the norms' inputs, outputs
  // and residuals (6h), q/k/v before and after RoPE and the attention output
  // (4q + 4kv). glu (and full, inside the recomputed layer): no product.
  const auto checkpointing = c.training.activation_checkpointing;
  const double glu_kept = checkpointing == config::ActivationCheckpointing::none ? 1.0 : 0.0;
  // Qwen3's q/k norms: on the GPU the norms keep views of the packed
  // projection (q + 2kv alive) and their kernels dense copies of q and k; the
  // composite norms keep views only and their outputs die in the rope op;
  // ATen's keep about two more copies of q and k.
  const double qk_norm_kept = !m.qk_norm  ? 0.0
                              : composite ? 0.0
                              : fused     ? 2 * q + 3 * kv
                                          : 2 * (q + kv);
  const double attention_kept =
      (fused ? 4 * h + 2 * q + 2 * kv + (composite ? q + 2 * kv : 0.0) : 6 * h + 4 * q + 4 * kv) +
      qk_norm_kept;
  const double layer_base =
      tokens * (attention_kept + (2 + glu_kept) * f + lora_rank_columns) * compute_bytes;
  // Layers whose attention SDPA cannot mask (a sliding window, an attention
  // softcap, per-document masks) take one of two paths.
  // kernels.attention on (kernels/composite/attention.cpp; the cuda backend
  // serves the same): exact attention in query chunks. Such a layer keeps
  // the fp32 log-sum-exp [heads, T] beside q, k, v and the output; its
  // backward holds fp32 copies of k and v and their fp32 gradient sums
  // (4 kv per token) and two fp32 chunks of scores (the probabilities and
  // their gradient; three with a softcap: tanh's slope). Forward holds less
  // (one chunk, fp32 k).
  // kernels.attention off (the reference's explicit fp32 path,
  // kernels/reference/attention.cpp): the layer also keeps [heads, T, T]
  // probabilities in fp32, and in a 16-bit compute dtype their copy cast for
  // the product with v (the softcap's tanh too, fp32), and q and k in fp32
  // (k repeated to every query head); on the way it holds about two fp32
  // score tensors at once.
  const bool isolated = data::parse_packing_mode(c.data.packing) == data::PackingMode::isolated;
  const double heads = static_cast<double>(m.num_heads);
  const double scores = batch * heads * seq * seq;
  // Kept by such a layer beyond layer_base.
  const double masked_extra =
      c.kernels.attention
          ? tokens * heads * 4
          : scores * (4 + (compute_bytes < 4 ? compute_bytes : 0) + (m.attn_softcap > 0 ? 4 : 0)) +
                tokens * 2 * q * 4;
  double all_layers = 0, per_layer = layer_base;
  for (int64_t layer = 0; layer < m.num_layers; ++layer) {
    const int64_t window = m.layer_sliding_window(layer);
    if (window == 0 && m.attn_softcap <= 0 && !isolated) {
      all_layers += layer_base;
      continue;
    }
    all_layers += layer_base + masked_extra;
    per_layer = layer_base + masked_extra;
    const double working = c.kernels.attention ? kernels::attention_chunk_score_bytes(
                                                     rows_per_micro_batch(c), m.num_heads,
                                                     c.data.seq_len, c.data.seq_len, window) *
                                                         (m.attn_softcap > 0 ? 3 : 2) +
                                                     tokens * kv * 4 * 4
                                               : scores * 8;
    e.backward = std::max(e.backward, working);
  }
  e.per_layer = per_layer;
  if (checkpointing == config::ActivationCheckpointing::full) {
    e.activations = layers * tokens * h * compute_bytes + e.per_layer;
    e.first_layer =
        e.per_layer + tokens * h * compute_bytes;  // its checkpoint and its recomputed activations
  } else {
    e.activations = all_layers;
    e.first_layer = e.per_layer;
  }

  // The loss's working memory, and the gradient of lm_head's weight it makes
  // (accumulating: beside the running sum until backward adds it).
  // A frozen head (LoRA) makes no weight gradient: no head_grad, no fp32 sum.
  const double head_grad = frozen_head ? 0.0 : vocab_params * compute_bytes;
  const double chunk_budget = c.kernels.flce_chunk_mb * 1024.0 * 1024.0;
  if (c.kernels.fused_linear_cross_entropy && on_gpu) {
    // kernels/cuda/losses.cpp. speed: token chunks of logits (their gradient
    // overwrites them), dL/dx, and an fp32 [vocab, hidden] sum of the weight
    // gradient unless all the logits fit one chunk (then one GEMM writes the
    // gradient). lean: vocabulary blocks of logits, an fp32 dL/dx sum.
    const double logits = std::min(chunk_budget, tokens * vocab * compute_bytes);
    const bool one_chunk = chunk_budget >= tokens * vocab * compute_bytes;
    if (c.kernels.flce_mode == config::FlceMode::speed) {
      e.loss = logits + head_grad + (one_chunk || frozen_head ? 0.0 : vocab_params * 4) +
               tokens * h * compute_bytes;
    } else {
      e.loss = logits + head_grad + tokens * h * (4 + compute_bytes);
    }
  } else if (c.kernels.fused_linear_cross_entropy) {
    // kernels/composite/cross_entropy.cpp: chunks of rows (the budget over
    // fp32 rows): the logits and their fp32 loss and gradient, about two
    // chunks; the weight gradient summed in fp32, cast to the weight's dtype
    // in backward; dL/dx.
    e.loss = 2 * std::min(chunk_budget, 4 * tokens * vocab) +
             (frozen_head ? 0.0 : vocab_params * 4) + (compute_bytes < 4 ? head_grad : 0.0) +
             tokens * h * compute_bytes;
  } else {
    // The logits in the compute dtype and their fp32 gradient.
    e.loss = tokens * vocab * (compute_bytes + 4) + head_grad;
  }
  return e;
}

}  // namespace liger::trainer
