// Reference rotary position embedding: HF's apply_rotary_pos_emb, on our
// [B, T, H, D] layout.
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

}  // namespace liger::kernels::reference
