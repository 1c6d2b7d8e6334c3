// The composite backend: custom autograd functions built from ATen ops. They
// run on any device and keep less for backward than ATen's autograd would
// (see each op below); the math is in fp32 and results are stored in the
// training dtype. Signatures are the ones of kernels/ops.h.
#pragma once

#include "kernels/ops.h"

namespace liger::kernels::composite {

// Saves x (the input, alive anyway) and rstd in fp32 ([..., 1]); closed-form
// backward for x and weight, the weight gradient summed in fp32.
Tensor rms_norm(const Tensor& x, const Tensor& weight, const RmsNormOptions& options);

// No fused pass of its own: s = x + residual (ATen), then rms_norm above on s
// (the reference composition with this backend's norm). Returns {rms_norm(s), s}.
std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& residual,
                                       const Tensor& weight, const RmsNormOptions& options);

// Saves x, mean and rstd (fp32, [..., 1]); closed-form backward.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

// Saves only cos and sin; the backward is the inverse rotation. cos/sin get
// no gradient (they come from buffers).
std::pair<Tensor, Tensor> rope(const Tensor& q, const Tensor& k, const Tensor& cos,
                               const Tensor& sin);
// No pass of its own: the split of qkv, then rope above on q and k.
QkvHeads rope_qkv(const Tensor& qkv, int64_t heads_q, int64_t heads_k, const Tensor& cos,
                  const Tensor& sin);

// Save only gate and up; the activation is recomputed in backward.
Tensor swiglu(const Tensor& gate, const Tensor& up);
Tensor geglu(const Tensor& gate, const Tensor& up);
// No pass of its own: swiglu/geglu above again, and their closed-form backward.
GluRecomputed swiglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh,
                               bool overwrite_inputs);
GluRecomputed geglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh,
                              bool overwrite_inputs);

// The gradient w.r.t. logits is computed during forward (fp32 math, stored in
// the logits' dtype); backward only scales it by grad_output. Nothing else of
// the logits is kept. Backward can run once per forward (the buffer is freed).
Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options);

// Chunked over tokens (rows sized from options.chunk_mb): per chunk, logits,
// loss and d_logits, then grad_hidden = d_logits @ W and grad_weight +=
// d_logits^T @ hidden (fp32 accumulator), so the [N, V] logits never exist.
// Mean/sum: gradients are computed in forward and scaled in backward.
// None: forward computes the loss only and backward recomputes the chunks,
// applying grad_output per token. Without grad mode (or with no input
// requiring grad) only the loss is computed.
Tensor fused_linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                                  const Tensor& labels,
                                  const FusedLinearCrossEntropyOptions& options);

// Where SDPA serves (reference::sdpa_serves: plain causal or non-causal, no
// window, softcap or documents): ATen's SDPA, as the reference. Otherwise
// attention_in_chunks below, its chunk sized by kernels/attention_chunks.h.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v,
                 const AttentionOptions& options);
// Exact attention (the reference's attention_explicit, any options) over
// chunks of `chunk_rows` query rows: each chunk scores only the keys it can
// see (causal: up to its last position; window: from its first position -
// window + 1), in fp32, and keeps the per-row log-sum-exp. Saves q, k, v, out
// and the fp32 lse for backward, which recomputes the probabilities chunk by
// chunk; dk and dv are summed in fp32. No [Tq, Tk] tensor exists at any
// time: the working memory is a few fp32 [B, Hq, chunk_rows, keys] blocks.
// GQA without repeating k or v. Exposed (with the chunk size) for tests.
Tensor attention_in_chunks(const Tensor& q, const Tensor& k, const Tensor& v,
                           const AttentionOptions& options, int64_t chunk_rows);

// Rows per chunk for a [rows, V] fp32 block of at most chunk_mb MiB (at least
// 1, at most n). Exposed for tests.
int64_t chunk_rows(double chunk_mb, int64_t vocab, int64_t n);

}  // namespace liger::kernels::composite
