// The cuda backend's RMSNorm, fused add + RMSNorm and LayerNorm: autograd
// functions that allocate the outputs and call the launchers of
// rms_norm.cu / layer_norm.cu on the current stream.
#include "kernels/checks.h"
#include "kernels/composite/composite.h"
#include "kernels/cuda/binding.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/optional_tensor.h"

#include <torch/csrc/autograd/custom_function.h>

namespace liger::kernels::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

int64_t rows_of(const Tensor& x) {
  return x.size(-1) == 0 ? 0 : x.numel() / x.size(-1);
}

// The weight as the kernels take it: x's dtype or fp32 (anything else is cast
// to x's dtype here, outside the autograd function, so the gradient flows
// back through the cast).
Tensor weight_for(const Tensor& x, const Tensor& w) {
  if (!w.defined() || w.scalar_type() == x.scalar_type() || w.scalar_type() == at::kFloat) {
    return w;
  }
  return w.to(x.scalar_type());
}

// Whether the norm kernels take x's rows (else: composite, with a warning).
bool kernels_take(const char* op, const Tensor& x) {
  const bool ok = launch::norm_cols_supported(x.size(-1), dtype_of(op, x), /*aligned=*/true);
  if (!ok) {
    TORCH_WARN_ONCE(op, " (cuda): rows of ", x.size(-1), " ", x.scalar_type(),
                    " elements are wider than the kernel holds in registers; using the "
                    "composite backend for them");
  }
  return ok;
}

void check_norm_inputs(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  checks::norm_args(op, x, weight, bias);
  TORCH_CHECK(x.is_cuda(), op, " (cuda): x must be on a CUDA device, got ", x.device());
  dtype_of(op, x);
  if (weight.defined()) check_device(op, "weight", weight, x);
  if (bias.defined()) check_device(op, "bias", bias, x);
}

launch::RmsCasting casting_of(RmsNormCasting c) {
  switch (c) {
    case RmsNormCasting::llama: return launch::RmsCasting::llama;
    case RmsNormCasting::gemma: return launch::RmsCasting::gemma;
    case RmsNormCasting::none: return launch::RmsCasting::none;
  }
  return launch::RmsCasting::llama;
}

// ---------------------------------------------------------------------------
// RMSNorm and fused add + RMSNorm: shared forward and backward
// ---------------------------------------------------------------------------

struct RmsForward {
  Tensor y, sum, rstd;  // sum: only for the fused add
};

// x, residual (or undefined) and weight are dense (see binding.h).
RmsForward rms_forward(const Tensor& x, const Tensor& residual, const Tensor& weight, double eps,
                       double offset, int64_t casting) {
  const char* op = residual.defined() ? "fused_add_rms_norm" : "rms_norm";
  const c10::cuda::CUDAGuard guard(x.device());
  RmsForward out;
  out.y = at::empty(x.sizes(), x.options());
  out.rstd = at::empty({rows_of(x)}, x.options().dtype(at::kFloat));
  if (residual.defined()) out.sum = at::empty(x.sizes(), x.options());

  launch::RmsNormForward a;
  a.x = ptr(x);
  a.residual = ptr(residual);
  a.weight = ptr(weight);
  a.y = mutable_ptr(out.y);
  a.sum = mutable_ptr(out.sum);
  a.rstd = out.rstd.data_ptr<float>();
  a.rows = rows_of(x);
  a.cols = x.size(-1);
  a.x_dtype = dtype_of(op, x);
  a.w_dtype = dtype_of(op, weight);
  a.eps = static_cast<float>(eps);
  a.offset = static_cast<float>(offset);
  a.casting = casting_of(static_cast<RmsNormCasting>(casting));
  check_launch(op, launch::rms_norm_forward(a, current_stream()));
  return out;
}

