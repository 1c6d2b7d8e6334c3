// ATen binding of the CUDA cross entropy and the fused linear cross entropy.
#include "kernels/cuda/losses.h"

#include "kernels/checks.h"
#include "kernels/composite/composite.h"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/tuned_gemm_op.h"
#include "kernels/optional_tensor.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>

namespace liger::kernels::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

liger::cuda_kernels::DType dtype_of(const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return liger::cuda_kernels::DType::f32;
    case at::kHalf: return liger::cuda_kernels::DType::f16;
    case at::kBFloat16: return liger::cuda_kernels::DType::bf16;
    default: TORCH_CHECK(false, "cuda cross entropy: unsupported dtype ", t.scalar_type());
  }
}

void check(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, ": ", cudaGetErrorString(err));
}

liger::cuda_kernels::CrossEntropyArgs ce_args(const Tensor& logits, const Tensor& labels,
                                              int64_t vocab, const CrossEntropyOptions& o) {
  liger::cuda_kernels::CrossEntropyArgs a;
  a.logits = logits.data_ptr();
  a.labels = labels.data_ptr<int64_t>();
  a.rows = logits.size(0);
  a.cols = logits.size(1);
  a.row_stride = logits.stride(0);
  a.vocab = vocab;
  a.dtype = dtype_of(logits);
  a.ignore_index = o.ignore_index;
  a.label_smoothing = static_cast<float>(o.label_smoothing);
  a.z_loss_scale = static_cast<float>(o.z_loss_scale);
  a.softcap = static_cast<float>(o.softcap);
  return a;
}

// The mean's scale as a device scalar, without a host synchronisation:
// 1 / normalizer when given, else 1 / max(count of kept labels, 1).
Tensor inverse_count(const Tensor& labels, const CrossEntropyOptions& o) {
  if (o.inverse_normalizer.defined()) return o.inverse_normalizer.to(at::kFloat).contiguous();
  if (o.normalizer > 0.0)
    return at::full({}, 1.0 / o.normalizer, labels.options().dtype(at::kFloat));
  return labels.ne(o.ignore_index).sum().to(at::kFloat).clamp_min(1.0).reciprocal();
}

// The reduction of per-row losses (0 where ignored).
Tensor reduce(const Tensor& per_row, Reduction reduction, const Tensor& mean_scale) {
  switch (reduction) {
    case Reduction::none: return per_row;
    case Reduction::sum: return per_row.sum();
    case Reduction::mean: return per_row.sum() * mean_scale;
  }
  return per_row.sum();
}

// grad *= grad_output: per row for reduction none, else a scalar applied on
// the device (skipped when it is 1).
void apply_grad_output(Tensor& grad, const Tensor& dy, bool per_row) {
  if (!grad.defined()) return;
  if (per_row) {
    grad.mul_(dy.unsqueeze(1).to(grad.scalar_type()));
    return;
  }
  const Tensor scale = dy.to(at::kFloat).contiguous();
  check(liger::cuda_kernels::scale_unless_one(grad.data_ptr(), grad.numel(), dtype_of(grad),
                                              scale.data_ptr<float>(),
                                              at::cuda::getCurrentCUDAStream()),
        "cross entropy backward");
}

bool wants_grad(const Tensor& t) {
  return t.defined() && t.requires_grad() && at::GradMode::is_enabled();
}

// ---------------------------------------------------------------------------
// cross_entropy
// ---------------------------------------------------------------------------

