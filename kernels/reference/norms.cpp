// Reference RMSNorm and LayerNorm: what HF's LlamaRMSNorm / GemmaRMSNorm /
// nn.LayerNorm compute, with ATen autograd.
#include "kernels/checks.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>

namespace liger::kernels::reference {

// y = x * rsqrt(mean(x^2) + eps) * (offset + w), over the last dim.
// Where the casts happen depends on options.casting (see ops.h):
//   llama (LlamaRMSNorm): statistics in fp32, x*rstd cast to x's dtype, then
//                         times (offset + w) in w's dtype.
//   gemma (GemmaRMSNorm): everything in fp32, one cast at the end.
//   none:                 everything in x's dtype.
Tensor rms_norm(const Tensor& x, const Tensor& weight, const RmsNormOptions& options) {
  checks::norm_args("rms_norm", x, weight, Tensor());
  TORCH_CHECK(weight.defined(), "rms_norm: weight is required");
  const auto dtype = x.scalar_type();
  const double eps = options.eps;
  const double offset = options.offset;

  switch (options.casting) {
    case RmsNormCasting::llama: {
      const Tensor x32 = x.to(at::kFloat);  // cast: statistics in fp32
      const Tensor rstd = at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
      const Tensor normed = (x32 * rstd).to(dtype);  // cast: back to x's dtype before the weight
      const Tensor w = offset != 0.0 ? weight + offset : weight;
      return (normed * w).to(dtype);  // cast: only matters when w is wider than x
    }
    case RmsNormCasting::gemma: {
      const Tensor x32 = x.to(at::kFloat);  // cast: everything in fp32
      const Tensor rstd = at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
      const Tensor w32 = weight.to(at::kFloat) + offset;
      return (x32 * rstd * w32).to(dtype);  // cast: once, at the end
    }
    case RmsNormCasting::none: {
      const Tensor rstd = at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps);
      // cast: w to x's dtype
      const Tensor w = (offset != 0.0 ? weight + offset : weight).to(dtype);
      return x * rstd * w;
    }
  }
  TORCH_CHECK(false, "rms_norm: unknown casting mode");
}

// y = (x - mean) / sqrt(var + eps) * w + b over the last dim (biased variance).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  checks::norm_args("layer_norm", x, weight, bias);
  const c10::optional<Tensor> w = weight.defined() ? c10::optional<Tensor>(weight) : c10::nullopt;
  const c10::optional<Tensor> b = bias.defined() ? c10::optional<Tensor>(bias) : c10::nullopt;
  return at::layer_norm(x, {x.size(-1)}, w, b, eps);
}

}  // namespace liger::kernels::reference
