// The reference backend: plain ATen, written to compute what HF transformers
// computes (same casts, same op order where it matters). It is the baseline
// every other backend is tested against and the path of convergence baselines.
// Autograd comes from ATen; nothing here saves memory on purpose.
//
// Signatures are the ones of kernels/ops.h; see there for shapes and options.
#pragma once

#include "kernels/ops.h"

namespace liger::kernels::reference {

Tensor rms_norm(const Tensor& x, const Tensor& weight, const RmsNormOptions& options);
// s = x + residual in x's dtype (HF's `residual + hidden_states`), then
// rms_norm(s) above. Returns {rms_norm(s), s}.
std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& residual,
                                       const Tensor& weight, const RmsNormOptions& options);
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

std::pair<Tensor, Tensor> rope(const Tensor& q, const Tensor& k, const Tensor& cos,
                               const Tensor& sin);
// Splits qkv into its q, k, v heads (views) and rotates q and k with rope
// above; v is the view itself.
QkvHeads rope_qkv(const Tensor& qkv, int64_t heads_q, int64_t heads_k, const Tensor& cos,
                  const Tensor& sin);
// The unfused packed RoPE, shared with the composite backend: checks qkv,
// splits it (split_with_sizes, whose backward writes one packed gradient)
// and applies the backend's own rope to q and k.
QkvHeads rope_of_split_qkv(RopeFn rope, const Tensor& qkv, int64_t heads_q, int64_t heads_k,
                           const Tensor& cos, const Tensor& sin);

Tensor swiglu(const Tensor& gate, const Tensor& up);
Tensor geglu(const Tensor& gate, const Tensor& up);
// h = swiglu/geglu above without a graph, the gradients by autograd through them.
GluRecomputed swiglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh,
                               bool overwrite_inputs);
GluRecomputed geglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh,
                              bool overwrite_inputs);
// The unfused recomputing backward, shared with the composite backend: the
// backend's own GLU op runs again with autograd on detached gate and up, and
// autograd takes its backward of dh (overwrite_inputs is a permission, not
// used here).
GluRecomputed recompute_by_autograd(GluFn glu, const Tensor& gate, const Tensor& up,
                                    const Tensor& dh);

Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options);
// Materialises logits = hidden @ weight^T (+ bias) in hidden's dtype, then
// calls cross_entropy above.
Tensor fused_linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                                  const Tensor& labels,
                                  const FusedLinearCrossEntropyOptions& options);

// Where sdpa_serves: at::scaled_dot_product_attention. Otherwise (a sliding
// window, a softcap, document ids, or a causal query block shorter than the
// keys): an explicit fp32 masked matmul-softmax (see attention_explicit),
// which holds [B, Hq, Tq, Tk] scores and keeps the probabilities for backward.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v,
                 const AttentionOptions& options);
// The explicit path on its own (also valid without window/softcap), so that
// tests can check it against SDPA.
Tensor attention_explicit(const Tensor& q, const Tensor& k, const Tensor& v,
                          const AttentionOptions& options);
// Whether ATen's SDPA computes this attention as ops.h defines it: no window,
// softcap or document ids, and a causal mask only with as many queries as
// keys. Shared with the composite backend, which takes SDPA in the same cases.
bool sdpa_serves(const Tensor& q, const Tensor& k, const AttentionOptions& options);

// ATen's mm / addmm (see ops.h TunedGemmFn); on the CPU an fp32 out of
// 16-bit operands takes fp32 copies of them (the same fp32 accumulation).
Tensor matmul(const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& out);

// The unfused residual add + RMSNorm, shared with the composite backend:
// checks that x and residual match, s = x + residual, then norm(s) with the
// backend's own RMSNorm. Returns {norm(s), s}.
std::pair<Tensor, Tensor> add_then_rms_norm(RmsNormFn norm, const Tensor& x, const Tensor& residual,
                                            const Tensor& weight, const RmsNormOptions& options);

// Reduces per-token losses [N] (already 0 where ignored) as ops.h says:
// mean divides by the number of non-ignored tokens, and gives 0 (not NaN)
// when there are none. Shared with the composite backend.
Tensor reduce_token_losses(const Tensor& per_token, const Tensor& labels,
                           const CrossEntropyOptions& options);

}  // namespace liger::kernels::reference
