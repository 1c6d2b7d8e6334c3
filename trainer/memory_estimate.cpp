#include "trainer/memory_estimate.h"

#include "models/lora.h"
#include "models/peft.h"
#include "trainer/adapter_setup.h"
#include "trainer/model_setup.h"

#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace liger::trainer {
namespace {

std::string gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return text;
}

}  // namespace

std::string MemoryEstimate::describe() const {
  std::ostringstream out;
  out << "parameters " << gib(parameters) << ", gradients " << gib(gradients) << ", AdamW state "
      << gib(optimizer);
  if (gathered > 0) out << ", gathered weights " << gib(gathered);
  out << ", activations " << gib(activations) << " (" << gib(per_layer) << " per layer without checkpointing)"
      << ", loss " << gib(loss) << ": total " << gib(total());
  return out.str();
}

MemoryEstimate estimate_memory(const models::ModelConfig& m, const config::TrainConfig& c, int64_t world_size) {
  MemoryEstimate e;
  const double world = static_cast<double>(std::max<int64_t>(world_size, 1));
  const double param_bytes = static_cast<double>(c10::elementSize(parameter_dtype(c)));
  const double compute_bytes = static_cast<double>(c10::elementSize(compute_dtype(c)));
  const double h = static_cast<double>(m.hidden_size), f = static_cast<double>(m.intermediate_size);
  const double d = static_cast<double>(m.resolved_head_dim());
  const double q = static_cast<double>(m.num_heads) * d, kv = static_cast<double>(m.num_kv_heads) * d;
  const double layers = static_cast<double>(m.num_layers), vocab = static_cast<double>(m.vocab_size);
  const double tokens = static_cast<double>(c.training.micro_batch_size * c.data.seq_len);

  const double layer_params = h * q * 2 + h * kv * 2 + 3 * h * f + 2 * h;
  const double all_params = static_cast<double>(m.num_parameters());
  e.parameters = all_params * param_bytes / world;
  e.gradients = e.parameters;
  e.optimizer = 2 * e.parameters;
  if (uses_compute_copies(c, world_size)) {  // fp32 weights and 16-bit copies; the gradients are the copies'
    e.parameters = all_params * (param_bytes + compute_bytes);
    e.gradients = all_params * compute_bytes;
    // Accumulating: each micro-batch's copy gradients are folded into fp32 sums.
    if (c.training.gradient_accumulation_steps > 1) e.gradients += all_params * param_bytes;
  }
  // LoRA: the frozen base in the compute dtype without gradient or AdamW
  // state; what trains (adapters, modules_to_save) as above.
  bool frozen_head = false;
  if (uses_lora(c)) {
    const models::LoraOptions lora = lora_options(c, models::lora_targets_of(m));
    const std::vector<std::string> modules = lora_modules_to_save(c);
    auto saves = [&](const char* name) { return std::find(modules.begin(), modules.end(), name) != modules.end(); };
    frozen_head = m.tie_embeddings ? !(saves("embed_tokens") || saves("lm_head")) : !saves("lm_head");
    // [vocab, hidden] each; tied, the embedding and the head are one tensor.
    const double saved = m.tie_embeddings ? (frozen_head ? 0.0 : vocab * h)
                                          : vocab * h * ((saves("embed_tokens") ? 1 : 0) + (saves("lm_head") ? 1 : 0));
    const double trained = static_cast<double>(models::lora_parameter_count(m, lora)) + saved;
    const double frozen = all_params - saved;
    e.parameters = (frozen * compute_bytes + trained * param_bytes) / world;
    e.gradients = trained * param_bytes / world;
    e.optimizer = 2 * trained * param_bytes / world;
    if (uses_compute_copies(c, world_size)) {
      e.parameters += trained * compute_bytes;
      e.gradients = trained * compute_bytes + (c.training.gradient_accumulation_steps > 1 ? trained * param_bytes : 0.0);
    }
  }
  if (world > 1) {
    // Two layers at a time (the running one and the prefetched one), the
    // embeddings and lm_head while they are in use.
    const double vocab_units = m.tie_embeddings ? vocab * h : 2 * vocab * h;
    e.gathered = (2 * layer_params + vocab_units) * compute_bytes;
  }
  // Saved for backward per token and layer, in the compute dtype. With the
  // fused GPU kernels (norms, RoPE, GLU on, device not cpu): the two norms'
  // inputs and outputs (4h), q, k, v for attention and its output (2q + 2kv;
  // RoPE keeps only its tables), the MLP's gate, up and product (3f).
  // Otherwise (ATen ops keep more intermediates) the norms' inputs, outputs
  // and residuals (6h), q/k/v before and after RoPE and the attention output
  // (4q + 4kv). glu (and full, inside the recomputed layer): no product.
  const bool fused = c.training.device != config::Device::cpu && c.kernels.rms_norm && c.kernels.rope &&
                     (m.mlp_activation == models::MlpActivation::gelu_tanh ? c.kernels.geglu : c.kernels.swiglu);
  const double glu_kept = c.training.activation_checkpointing == config::ActivationCheckpointing::none ? 1.0 : 0.0;
  e.per_layer = tokens * ((fused ? 4 * h + 2 * q + 2 * kv : 6 * h + 4 * q + 4 * kv) + (2 + glu_kept) * f) *
                compute_bytes;
  if (uses_lora(c)) {
    // Each projection's adapter keeps u = dropout(x) A^T [tokens, rank] and,
    // with dropout, a one-byte mask of its input.
    const models::LoraOptions lora = lora_options(c, models::lora_targets_of(m));
    const double targets = static_cast<double>(lora.targets.size());
    e.per_layer += tokens * targets * static_cast<double>(lora.rank) * compute_bytes;
    if (lora.dropout > 0.0) e.per_layer += tokens * (2 * h + q + f);  // x for q|k|v and gate|up, o's and down's inputs
  }
  if (c.training.activation_checkpointing == config::ActivationCheckpointing::full) {
    e.activations = layers * tokens * h * compute_bytes + e.per_layer;
  } else {
    e.activations = layers * e.per_layer;
  }
  if (c.kernels.fused_linear_cross_entropy) {
    // One logits chunk of the budget (on cuda its gradient overwrites it; the
    // ATen path keeps an fp32 gradient beside it), the gradient of the hidden
    // states and, in speed mode, the fp32 [vocab, hidden] buffer, which cuda
    // does without when all the logits fit in one chunk (the weight gradient
    // then comes straight from one GEMM).
    const bool cuda = c.training.device != config::Device::cpu;
    const double chunks = cuda ? 1.0 : 2.0;
    const double all_logits = tokens * vocab * compute_bytes;
    const bool one_chunk = cuda && c.kernels.flce_chunk_mb * 1024.0 * 1024.0 >= all_logits;
    e.loss = chunks * std::min(c.kernels.flce_chunk_mb * 1024.0 * 1024.0, cuda ? all_logits : 4 * tokens * vocab) +
             tokens * h * 4 + (c.kernels.flce_mode == config::FlceMode::speed && !one_chunk && !frozen_head ? vocab * h * 4 : 0.0);
  } else {
    // The logits in the compute dtype and their fp32 gradient.
    e.loss = tokens * vocab * (compute_bytes + 4);
  }
  return e;
}

}  // namespace liger::trainer
