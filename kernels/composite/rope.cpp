// Composite rotary position embedding: saves only cos/sin; the backward is
// the transpose of the rotation (the inverse rotation for HF's cos/sin).
#include "kernels/checks.h"
#include "kernels/composite/composite.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

namespace liger::kernels::composite {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// R(x) = rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2]). R is linear with
// R^T = -R.
Tensor rotate_half(const Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// cos/sin [B|1, T, D] (fp32) -> [B|1, T, 1, D] in x's dtype, broadcast over heads.
Tensor per_head(const Tensor& cs, at::ScalarType dtype) {
  return cs.unsqueeze(2).to(dtype);  // cast: fp32 cos/sin to x's dtype, as HF does
}

// Forward:  y = x * c + R(x) * s
// Backward: dx = dy * c + R^T(dy * s) = dy * c - R(dy * s)
// (with HF's cat(freqs, freqs), s is equal on both halves, so this is the
// rotation by -theta; the form above is exact for any cos/sin).
struct RopeFunction : public torch::autograd::Function<RopeFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& q, const Tensor& k,
                               const Tensor& cos, const Tensor& sin) {
    const Tensor cq = per_head(cos, q.scalar_type()), sq = per_head(sin, q.scalar_type());
    const Tensor ck = per_head(cos, k.scalar_type()), sk = per_head(sin, k.scalar_type());
    Tensor q_out = q * cq + rotate_half(q) * sq;
    Tensor k_out = k * ck + rotate_half(k) * sk;
    ctx->save_for_backward({cos, sin});
    ctx->set_materialize_grads(false);  // an unused output gets no gradient, not zeros
    return {q_out, k_out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& cos = saved[0];
    const Tensor& sin = saved[1];
    auto unrotate = [&](const Tensor& dy) -> Tensor {
      if (!dy.defined()) return Tensor();
      const Tensor c = per_head(cos, dy.scalar_type()), s = per_head(sin, dy.scalar_type());
      return dy * c - rotate_half(dy * s);
    };
    return {unrotate(grad_outputs[0]), unrotate(grad_outputs[1]), Tensor(), Tensor()};
  }
};

}  // namespace

std::pair<Tensor, Tensor> rope(const Tensor& q, const Tensor& k, const Tensor& cos,
                               const Tensor& sin) {
  checks::rope_args(q, k, cos, sin);
  // cos/sin are detached: they come from buffers and get no gradient here.
  const auto out = RopeFunction::apply(q, k, cos.detach(), sin.detach());
  return {out[0], out[1]};
}

QkvHeads rope_qkv(const Tensor& qkv, int64_t heads_q, int64_t heads_k, const Tensor& cos,
                  const Tensor& sin) {
  return reference::rope_of_split_qkv(&rope, qkv, heads_q, heads_k, cos, sin);
}

QkvHeads rope_qkv_norm(const Tensor& qkv, int64_t heads_q, int64_t heads_k, const Tensor& q_weight,
                       const Tensor& k_weight, const RmsNormOptions& norm, const Tensor& cos,
                       const Tensor& sin) {
  return reference::norm_then_rope_of_split_qkv(&rms_norm, &rope, qkv, heads_q, heads_k, q_weight,
                                                k_weight, norm, cos, sin);
}

}  // namespace liger::kernels::composite