// dx (or undefined when !want_dx) and dw (or undefined when !want_dw). dsum:
// the fused add's gradient of s, added to dx (or undefined).
std::pair<Tensor, Tensor> rms_backward(const char* op, const Tensor& dy_in, const Tensor& dsum_in,
                                       const Tensor& x, const Tensor& weight, const Tensor& rstd,
                                       double offset, bool want_dx, bool want_dw) {
  const c10::cuda::CUDAGuard guard(x.device());
  const Tensor dy = dense(dy_in), dsum = dense(dsum_in);
  const int64_t rows = rows_of(x), cols = x.size(-1);
  Tensor dx = want_dx ? at::empty(x.sizes(), x.options()) : Tensor();
  Tensor dw = want_dw ? at::empty({cols}, weight.options()) : Tensor();
  Tensor workspace;
  if (want_dw) {
    const auto floats = static_cast<int64_t>(launch::norm_backward_workspace_floats(rows, cols, 1));
    workspace = at::empty({floats}, x.options().dtype(at::kFloat));
  }

  launch::RmsNormBackward a;
  a.dy = ptr(dy);
  a.dsum = ptr(dsum);
  a.x = ptr(x);
  a.weight = ptr(weight);
  a.rstd = rstd.data_ptr<float>();
  a.dx = mutable_ptr(dx);
  a.dweight = mutable_ptr(dw);
  a.workspace = workspace.defined() ? workspace.data_ptr<float>() : nullptr;
  a.rows = rows;
  a.cols = cols;
  a.x_dtype = dtype_of(op, x);
  a.w_dtype = dtype_of(op, weight);
  a.offset = static_cast<float>(offset);
  check_launch(op, launch::rms_norm_backward(a, current_stream()));
  return {dx, dw};
}

struct RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x_in, const Tensor& weight_in,
                        double eps, double offset, int64_t casting) {
    const Tensor x = dense(x_in), weight = dense(weight_in);
    RmsForward out = rms_forward(x, Tensor(), weight, eps, offset, casting);
    ctx->save_for_backward({x, weight, out.rstd});
    ctx->saved_data["offset"] = offset;
    return out.y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    auto [dx, dw] = rms_backward("rms_norm", grad_outputs[0], Tensor(), saved[0], saved[1],
                                 saved[2], ctx->saved_data["offset"].toDouble(),
                                 ctx->needs_input_grad(0), ctx->needs_input_grad(1));
    return {dx, dw, Tensor(), Tensor(), Tensor()};
  }
};

struct FusedAddRmsNormFunction : public torch::autograd::Function<FusedAddRmsNormFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x_in, const Tensor& residual_in,
                               const Tensor& weight_in, double eps, double offset,
                               int64_t casting) {
    const Tensor x = dense(x_in), residual = dense(residual_in), weight = dense(weight_in);
    RmsForward out = rms_forward(x, residual, weight, eps, offset, casting);
    ctx->save_for_backward({out.sum, weight, out.rstd});
    ctx->saved_data["offset"] = offset;
    ctx->set_materialize_grads(false);  // an unused output gets no gradient, not zeros
    return {out.y, out.sum};
  }

  // ds = rms_norm backward(dy) + d(new residual); x and residual both get ds.
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& dy = grad_outputs[0];
    const Tensor& dsum = grad_outputs[1];
    const bool want_ds = ctx->needs_input_grad(0) || ctx->needs_input_grad(1);
    Tensor ds, dw;
    if (dy.defined()) {
      std::tie(ds, dw) =
          rms_backward("fused_add_rms_norm", dy, dsum, saved[0], saved[1], saved[2],
                       ctx->saved_data["offset"].toDouble(), want_ds, ctx->needs_input_grad(2));
    } else {
      ds = dsum;  // only the new residual was used
    }
    return {ctx->needs_input_grad(0) ? ds : Tensor(),
            ctx->needs_input_grad(1) ? ds : Tensor(),
            dw,
            Tensor(),
            Tensor(),
            Tensor()};
  }
};

