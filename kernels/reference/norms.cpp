// Reference RMSNorm, residual add + RMSNorm and LayerNorm: what HF's
// LlamaRMSNorm / GemmaRMSNorm / `residual + hidden_states` / nn.LayerNorm
// compute, with ATen autograd.
#include "kernels/checks.h"
#include "kernels/optional_tensor.h"
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

std::pair<Tensor, Tensor> add_then_rms_norm(RmsNormFn norm, const Tensor& x, const Tensor& residual,
                                            const Tensor& weight, const RmsNormOptions& options) {
  const char* op = "add_rms_norm";
  TORCH_CHECK(x.defined(), op, ": x is required");
  // No residual: {norm(x), x}, x itself as the stream (nothing to add).
  if (!residual.defined()) return {norm(x, weight, options), x};
  TORCH_CHECK(residual.sizes() == x.sizes(), op, ": residual has shape ", residual.sizes(),
              " but x has shape ", x.sizes());
  TORCH_CHECK(residual.scalar_type() == x.scalar_type(), op, ": residual is ",
              residual.scalar_type(), " but x is ", x.scalar_type());
  TORCH_CHECK(residual.device() == x.device(), op, ": residual is on ", residual.device(),
              " but x is on ", x.device());
  // No cast: x and residual share a dtype, so this is the same ATen add as
  // `x + residual` outside the op, bit for bit, in that dtype.
  const Tensor sum = x + residual;
  return {norm(sum, weight, options), sum};
}

std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& residual,
                                       const Tensor& weight, const RmsNormOptions& options) {
  return add_then_rms_norm(&rms_norm, x, residual, weight, options);
}

// y = (x - mean) / sqrt(var + eps) * w + b over the last dim (biased variance).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  checks::norm_args("layer_norm", x, weight, bias);
  const c10::optional<Tensor> w = optional_tensor(weight), b = optional_tensor(bias);
  return at::layer_norm(x, {x.size(-1)}, w, b, eps);
}

}  // namespace liger::kernels::reference
