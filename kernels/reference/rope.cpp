// Reference rotary position embedding: HF's apply_rotary_pos_emb, on our
// [B, T, H, D] layout; with Qwen3's q_norm / k_norm (Qwen3RMSNorm on each
// head) before it for rope_qkv_norm.
#include "kernels/checks.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>

namespace liger::kernels::reference {
namespace {

// rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2])
Tensor rotate_half(const Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// out = x * cos + rotate_half(x) * sin; cos/sin [B|1, T, D] -> [B|1, T, 1, D]
// broadcast over heads.
Tensor rotate(const Tensor& x, const Tensor& cos, const Tensor& sin) {
  // cast: cos/sin (fp32) to x's dtype before the product, as HF does
  const Tensor c = cos.unsqueeze(2).to(x.scalar_type());
  const Tensor s = sin.unsqueeze(2).to(x.scalar_type());
  return x * c + rotate_half(x) * s;
}

}  // namespace

std::pair<Tensor, Tensor> rope(const Tensor& q, const Tensor& k, const Tensor& cos,
                               const Tensor& sin) {
  checks::rope_args(q, k, cos, sin);
  return {rotate(q, cos, sin), rotate(k, cos, sin)};
}

QkvHeads rope_of_split_qkv(RopeFn rope, const Tensor& qkv, int64_t heads_q, int64_t heads_k,
                           const Tensor& cos, const Tensor& sin) {
  checks::rope_qkv_args(qkv, heads_q, heads_k);
  const std::vector<Tensor> parts = qkv.split_with_sizes({heads_q, heads_k, heads_k}, 2);
  auto [q, k] = rope(parts[0], parts[1], cos, sin);
  return {q, k, parts[2]};
}

QkvHeads rope_qkv(const Tensor& qkv, int64_t heads_q, int64_t heads_k, const Tensor& cos,
                  const Tensor& sin) {
  return rope_of_split_qkv(&rope, qkv, heads_q, heads_k, cos, sin);
}

QkvHeads norm_then_rope_of_split_qkv(RmsNormFn rms_norm, RopeFn rope, const Tensor& qkv,
                                     int64_t heads_q, int64_t heads_k, const Tensor& q_weight,
                                     const Tensor& k_weight, const RmsNormOptions& norm,
                                     const Tensor& cos, const Tensor& sin) {
  checks::rope_qkv_args(qkv, heads_q, heads_k);
  const std::vector<Tensor> parts = qkv.split_with_sizes({heads_q, heads_k, heads_k}, 2);
  // HF Qwen3Attention: q_norm(q_proj(x).view(..., head_dim)), then apply_rotary_pos_emb.
  auto [q, k] =
      rope(rms_norm(parts[0], q_weight, norm), rms_norm(parts[1], k_weight, norm), cos, sin);
  return {q, k, parts[2]};
}

QkvHeads rope_qkv_norm(const Tensor& qkv, int64_t heads_q, int64_t heads_k, const Tensor& q_weight,
                       const Tensor& k_weight, const RmsNormOptions& norm, const Tensor& cos,
                       const Tensor& sin) {
  return norm_then_rope_of_split_qkv(&rms_norm, &rope, qkv, heads_q, heads_k, q_weight, k_weight,
                                     norm, cos, sin);
}

}  // namespace liger::kernels::reference