// RMSNorm that also passes x through as a second output: {y, x}. x then has
// two consumers (the norm and the residual stream) whose gradients would
// otherwise meet in a separate add; here the stream's gradient is the dsum
// of the norm's backward kernel: dx = rms_norm backward(dy) + d(x out).
struct RmsNormPassFunction : public torch::autograd::Function<RmsNormPassFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x_in, const Tensor& weight_in,
                               double eps, double offset, int64_t casting) {
    const Tensor x = dense(x_in), weight = dense(weight_in);
    RmsForward out = rms_forward(x, Tensor(), weight, eps, offset, casting);
    ctx->save_for_backward({x, weight, out.rstd});
    ctx->saved_data["offset"] = offset;
    ctx->set_materialize_grads(false);  // an unused output gets no gradient, not zeros
    return {out.y,
            x};  // x: returned as an input, autograd makes it a view with this node's history
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& dy = grad_outputs[0];
    const Tensor& dpass = grad_outputs[1];
    Tensor dx, dw;
    if (dy.defined()) {
      std::tie(dx, dw) = rms_backward("rms_norm", dy, dpass, saved[0], saved[1], saved[2],
                                      ctx->saved_data["offset"].toDouble(),
                                      ctx->needs_input_grad(0), ctx->needs_input_grad(1));
    } else {
      dx = dpass;  // only the passed-through x was used
    }
    return {ctx->needs_input_grad(0) ? dx : Tensor(), dw, Tensor(), Tensor(), Tensor()};
  }
};

// ---------------------------------------------------------------------------
// LayerNorm
// ---------------------------------------------------------------------------

struct LayerNormFunction : public torch::autograd::Function<LayerNormFunction> {
  // weight/bias are optional: an undefined Tensor cannot be an argument of apply.
  static Tensor forward(AutogradContext* ctx, const Tensor& x_in,
                        const c10::optional<Tensor>& weight_opt,
                        const c10::optional<Tensor>& bias_opt, double eps) {
    const char* op = "layer_norm";
    const Tensor x = dense(x_in);
    const Tensor weight = dense(weight_opt.value_or(Tensor()));
    const Tensor bias = dense(bias_opt.value_or(Tensor()));
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t rows = rows_of(x);
    Tensor y = at::empty(x.sizes(), x.options());
    Tensor mean = at::empty({rows}, x.options().dtype(at::kFloat));
    Tensor rstd = at::empty({rows}, x.options().dtype(at::kFloat));
    const Tensor& w_or_b = weight.defined() ? weight : bias;

    launch::LayerNormForward a;
    a.x = ptr(x);
    a.weight = ptr(weight);
    a.bias = ptr(bias);
    a.y = mutable_ptr(y);
    a.mean = mean.data_ptr<float>();
    a.rstd = rstd.data_ptr<float>();
    a.rows = rows;
    a.cols = x.size(-1);
    a.x_dtype = dtype_of(op, x);
    a.w_dtype = w_or_b.defined() ? dtype_of(op, w_or_b) : a.x_dtype;
    a.eps = static_cast<float>(eps);
    check_launch(op, launch::layer_norm_forward(a, current_stream()));

    ctx->save_for_backward({x, weight, mean, rstd});
    // Which of weight/bias want a gradient (their edge indices shift when absent).
    ctx->saved_data["weight_grad"] = weight.defined() && weight_opt->requires_grad();
    ctx->saved_data["bias_grad"] = bias.defined() && bias_opt->requires_grad();
    ctx->saved_data["w_dtype"] =
        static_cast<int64_t>(w_or_b.defined() ? w_or_b.scalar_type() : x.scalar_type());
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const char* op = "layer_norm";
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& weight = saved[1];
    const c10::cuda::CUDAGuard guard(x.device());
    const Tensor dy = dense(grad_outputs[0]);
    const int64_t rows = rows_of(x), cols = x.size(-1);
    const bool want_dw = ctx->saved_data["weight_grad"].toBool();
    const bool want_db = ctx->saved_data["bias_grad"].toBool();
    const auto w_dtype = static_cast<at::ScalarType>(ctx->saved_data["w_dtype"].toInt());
    const auto w_options = x.options().dtype(w_dtype);
    Tensor dx = ctx->needs_input_grad(0) ? at::empty(x.sizes(), x.options()) : Tensor();
    Tensor dw = want_dw ? at::empty({cols}, w_options) : Tensor();
    Tensor db = want_db ? at::empty({cols}, w_options) : Tensor();
    Tensor workspace;
    if (want_dw || want_db) {
      const auto floats =
          static_cast<int64_t>(launch::norm_backward_workspace_floats(rows, cols, 2));
      workspace = at::empty({floats}, x.options().dtype(at::kFloat));
    }

    launch::LayerNormBackward a;
    a.dy = ptr(dy);
    a.x = ptr(x);
    a.weight = ptr(weight);
    a.mean = saved[2].data_ptr<float>();
    a.rstd = saved[3].data_ptr<float>();
    a.dx = mutable_ptr(dx);
    a.dweight = mutable_ptr(dw);
    a.dbias = mutable_ptr(db);
    a.workspace = workspace.defined() ? workspace.data_ptr<float>() : nullptr;
    a.rows = rows;
    a.cols = cols;
    a.x_dtype = dtype_of(op, x);
    a.w_dtype = dtype_of(op, w_dtype);
    check_launch(op, launch::layer_norm_backward(a, current_stream()));
    return {dx, dw, db, Tensor()};
  }
};

}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& weight, const RmsNormOptions& options) {
  TORCH_CHECK(weight.defined(), "rms_norm: weight is required");
  check_norm_inputs("rms_norm", x, weight, Tensor());
  if (!kernels_take("rms_norm", x)) return composite::rms_norm(x, weight, options);
  return RmsNormFunction::apply(x, weight_for(x, weight), options.eps, options.offset,
                                static_cast<int64_t>(options.casting));
}

