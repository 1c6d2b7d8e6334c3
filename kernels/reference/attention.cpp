// Reference attention. Inputs are [B, T, H, D]; ATen's SDPA wants
// [B, H, T, D], so we transpose on the way in and out.
#include "kernels/checks.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace liger::kernels::reference {
namespace {

double softmax_scale(const Tensor& q, const AttentionOptions& o) {
  return o.scale > 0.0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
}

}  // namespace

// out = softmax(mask(softcap(q k^T * scale))) v, per head, everything up to
// the probabilities in fp32. Query i may see key j iff (not causal or j <= i)
// and (no window or i - j < window). With Tk > Tq (a KV cache) query row r
// is position i = r + Tk - Tq. GQA: key/value head h serves query heads
// h*G .. h*G+G-1 (HF repeat_kv = repeat_interleave over heads).
Tensor attention_explicit(const Tensor& q, const Tensor& k, const Tensor& v,
                          const AttentionOptions& options) {
  checks::attention_args(q, k, v, options);
  const int64_t tq = q.size(1), tk = k.size(1);
  const int64_t groups = q.size(2) / k.size(2);
  // cast: scores in fp32
  const Tensor qh = q.transpose(1, 2).to(at::kFloat);  // [B, Hq, T, D]
  Tensor kh = k.transpose(1, 2).to(at::kFloat);
  Tensor vh = v.transpose(1, 2);
  if (groups > 1) {
    kh = kh.repeat_interleave(groups, /*dim=*/1);
    vh = vh.repeat_interleave(groups, /*dim=*/1);
  }
  Tensor scores = at::matmul(qh, kh.transpose(-1, -2)) * softmax_scale(q, options);
  if (options.softcap > 0.0) scores = at::tanh(scores / options.softcap) * options.softcap;

  const auto idx_opts = at::TensorOptions().dtype(at::kLong).device(q.device());
  const Tensor i = at::arange(tk - tq, tk, idx_opts).unsqueeze(1);  // query position
  const Tensor j = at::arange(tk, idx_opts).unsqueeze(0);           // key position
  Tensor allowed = at::ones({tq, tk}, idx_opts.dtype(at::kBool));
  if (options.causal) allowed = allowed & j.le(i);
  if (options.sliding_window > 0) allowed = allowed & (i - j).lt(options.sliding_window);
  if (options.document_ids.defined()) {
    // Packed documents: keys of the query's own document only -> [B, 1, Tq, Tk]
    const Tensor& doc = options.document_ids;  // [B, T], checked above
    allowed = (allowed.unsqueeze(0) & doc.unsqueeze(2).eq(doc.unsqueeze(1))).unsqueeze(1);
  }
  scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());

  // cast: probabilities to v's dtype before the product, as HF eager does
  const Tensor probs = at::softmax(scores, -1).to(v.scalar_type());
  return at::matmul(probs, vh).transpose(1, 2).contiguous();
}

bool sdpa_serves(const Tensor& q, const Tensor& k, const AttentionOptions& options) {
  // SDPA's causal mask is top-left aligned: a query block shorter than the
  // keys (KV cache) needs a mask aligned to the end.
  return options.sliding_window == 0 && options.softcap == 0.0 && !options.document_ids.defined() &&
         !(options.causal && q.size(1) != k.size(1));
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v,
                 const AttentionOptions& options) {
  if (!sdpa_serves(q, k, options)) return attention_explicit(q, k, v, options);
  checks::attention_args(q, k, v, options);
  const bool gqa = q.size(2) != k.size(2);
  const c10::optional<double> scale =
      options.scale > 0.0 ? c10::optional<double>(options.scale) : c10::nullopt;
  const Tensor out = at::scaled_dot_product_attention(
      q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), /*attn_mask=*/{},
      /*dropout_p=*/0.0, /*is_causal=*/options.causal, scale, /*enable_gqa=*/gqa);
  return out.transpose(1, 2).contiguous();
}

}  // namespace liger::kernels::reference