struct CrossEntropyFunction : public torch::autograd::Function<CrossEntropyFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& logits_in, const Tensor& labels_in,
                        int64_t ignore_index, double label_smoothing, double z_loss_scale,
                        double softcap, int64_t reduction, double normalizer,
                        const c10::optional<Tensor>& inverse_normalizer) {
    CrossEntropyOptions o;
    o.normalizer = normalizer;
    o.inverse_normalizer = inverse_normalizer.value_or(Tensor());
    o.ignore_index = ignore_index;
    o.label_smoothing = label_smoothing;
    o.z_loss_scale = z_loss_scale;
    o.softcap = softcap;
    o.reduction = static_cast<Reduction>(reduction);
    const Tensor logits = logits_in.contiguous();
    const Tensor labels = labels_in.contiguous();
    const Tensor mean_scale = o.reduction == Reduction::mean ? inverse_count(labels, o) : Tensor();
    Tensor grad = at::empty_like(logits);
    Tensor per_row = at::empty({logits.size(0)}, logits.options().dtype(at::kFloat));
    liger::cuda_kernels::CrossEntropyArgs a = ce_args(logits, labels, logits.size(1), o);
    a.grad = grad.data_ptr();
    a.grad_scale = mean_scale.defined() ? mean_scale.data_ptr<float>() : nullptr;
    check(liger::cuda_kernels::cross_entropy_rows(a, per_row.data_ptr<float>(), nullptr,
                                                  at::cuda::getCurrentCUDAStream()),
          "cross_entropy");
    ctx->saved_data["grad"] = grad;
    ctx->saved_data["per_row"] = o.reduction == Reduction::none;
    return reduce(per_row, o.reduction, mean_scale);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto it = ctx->saved_data.find("grad");
    TORCH_CHECK(it != ctx->saved_data.end(),
                "cuda cross_entropy: backward ran twice through the same graph");
    Tensor grad = it->second.toTensor();
    ctx->saved_data.erase(it);  // the buffer goes with this backward
    apply_grad_output(grad, grad_outputs[0], ctx->saved_data["per_row"].toBool());
    return {grad, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

Tensor cross_entropy_loss_only(const Tensor& logits_in, const Tensor& labels_in,
                               const CrossEntropyOptions& o) {
  const Tensor logits = logits_in.contiguous();
  const Tensor labels = labels_in.contiguous();
  Tensor per_row = at::empty({logits.size(0)}, logits.options().dtype(at::kFloat));
  check(liger::cuda_kernels::cross_entropy_rows(ce_args(logits, labels, logits.size(1), o),
                                                per_row.data_ptr<float>(), nullptr,
                                                at::cuda::getCurrentCUDAStream()),
        "cross_entropy");
  const Tensor mean_scale = o.reduction == Reduction::mean ? inverse_count(labels, o) : Tensor();
  return reduce(per_row, o.reduction, mean_scale);
}

// ---------------------------------------------------------------------------
// fused_linear_cross_entropy
// ---------------------------------------------------------------------------

struct FlceResult {
  Tensor per_row, grad_hidden, grad_weight, grad_bias;
};

// The head's GEMMs: tuned (options.tuned_gemm) or ATen's mm.
TunedGemmFn head_gemm(const FusedLinearCrossEntropyOptions& options) {
  return options.tuned_gemm ? &tuned_gemm : &reference::matmul;
}

// logits of rows/columns in the input dtype (cuBLAS, fp32 accumulation inside the GEMM)
Tensor linear(TunedGemmFn gemm, const Tensor& x, const Tensor& w, const Tensor& bias) {
  return bias.defined() ? at::addmm(bias, x, w.t()) : gemm(x, w.t(), Tensor(), Tensor());
}

// Rows per chunk for n rows under a budget of `budget` rows: as few chunks as
// the budget allows, of equal size, rounded up to a multiple of 128 (a whole
// GEMM tile) where that stays within the budget. 8192 rows under 4185 -> 4096.
int64_t even_chunk_rows(int64_t n, int64_t budget) {
  if (n <= budget) return std::max<int64_t>(n, 1);
  const int64_t chunks = (n + budget - 1) / budget;
  const int64_t even = (n + chunks - 1) / chunks;
  const int64_t tiled = (even + 127) / 128 * 128;
  return tiled <= budget ? tiled : even;
}

// speed: chunks of tokens; grad_weight accumulated in fp32 across chunks.
FlceResult flce_speed(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                      const Tensor& labels, const FusedLinearCrossEntropyOptions& options,
                      const Tensor& mean_scale, bool grad_x, bool grad_w, bool grad_b) {
  const int64_t n = hidden.size(0), vocab = weight.size(0);
  const bool any_grad = grad_x || grad_w || grad_b;
  // rows per chunk: the budget over one row of logits in the compute dtype
  const double row_bytes = static_cast<double>(vocab) * hidden.element_size();
  const int64_t rows = even_chunk_rows(
      n,
      std::max<int64_t>(static_cast<int64_t>(options.chunk_mb * 1024.0 * 1024.0 / row_bytes), 1));
  FlceResult r;
  r.per_row = at::empty({n}, hidden.options().dtype(at::kFloat));
  if (grad_x) r.grad_hidden = at::empty_like(hidden);
  // One chunk, weight and rows of one dtype: its GEMM writes the weight
  // gradient in that dtype (fp32 accumulation inside, one rounding: what the
  // fp32 sum and its cast give), no fp32 buffer. Otherwise the fp32 sum is
  // written whole by the first chunk's GEMM (beta = 0) and accumulated by the
  // others; zero when there are no rows (no chunk runs).
  const bool direct_w =
      grad_w && n > 0 && rows >= n && weight.scalar_type() == hidden.scalar_type();
  const auto w32 = weight.options().dtype(at::kFloat);
  Tensor grad_w32 = !grad_w || direct_w ? Tensor()
                    : n > 0             ? at::empty(weight.sizes(), w32)
                                        : at::zeros(weight.sizes(), w32);
  Tensor grad_b32 = grad_b ? at::zeros(bias.sizes(), bias.options().dtype(at::kFloat)) : Tensor();
  const auto stream = at::cuda::getCurrentCUDAStream();
  const TunedGemmFn gemm = head_gemm(options);
  for (int64_t begin = 0; begin < n; begin += rows) {
    const int64_t len = std::min(rows, n - begin);
    const Tensor x = hidden.narrow(0, begin, len);
    const Tensor y = labels.narrow(0, begin, len);
    Tensor logits = linear(gemm, x, weight, bias);  // [len, V]
    liger::cuda_kernels::CrossEntropyArgs a = ce_args(logits, y, vocab, options.ce);
    if (any_grad) a.grad = logits.data_ptr();  // the chunk's logits become its gradient, in place
    a.grad_scale = mean_scale.defined() ? mean_scale.data_ptr<float>() : nullptr;
    check(liger::cuda_kernels::cross_entropy_rows(a, r.per_row.data_ptr<float>() + begin, nullptr,
                                                  stream),
          "fused_linear_cross_entropy");
    if (grad_x) {
      gemm(logits, weight, Tensor(), r.grad_hidden.narrow(0, begin, len));  // dL/dx = dlogits @ W
    }
    // dL/dW += dlogits^T @ x, accumulated in fp32 (bf16 accumulation across chunks drifts)
    if (direct_w) {
      r.grad_weight = gemm(logits.t(), x, Tensor(), Tensor());
    } else if (grad_w) {
      gemm(logits.t(), x, begin == 0 ? Tensor() : grad_w32,
           grad_w32);  // the first chunk writes, the others add
    }
    if (grad_b) grad_b32.add_(logits.sum(0, false, at::kFloat));
  }
  if (grad_w && !direct_w)
    r.grad_weight = grad_w32.to(weight.scalar_type());  // cast: fp32 sum -> parameter dtype
  if (grad_b) r.grad_bias = grad_b32.to(bias.scalar_type());
  return r;
}

// lean: blocks of the vocabulary over all tokens. Pass 1: lse per row.
// Pass 2: recompute each block's logits; its weight gradient is one GEMM.
FlceResult flce_lean(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                     const Tensor& labels, const FusedLinearCrossEntropyOptions& options,
                     const Tensor& mean_scale, bool grad_x, bool grad_w, bool grad_b) {
  const int64_t n = hidden.size(0), vocab = weight.size(0);
  const bool any_grad = grad_x || grad_w || grad_b;
  const double column_bytes = static_cast<double>(std::max<int64_t>(n, 1)) * hidden.element_size();
  const int64_t width = std::clamp<int64_t>(
      static_cast<int64_t>(options.chunk_mb * 1024.0 * 1024.0 / column_bytes), 1, vocab);
  const auto f32 = hidden.options().dtype(at::kFloat);
  const auto stream = at::cuda::getCurrentCUDAStream();
  Tensor stats = at::empty({4, n}, f32);
  liger::cuda_kernels::RowStats s{stats[0].data_ptr<float>(), stats[1].data_ptr<float>(),
                                  stats[2].data_ptr<float>(), stats[3].data_ptr<float>()};
  const TunedGemmFn gemm = head_gemm(options);
  auto block_logits = [&](int64_t v0, int64_t len) {
    return linear(gemm, hidden, weight.narrow(0, v0, len),
                  bias.defined() ? bias.narrow(0, v0, len) : Tensor());
  };
  for (int64_t v0 = 0; v0 < vocab; v0 += width) {
    const int64_t len = std::min(width, vocab - v0);
    const Tensor logits = block_logits(v0, len);  // [N, len]
    liger::cuda_kernels::CrossEntropyArgs a = ce_args(logits, labels, vocab, options.ce);
    a.col_offset = v0;
    check(liger::cuda_kernels::cross_entropy_block_stats(a, s, v0 == 0, stream),
          "fused_linear_cross_entropy");
  }
  FlceResult r;
  r.per_row = at::empty({n}, f32);
  Tensor lse = at::empty({n}, f32);
  const CrossEntropyOptions& o = options.ce;
  check(liger::cuda_kernels::cross_entropy_finish_stats(
            labels.data_ptr<int64_t>(), n, vocab, o.ignore_index,
            static_cast<float>(o.label_smoothing), static_cast<float>(o.z_loss_scale), s,
            r.per_row.data_ptr<float>(), lse.data_ptr<float>(), stream),
        "fused_linear_cross_entropy");
  if (!any_grad) return r;

  // Written whole by the first block's GEMM (beta = 0), accumulated by the others.
  Tensor grad_x32 = grad_x ? at::empty(hidden.sizes(), f32) : Tensor();
  if (grad_w) r.grad_weight = at::empty_like(weight);
  if (grad_b) r.grad_bias = at::empty_like(bias);
  for (int64_t v0 = 0; v0 < vocab; v0 += width) {
    const int64_t len = std::min(width, vocab - v0);
    Tensor logits = block_logits(v0, len);
    liger::cuda_kernels::CrossEntropyArgs a = ce_args(logits, labels, vocab, options.ce);
    a.col_offset = v0;
    a.grad = logits.data_ptr();  // in place: the block's logits become its gradient
    a.grad_scale = mean_scale.defined() ? mean_scale.data_ptr<float>() : nullptr;
    check(liger::cuda_kernels::cross_entropy_block_grad(a, lse.data_ptr<float>(), stream),
          "fused_linear_cross_entropy");
    if (grad_w) {
      // one GEMM per block: fp32 accumulation inside, no cross-chunk rounding
      gemm(logits.t(), hidden, Tensor(), r.grad_weight.narrow(0, v0, len));
    }
    if (grad_x) {
      const Tensor block_weight = weight.narrow(0, v0, len);
      gemm(logits, block_weight, v0 == 0 ? Tensor() : grad_x32,
           grad_x32);  // the first block writes, the others add
    }
    if (grad_b) r.grad_bias.narrow(0, v0, len).copy_(logits.sum(0, false, at::kFloat));
  }
  if (grad_x) r.grad_hidden = grad_x32.to(hidden.scalar_type());  // cast: fp32 sum -> input dtype
  return r;
}

struct FlceFunction : public torch::autograd::Function<FlceFunction> {
  // bias is optional: an undefined Tensor cannot be an argument of apply, so
  // `has_bias` says whether `bias` is real.
  static Tensor forward(AutogradContext* ctx, const Tensor& hidden_in, const Tensor& weight_in,
                        const Tensor& bias_in, bool has_bias, const Tensor& labels_in,
                        int64_t ignore_index, double label_smoothing, double z_loss_scale,
                        double softcap, int64_t reduction, double normalizer,
                        const c10::optional<Tensor>& inverse_normalizer, double chunk_mb,
                        int64_t mode, bool tuned_gemm) {
    FusedLinearCrossEntropyOptions options;
    options.ce.ignore_index = ignore_index;
    options.ce.label_smoothing = label_smoothing;
    options.ce.z_loss_scale = z_loss_scale;
    options.ce.softcap = softcap;
    options.ce.reduction = static_cast<Reduction>(reduction);
    options.ce.normalizer = normalizer;
    options.ce.inverse_normalizer = inverse_normalizer.value_or(Tensor());
    options.chunk_mb = chunk_mb;
    options.mode = static_cast<FlceMode>(mode);
    options.tuned_gemm = tuned_gemm;
    const Tensor hidden = hidden_in.contiguous();
    const Tensor weight = weight_in.contiguous();
    const Tensor bias = has_bias ? bias_in.contiguous() : Tensor();
    const Tensor labels = labels_in.contiguous();
    // Inside forward, grad mode is off: ask the inputs themselves.
    const bool grad_x = hidden_in.requires_grad(), grad_w = weight_in.requires_grad();
    const bool grad_b = has_bias && bias_in.requires_grad();
    const Tensor mean_scale =
        options.ce.reduction == Reduction::mean ? inverse_count(labels, options.ce) : Tensor();
    FlceResult r =
        options.mode == FlceMode::lean
            ? flce_lean(hidden, weight, bias, labels, options, mean_scale, grad_x, grad_w, grad_b)
            : flce_speed(hidden, weight, bias, labels, options, mean_scale, grad_x, grad_w, grad_b);
    ctx->saved_data["grad_hidden"] = r.grad_hidden;
    ctx->saved_data["grad_weight"] = r.grad_weight;
    ctx->saved_data["grad_bias"] = r.grad_bias;
    return reduce(r.per_row, options.ce.reduction, mean_scale);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    TORCH_CHECK(ctx->saved_data.count("grad_hidden"),
                "cuda fused_linear_cross_entropy: backward ran twice through the same graph");
    Tensor grads[3];
    const char* names[3] = {"grad_hidden", "grad_weight", "grad_bias"};
    for (int i = 0; i < 3; ++i) {
      const c10::IValue value = ctx->saved_data[names[i]];
      grads[i] = value.isTensor() ? value.toTensor() : Tensor();
      ctx->saved_data.erase(names[i]);
      apply_grad_output(grads[i], grad_outputs[0], /*per_row=*/false);
    }
    return {grads[0], grads[1], grads[2], Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options) {
  checks::ce_args("cross_entropy", logits, labels);
  if (!wants_grad(logits)) return cross_entropy_loss_only(logits, labels, options);
  return CrossEntropyFunction::apply(logits, labels, options.ignore_index, options.label_smoothing,
                                     options.z_loss_scale, options.softcap,
                                     static_cast<int64_t>(options.reduction), options.normalizer,
                                     optional_tensor(options.inverse_normalizer));
}

Tensor fused_linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                                  const Tensor& labels,
                                  const FusedLinearCrossEntropyOptions& options) {
  // Per-token gradients need grad_output per row before the weight gradient
  // is summed: the composite backend recomputes for that.
  if (options.ce.reduction == Reduction::none) {
    return composite::fused_linear_cross_entropy(hidden, weight, bias, labels, options);
  }
  const bool has_bias = bias.defined();
  if (!wants_grad(hidden) && !wants_grad(weight) && !(has_bias && wants_grad(bias))) {
    at::NoGradGuard no_grad;
    FusedLinearCrossEntropyOptions o = options;
    const Tensor h = hidden.contiguous(), w = weight.contiguous(), y = labels.contiguous();
    const Tensor b = has_bias ? bias.contiguous() : Tensor();
    const Tensor mean_scale = o.ce.reduction == Reduction::mean ? inverse_count(y, o.ce) : Tensor();
    FlceResult r = flce_speed(h, w, b, y, o, mean_scale, false, false, false);
    return reduce(r.per_row, o.ce.reduction, mean_scale);
  }
  return FlceFunction::apply(hidden, weight, has_bias ? bias : at::zeros({0}, weight.options()),
                             has_bias, labels, options.ce.ignore_index, options.ce.label_smoothing,
                             options.ce.z_loss_scale, options.ce.softcap,
                             static_cast<int64_t>(options.ce.reduction), options.ce.normalizer,
                             optional_tensor(options.ce.inverse_normalizer), options.chunk_mb,
                             static_cast<int64_t>(options.mode), options.tuned_gemm);
}

}  // namespace liger::kernels::cuda