std::pair<Tensor, Tensor> fused_add_rms_norm(const Tensor& x, const Tensor& residual,
                                             const Tensor& weight, const RmsNormOptions& options) {
  const char* op = "fused_add_rms_norm";
  TORCH_CHECK(weight.defined(), op, ": weight is required");
  check_norm_inputs(op, x, weight, Tensor());
  if (!residual
           .defined()) {  // {rms_norm(x), x}, the stream's gradient summed in the norm's backward
    if (!kernels_take(op, x)) return {composite::rms_norm(x, weight, options), x};
    const auto out =
        RmsNormPassFunction::apply(x, weight_for(x, weight), options.eps, options.offset,
                                   static_cast<int64_t>(options.casting));
    return {out[0], out[1]};
  }
  TORCH_CHECK(residual.sizes() == x.sizes(), op, ": residual has shape ", residual.sizes(),
              " but x has shape ", x.sizes());
  TORCH_CHECK(residual.scalar_type() == x.scalar_type(), op, ": residual is ",
              residual.scalar_type(), " but x is ", x.scalar_type());
  check_device(op, "residual", residual, x);
  if (!kernels_take(op, x)) {
    const Tensor sum = x + residual;
    return {composite::rms_norm(sum, weight, options), sum};
  }
  const auto out =
      FusedAddRmsNormFunction::apply(x, residual, weight_for(x, weight), options.eps,
                                     options.offset, static_cast<int64_t>(options.casting));
  return {out[0], out[1]};
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_norm_inputs("layer_norm", x, weight, bias);
  if (!kernels_take("layer_norm", x)) return composite::layer_norm(x, weight, bias, eps);
  // One dtype for weight and bias (the kernel's W): the weight's, else the bias's.
  const Tensor w = weight_for(x, weight);
  Tensor b = weight_for(x, bias);
  if (w.defined() && b.defined() && b.scalar_type() != w.scalar_type()) {
    b = b.to(w.scalar_type());
  }
  return LayerNormFunction::apply(x, optional_tensor(w), optional_tensor(b), eps);
}

}  // namespace liger::kernels::cuda
