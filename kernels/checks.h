// Shape and dtype checks shared by the backends. They throw c10::Error (a
// std::exception) with a message naming the op, the argument and the shapes,
// so a wrong shape from a model or a data loader never reaches an assert.
#pragma once

#include "kernels/ops.h"

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace liger::kernels::checks {

inline void norm_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                      const at::Tensor& bias) {
  TORCH_CHECK(x.defined() && x.dim() >= 1, op, ": x must have at least one dimension");
  TORCH_CHECK(x.is_floating_point(), op, ": x must be floating point, got ", x.scalar_type());
  const int64_t d = x.size(-1);
  if (weight.defined()) {
    TORCH_CHECK(weight.dim() == 1 && weight.size(0) == d, op, ": weight has shape ", weight.sizes(),
                " but x's last dimension is ", d, " (x: ", x.sizes(), ")");
  }
  if (bias.defined()) {
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == d, op, ": bias has shape ", bias.sizes(),
                " but x's last dimension is ", d, " (x: ", x.sizes(), ")");
  }
}

// q: [B, T, Hq, D], k: [B, T, Hk, D], cos/sin: [B or 1, T, D].
inline void rope_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                      const at::Tensor& sin) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4, "rope: q and k must be [B, T, H, D], got q ", q.sizes(),
              " and k ", k.sizes());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3),
              "rope: q ", q.sizes(), " and k ", k.sizes(), " disagree on B, T or D");
  TORCH_CHECK(q.size(3) % 2 == 0, "rope: head dim must be even, got ", q.size(3));
  TORCH_CHECK(cos.sizes() == sin.sizes(), "rope: cos ", cos.sizes(), " and sin ", sin.sizes(),
              " differ in shape");
  TORCH_CHECK(cos.dim() == 3 && (cos.size(0) == 1 || cos.size(0) == q.size(0)) &&
                  cos.size(1) == q.size(1) && cos.size(2) == q.size(3),
              "rope: cos/sin must be [B or 1, T, D] = [", q.size(0), " or 1, ", q.size(1), ", ",
              q.size(3), "], got ", cos.sizes());
}

// qkv: [B, T, heads_q + 2 heads_k, D] (rope_qkv's packed projection).
inline void rope_qkv_args(const at::Tensor& qkv, int64_t heads_q, int64_t heads_k) {
  TORCH_CHECK(heads_q > 0 && heads_k > 0, "rope_qkv: heads_q and heads_k must be positive, got ",
              heads_q, " and ", heads_k);
  TORCH_CHECK(qkv.dim() == 4 && qkv.size(2) == heads_q + 2 * heads_k,
              "rope_qkv: qkv must be [B, T, heads_q + 2 heads_k, D] = [B, T, ",
              heads_q + 2 * heads_k, ", D], got ", qkv.sizes());
}

inline void glu_args(const char* op, const at::Tensor& gate, const at::Tensor& up) {
  TORCH_CHECK(gate.sizes() == up.sizes(), op, ": gate ", gate.sizes(), " and up ", up.sizes(),
              " differ in shape");
  TORCH_CHECK(gate.scalar_type() == up.scalar_type(), op, ": gate is ", gate.scalar_type(),
              " but up is ", up.scalar_type());
}

inline void ce_args(const char* op, const at::Tensor& logits, const at::Tensor& labels) {
  TORCH_CHECK(logits.dim() == 2, op, ": logits must be [N, V], got ", logits.sizes());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0), op,
              ": labels must be [N] with N = ", logits.size(0), ", got ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": labels must be int64, got ",
              labels.scalar_type());
}

inline void flce_args(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& bias,
                      const at::Tensor& labels) {
  const char* op = "fused_linear_cross_entropy";
  TORCH_CHECK(hidden.dim() == 2, op, ": hidden must be [N, H], got ", hidden.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == hidden.size(1), op,
              ": weight must be [V, H] with H = ", hidden.size(1), ", got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == hidden.scalar_type(), op, ": hidden is ",
              hidden.scalar_type(), " but weight is ", weight.scalar_type(),
              " (cast the lm_head weight to the compute dtype)");
  if (bias.defined()) {
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), op,
                ": bias must be [V] with V = ", weight.size(0), ", got ", bias.sizes());
  }
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == hidden.size(0), op,
              ": labels must be [N] with N = ", hidden.size(0), ", got ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": labels must be int64, got ",
              labels.scalar_type());
}

// q: [B, Tq, Hq, D], k and v: [B, Tk, Hk, D] with Tq <= Tk and Hq % Hk == 0
// (kernels/ops.h AttentionFn); a window only with causal attention;
// document_ids, when given: [B, Tq] with Tq == Tk.
inline void attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const AttentionOptions& o) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
              "attention: q, k, v must be [B, T, H, D], got q ", q.sizes(), ", k ", k.sizes(),
              ", v ", v.sizes());
  TORCH_CHECK(k.sizes() == v.sizes(), "attention: k ", k.sizes(), " and v ", v.sizes(),
              " differ in shape");
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(1) <= k.size(1) && q.size(3) == k.size(3),
              "attention: q ", q.sizes(), " and k ", k.sizes(),
              " disagree on B or D, or q has more positions than k");
  TORCH_CHECK(k.size(2) > 0 && q.size(2) % k.size(2) == 0, "attention: ", q.size(2),
              " query heads are not a multiple of ", k.size(2), " key/value heads");
  TORCH_CHECK(o.sliding_window >= 0, "attention: sliding_window must be >= 0, got ",
              o.sliding_window);
  TORCH_CHECK(o.sliding_window == 0 || o.causal,
              "attention: a sliding window needs causal attention");
  if (o.document_ids.defined()) {
    const at::Tensor& document_ids = o.document_ids;
    TORCH_CHECK(document_ids.dim() == 2 && document_ids.size(0) == q.size(0) &&
                    document_ids.size(1) == q.size(1) && q.size(1) == k.size(1),
                "attention: document_ids must be [batch, seq] = [", q.size(0), ", ", q.size(1),
                "] with as many keys as queries, got ", document_ids.sizes());
  }
}

}  // namespace liger::kernels::checks
