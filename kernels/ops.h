// The op API that models call. Every op has one signature here, one line in
// kernels/op_list.h and one implementation per backend (kernels/reference,
// kernels/composite, kernels/cuda); a KernelSet (kernels/registry.h) holds the
// implementation the registry chose for each op. Nothing above kernels/ names
// a backend.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <string>
#include <utility>

namespace liger::kernels {

using at::Tensor;

// ---------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------

// Where RMSNorm casts (Liger-Kernel's names):
//   llama: rstd in fp32, (x * rstd) cast to the input dtype, then * (offset + w)
//   gemma: everything in fp32, cast to the input dtype at the end
//   none:  everything in the input dtype
enum class RmsNormCasting { llama, gemma, none };

struct RmsNormOptions {
  double eps = 1e-6;
  double offset = 0.0;  // Gemma stores w - 1 and multiplies by (1 + w): offset 1
  RmsNormCasting casting = RmsNormCasting::llama;
};

// y = x / sqrt(mean(x^2) + eps) * (offset + w), normalised over the last dim.
// x: [..., D], weight: [D]. Returns x's shape and dtype.
using RmsNormFn = Tensor (*)(const Tensor& x, const Tensor& weight, const RmsNormOptions& options);
// The residual add and RMSNorm: {rms_norm(s), s} with s = x + residual in
// x's dtype (the new residual stream; x and residual: same shape and dtype).
// An undefined residual: {rms_norm(x), x} (x passed through as the stream;
// a fused backend sums x's two gradients inside the norm's backward).
// Fused into one pass where a backend has a kernel for it; switched by the
// rms_norm toggle.
using AddRmsNormFn = std::pair<Tensor, Tensor> (*)(const Tensor& x, const Tensor& residual,
                                                   const Tensor& weight,
                                                   const RmsNormOptions& options);

// y = (x - mean) / sqrt(var + eps) * w + b over the last dim (biased variance).
// x: [..., D], weight/bias: [D] (bias may be undefined). Returns x's shape and dtype.
using LayerNormFn = Tensor (*)(const Tensor& x, const Tensor& weight, const Tensor& bias,
                               double eps);

// ---------------------------------------------------------------------------
// Rotary position embedding (HF rotate_half convention)
// ---------------------------------------------------------------------------

// q: [B, T, Hq, D], k: [B, T, Hk, D] (Hk may be < Hq: GQA), D even.
// cos, sin: [B or 1, T, D] in fp32, with the frequencies repeated as HF does
// (cat(freqs, freqs)). out = x * cos + rotate_half(x) * sin, where
// rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2]). cos/sin are cast to x's
// dtype before the product (as HF does). Returns (q_rotated, k_rotated).
using RopeFn = std::pair<Tensor, Tensor> (*)(const Tensor& q, const Tensor& k, const Tensor& cos,
                                             const Tensor& sin);

// The same rotation on a packed projection: qkv [B, T, Hq + 2 Hk, D] holds
// q's heads, then k's, then v's (x @ cat(Wq, Wk, Wv)^T: one GEMM instead of
// three). Returns {rope(q), rope(k), v}, each [B, T, H, D]; the gradients of
// all three come back as one packed gradient of qkv. Switched by the rope
// toggle.
struct QkvHeads {
  Tensor q, k, v;
};
using RopeQkvFn = QkvHeads (*)(const Tensor& qkv, int64_t heads_q, int64_t heads_k,
                               const Tensor& cos, const Tensor& sin);

// Qwen3's per-head q/k RMSNorm, then the rotation, on the packed projection:
// {rope(rms_norm(q, q_weight)), rope(rms_norm(k, k_weight)), v}, the norms
// over head_dim of every query and key head (q_weight, k_weight: [D], one
// dtype). The norm is the rms_norm op's with `norm` (casting, eps, offset);
// the rotation is rope_qkv's. Gradients: the packed d_qkv, d_q_weight and
// d_k_weight (summed over every token and head). Fused into one pass each way
// where a backend has a kernel for it; follows the rope toggle, and the
// model takes it only when the rms_norm toggle is on as well (see
// KernelSet::fuses_qk_norm).
using RopeQkvNormFn = QkvHeads (*)(const Tensor& qkv, int64_t heads_q, int64_t heads_k,
                                   const Tensor& q_weight, const Tensor& k_weight,
                                   const RmsNormOptions& norm, const Tensor& cos,
                                   const Tensor& sin);

// ---------------------------------------------------------------------------
// Gated MLP activations
// ---------------------------------------------------------------------------

// swiglu: silu(gate) * up;  geglu: gelu_tanh(gate) * up. Same shape and dtype.
using GluFn = Tensor (*)(const Tensor& gate, const Tensor& up);

// The backward of a GLU whose product was not kept (activation
// checkpointing of the MLP): from gate, up and dh = dL/dh, recomputes
// h = act(gate) * up exactly as the forward op computes it and returns the
// input gradients, in one pass where a backend has a kernel for it. No
// autograd: it runs inside a backward. With overwrite_inputs, d_gate and d_up
// may be written into gate's and up's buffers (whose values are then gone).
// Switched by the swiglu / geglu toggle, with the forward op.
struct GluRecomputed {
  Tensor h, d_gate, d_up;
};
using GluRecomputeFn = GluRecomputed (*)(const Tensor& gate, const Tensor& up, const Tensor& dh,
                                         bool overwrite_inputs);

// ---------------------------------------------------------------------------
// Losses
// ---------------------------------------------------------------------------

// mean: sum over non-ignored tokens / their count (0 when there are none);
// sum: sum over non-ignored tokens; none: per-token loss [N] (0 where ignored).
enum class Reduction { mean, sum, none };

struct CrossEntropyOptions {
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;  // eps: (1-eps) * CE + eps * mean_i(-log p_i)
  double z_loss_scale = 0.0;     // adds scale * lse^2 per non-ignored token
  double softcap = 0.0;          // > 0: logits <- softcap * tanh(logits / softcap) first
  Reduction reduction = Reduction::mean;
  // > 0: 'mean' divides by this count instead of the local non-ignored count.
  // The trainer passes the target-token count of the whole accumulated batch
  // (all micro-batches, all ranks), which makes accumulation exact while the
  // loss's upstream gradient stays 1 (a fused backward can then skip scaling).
  double normalizer = 0.0;
  // Defined: 'mean' multiplies the sum by this fp32 scalar (on the logits'
  // device) instead of dividing by `normalizer` or the count. The trainer's
  // CUDA-graph step passes 1 / count this way: a captured launch keeps its
  // arguments, so a count that changes per step must live in device memory.
  Tensor inverse_normalizer;
};

// logits: [N, V] (any float dtype), labels: [N] int64. The loss is fp32 (all
// arithmetic in fp32); the gradient w.r.t. logits has the logits' dtype.
using CrossEntropyFn = Tensor (*)(const Tensor& logits, const Tensor& labels,
                                  const CrossEntropyOptions& options);

// speed: chunks of tokens, three GEMMs per chunk, weight gradient accumulated
//        in an fp32 buffer across chunks;
// lean:  blocks of the vocabulary over all tokens, a first pass for the
//        log-sum-exp and a second that recomputes each block's logits, so each
//        weight-gradient block is one GEMM (no fp32 [V, H] buffer; one more GEMM).
// Backends without the distinction (composite) chunk over tokens.
enum class FlceMode { speed, lean };

struct FusedLinearCrossEntropyOptions {
  CrossEntropyOptions ce;
  // Memory budget for one chunk of logits (fp32 MiB). Chunks are sized from it.
  double chunk_mb = 256.0;
  FlceMode mode = FlceMode::speed;
  // The head's GEMMs through the tuned GEMM (cuda speed path; set from the
  // tuned_gemm toggle by the model).
  bool tuned_gemm = false;
};

// loss = cross_entropy(hidden @ weight^T + bias, labels) without ever holding
// the full [N, V] logits. hidden: [N, H], weight: [V, H], bias: [V] or
// undefined, labels: [N]. Weight/bias gradients are accumulated in fp32.
using FusedLinearCrossEntropyFn = Tensor (*)(const Tensor& hidden, const Tensor& weight,
                                             const Tensor& bias, const Tensor& labels,
                                             const FusedLinearCrossEntropyOptions& options);

// ---------------------------------------------------------------------------
// Preference losses (DPO, ORPO, SimPO) on the lm_head's output
// ---------------------------------------------------------------------------

enum class PreferenceObjective { dpo, orpo, simpo };
// DPO's loss on the pair's logits u (see below).
enum class DpoLossType { sigmoid, ipo, hinge };

struct PreferenceOptions {
  PreferenceObjective objective = PreferenceObjective::dpo;
  DpoLossType loss_type = DpoLossType::sigmoid;
  double beta = 0.1;
  double label_smoothing = 0.0;  // ls: DPO sigmoid and SimPO only
  double orpo_alpha = 0.1;       // ORPO's weight of the odds-ratio term
  double simpo_gamma = 0.5;      // SimPO's target margin
  double nll_weight = 0.0;       // weight of the NLL on chosen tokens (ORPO adds its own 1)
  int64_t num_pairs = 0;         // P: sequences [0, P) are chosen, [P, 2P) rejected
  int64_t ignore_index = -100;
  // > 0: the pair terms divide by this (the pairs of the whole accumulated
  // batch, all ranks) instead of P; 0: by P.
  double pair_normalizer = 0.0;
  // > 0: the NLL term divides by this (the chosen response tokens of the whole
  // accumulated batch) instead of this call's chosen-token count.
  double chosen_token_normalizer = 0.0;
  double chunk_mb = 256.0;  // fused backends: budget of one fp32 [rows, V] chunk
};

struct PreferenceLossResult {
  Tensor loss;    // fp32 scalar, differentiable w.r.t. hidden and weight
  Tensor logps;   // [2P] fp32, no gradient: per sequence, the sum of log p(label)
  Tensor counts;  // [2P] fp32, no gradient: per sequence, its response tokens
};

// hidden: [N, H], weight: [V, H] (the lm_head, no bias), labels: [N] int64
// (ignore_index where the token is not a response target), sequence: [N]
// int64, the sequence each token belongs to, in [0, 2P) (read only where the
// label is kept). reference_logps: [2P] fp32 summed reference log-probs
// (required by DPO; undefined for ORPO and SimPO).
//
// With s a sequence, logp_s = sum over its kept tokens t of log softmax(h_t W^T)[y_t]
// (fp32), n_s its kept-token count, avg_s = logp_s / n_s, and for pair i
// c = i (chosen), r = P + i (rejected), ref_s = reference_logps[s]:
//   DPO sigmoid  u = (logp_c - ref_c) - (logp_r - ref_r)
//                L_i = -(1 - ls) logsigmoid(beta u) - ls logsigmoid(-beta u)
//   DPO ipo      u = (avg_c - ref_c / n_c) - (avg_r - ref_r / n_r)   (length-averaged)
//                L_i = (u - 1 / (2 beta))^2
//   DPO hinge    u as for sigmoid, L_i = relu(1 - beta u)
//   ORPO         o = (avg_c - avg_r) - (log(1 - exp(avg_c)) - log(1 - exp(avg_r)))
//                L_i = -orpo_alpha logsigmoid(o)
//   SimPO        z = beta (avg_c - avg_r) - simpo_gamma
//                L_i = -(1 - ls) logsigmoid(z) - ls logsigmoid(-z)
//   loss = sum_i L_i / pair_normalizer
//          + (nll_weight + [ORPO]) * sum_i (-logp_c) / chosen_token_normalizer
using FusedLinearPreferenceFn = PreferenceLossResult (*)(const Tensor& hidden, const Tensor& weight,
                                                         const Tensor& labels,
                                                         const Tensor& sequence,
                                                         const Tensor& reference_logps,
                                                         const PreferenceOptions& options);

// ---------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------

// Who serves attention that SDPA can mask (no window, softcap or documents)
// where our kernel can too (cuda, bf16/fp16): ATen's SDPA (cuDNN / flash),
// our flash kernel, or the one measured faster at the shape on an H100
// (kernels/cuda/attention.cpp says where).
enum class PlainAttention { measured, sdpa, liger };

struct AttentionOptions {
  bool causal = true;
  double scale = 0.0;          // 0: 1/sqrt(D)
  int64_t sliding_window = 0;  // > 0: a query sees at most this many keys (itself included)
  double softcap = 0.0;        // > 0: scores <- softcap * tanh(scores / softcap)
  // [B, T] int64 or undefined: packed sequences; a query attends only to keys
  // of its own document (block-diagonal causal mask). Needs Tq == Tk.
  Tensor document_ids;
  // With document_ids: their documents' length in tokens weighted by their
  // share of the visible pairs (sum of squared lengths / sum of lengths over
  // the batch; pair_weighted_document_length in kernels/document_length.h),
  // formed by the caller on the host; 0 = unknown. It changes no value: the
  // cuda backend picks its kernels by it (long documents take the
  // warp-specialized forward and dk/dv, short ones the one-warpgroup blocks).
  int64_t document_tokens = 0;
  // Only the cuda backend reads it; KernelSet::attention sets it from
  // kernels.plain_attention (whatever the caller put here).
  PlainAttention plain = PlainAttention::measured;
};

// q: [B, T, Hq, D], k, v: [B, T, Hk, D] with Hq % Hk == 0 (GQA). Returns [B, T, Hq, D].
// k, v may have more positions than q (Tk > Tq: a KV cache during generation);
// the queries are then the LAST Tq positions (query row r sits at position
// r + Tk - Tq for the causal mask and the sliding window).
using AttentionFn = Tensor (*)(const Tensor& q, const Tensor& k, const Tensor& v,
                               const AttentionOptions& options);

// ---------------------------------------------------------------------------
// Sparse mixture of experts (Mixtral's MLP)
// ---------------------------------------------------------------------------

// The router's choice and the block's output. y [N, H] in x's dtype;
// router_logits [N, E] = x @ router^T in x's dtype, with autograd (the
// load-balancing and z losses read it); experts [N, k] int64, the chosen
// experts of each token in descending probability (no gradient).
struct MoeOutput {
  Tensor y, router_logits, experts;
};

// Mixtral's sparse MoE block over tokens x [N, H]:
//   logits = x @ router^T                          router [E, H], no bias
//   p = softmax(fp32(logits)); the top_k experts of p, their p renormalised to sum to 1 (fp32)
//   y[t] = sum over the chosen e of w[t, e] * down[e] (silu(g) * u),
//          [g | u] = gate_up[e] x[t]               gate_up [E, 2F, H]: gate rows, then up rows
//                                                   down [E, H, F]
// The weighted expert output is rounded to x's dtype before the sum over
// experts (as HF's index_add into an x-dtype buffer). Gradients for x,
// router, gate_up and down. Switched by the moe toggle.
using MoeFn = MoeOutput (*)(const Tensor& x, const Tensor& router, const Tensor& gate_up,
                            const Tensor& down, int64_t top_k);

// ---------------------------------------------------------------------------
// Matrix products of the linear layers
// ---------------------------------------------------------------------------

// out = a @ b (+ c): a [m, k] and b [k, n] 2-D, either may be a transposed
// view (w.t()); fp32 accumulation. c, when defined: [m, n], or [n] (a bias
// added to every row), added (beta = 1); the cuda backend hands a [n] c to the
// reference (addmm, whose CUDA path adds the bias in cuBLASLt's epilogue).
// out, when defined: [m, n], written and returned; it may be c itself
// (accumulate in place) and may be fp32 with 16-bit a and b. Undefined: a new
// [m, n] tensor in a's dtype. No autograd: the models call it inside their
// own backward nodes and under no_grad. Switched by the tuned_gemm toggle
// (the reference is ATen's mm / addmm).
using TunedGemmFn = Tensor (*)(const Tensor& a, const Tensor& b, const Tensor& c,
                               const Tensor& out);

}  // namespace liger::kernels
