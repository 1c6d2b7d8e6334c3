// Composite RMSNorm and LayerNorm: forward in fp32 statistics, closed-form
// backward, only x (alive anyway) and [..., 1] fp32 statistics saved. The
// residual add + RMSNorm is the plain add followed by this RMSNorm.
#include "kernels/checks.h"
#include "kernels/composite/composite.h"
#include "kernels/optional_tensor.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

namespace liger::kernels::composite {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Sums a [..., D] fp32 tensor over every dim but the last: [D], in fp32.
Tensor sum_rows(const Tensor& t) {
  return t.reshape({-1, t.size(-1)}).sum(0);
}

// Forward: r = (mean(x^2) + eps)^-1/2 (fp32), n = x * r, y = n * (offset + w),
// with the casts of options.casting (see ops.h and reference::rms_norm).
// Backward, with w~ = offset + w and g = dy * w~ (fp32):
//   dx = r * (g - n * mean(g * n))
//   dw = sum over rows of dy * n            (fp32 accumulation)
struct RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight, double eps,
                        double offset, int64_t casting) {
    const auto dtype = x.scalar_type();
    const Tensor x32 = x.to(at::kFloat);  // cast: statistics in fp32
    const Tensor rstd = at::rsqrt(x32.square().mean(-1, /*keepdim=*/true).add_(eps));
    Tensor y;
    switch (static_cast<RmsNormCasting>(casting)) {
      case RmsNormCasting::llama:
        // cast: x * r back to x's dtype before the weight (HF Llama)
        y = ((x32 * rstd).to(dtype) * (offset != 0.0 ? weight + offset : weight)).to(dtype);
        break;
      case RmsNormCasting::gemma:
        // cast: everything in fp32, once to x's dtype at the end (HF Gemma)
        y = (x32 * rstd * (weight.to(at::kFloat) + offset)).to(dtype);
        break;
      case RmsNormCasting::none:
        // cast: r and w to x's dtype; the products in x's dtype
        y = x * rstd.to(dtype) * (offset != 0.0 ? weight + offset : weight).to(dtype);
        break;
    }
    ctx->save_for_backward({x, weight, rstd});
    ctx->saved_data["offset"] = offset;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& weight = saved[1];
    const Tensor& rstd = saved[2];
    const double offset = ctx->saved_data["offset"].toDouble();

    // cast: all backward math in fp32
    const Tensor dy = grad_outputs[0].to(at::kFloat);
    const Tensor n = x.to(at::kFloat) * rstd;
    Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {
      const Tensor g = dy * (weight.to(at::kFloat) + offset);
      const Tensor gn_mean = (g * n).mean(-1, /*keepdim=*/true);
      dx = ((g - n * gn_mean) * rstd).to(x.scalar_type());  // cast: to x's dtype
    }
    if (ctx->needs_input_grad(1)) {
      dw = sum_rows(dy * n).to(weight.scalar_type());  // cast: fp32 sum to w's dtype
    }
    return {dx, dw, Tensor(), Tensor(), Tensor()};
  }
};

// Forward: mu = mean(x), r = (mean((x - mu)^2) + eps)^-1/2, xh = (x - mu) * r,
// y = xh * w + b, all in fp32, cast to x's dtype at the end.
// Backward, with g = dy * w (fp32):
//   dx = r * (g - mean(g) - xh * mean(g * xh))
//   dw = sum over rows of dy * xh,  db = sum over rows of dy   (fp32)
struct LayerNormFunction : public torch::autograd::Function<LayerNormFunction> {
  // weight/bias are optional: an undefined Tensor cannot be an argument of apply.
  static Tensor forward(AutogradContext* ctx, const Tensor& x,
                        const c10::optional<Tensor>& weight_opt,
                        const c10::optional<Tensor>& bias_opt, double eps) {
    const Tensor weight = weight_opt.value_or(Tensor());
    const Tensor bias = bias_opt.value_or(Tensor());
    const Tensor x32 = x.to(at::kFloat);  // cast: all forward math in fp32
    const Tensor mean = x32.mean(-1, /*keepdim=*/true);
    Tensor xh = x32 - mean;
    const Tensor rstd = at::rsqrt(xh.square().mean(-1, /*keepdim=*/true).add_(eps));
    xh.mul_(rstd);
    if (weight.defined()) xh.mul_(weight.to(at::kFloat));
    if (bias.defined()) xh.add_(bias.to(at::kFloat));
    ctx->save_for_backward({x, weight, mean, rstd});
    // Which of weight/bias want a gradient (their edge indices shift when absent).
    ctx->saved_data["weight_grad"] = weight.defined() && weight.requires_grad();
    ctx->saved_data["bias_grad"] = bias.defined() && bias.requires_grad();
    ctx->saved_data["bias_dtype"] =
        static_cast<int64_t>(bias.defined() ? bias.scalar_type() : x.scalar_type());
    return xh.to(x.scalar_type());  // cast: to x's dtype
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& weight = saved[1];
    const Tensor& mean = saved[2];
    const Tensor& rstd = saved[3];

    // cast: all backward math in fp32
    const Tensor dy = grad_outputs[0].to(at::kFloat);
    const Tensor xh = (x.to(at::kFloat) - mean) * rstd;
    Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) {
      const Tensor g = weight.defined() ? dy * weight.to(at::kFloat) : dy;
      const Tensor g_mean = g.mean(-1, /*keepdim=*/true);
      const Tensor gx_mean = (g * xh).mean(-1, /*keepdim=*/true);
      dx = ((g - g_mean - xh * gx_mean) * rstd).to(x.scalar_type());  // cast: to x's dtype
    }
    if (ctx->saved_data["weight_grad"].toBool()) {
      dw = sum_rows(dy * xh).to(weight.scalar_type());  // cast: fp32 sum to w's dtype
    }
    if (ctx->saved_data["bias_grad"].toBool()) {
      const auto bias_dtype = static_cast<at::ScalarType>(ctx->saved_data["bias_dtype"].toInt());
      db = sum_rows(dy).to(bias_dtype);  // cast: fp32 sum to b's dtype
    }
    return {dx, dw, db, Tensor()};
  }
};

}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& weight, const RmsNormOptions& options) {
  checks::norm_args("rms_norm", x, weight, Tensor());
  TORCH_CHECK(weight.defined(), "rms_norm: weight is required");
  return RmsNormFunction::apply(x, weight, options.eps, options.offset,
                                static_cast<int64_t>(options.casting));
}

std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& residual,
                                       const Tensor& weight, const RmsNormOptions& options) {
  return reference::add_then_rms_norm(&rms_norm, x, residual, weight, options);
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  checks::norm_args("layer_norm", x, weight, bias);
  return LayerNormFunction::apply(x, optional_tensor(weight), optional_tensor(bias), eps);
}

}  // namespace liger::kernels::composite
