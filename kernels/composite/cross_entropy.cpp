// Composite cross entropy and fused linear cross entropy. Both compute the
// gradient w.r.t. the logits while the logits are at hand (forward), in fp32,
// block by block of rows; backward only scales what was stored.
#include "kernels/checks.h"
#include "kernels/composite/composite.h"
#include "kernels/optional_tensor.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>

namespace liger::kernels::composite {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Budget of one fp32 [rows, V] block in the plain cross entropy (its input
// logits already exist, so this only bounds the fp32 temporaries).
constexpr double kCrossEntropyBlockMb = 256.0;

// Loss and gradient of one block of rows, in fp32.
struct CeBlock {
  Tensor loss;  // [n] fp32, 0 where ignored
  Tensor grad;  // [n, V] fp32, d loss_n / d logits_n (unscaled), 0 where ignored; or undefined
};

// With x = logits (fp32), z = c * tanh(x / c) when softcap c > 0 else x,
// p = softmax(z), lse = logsumexp(z), e = label_smoothing, s = z_loss_scale:
//   loss_n   = (1 - e) (lse - z_y) + e (lse - mean_i z_i) + s lse^2
//   dloss/dz = p (1 + 2 s lse) - (1 - e) onehot(y) - e / V
//   dz/dx    = 1 - (z / c)^2   (softcap only)
// Rows whose label is ignore_index get loss 0 and gradient 0.
CeBlock ce_block(const Tensor& logits, const Tensor& labels, const CrossEntropyOptions& o,
                 bool want_grad) {
  const int64_t vocab = logits.size(1);
  const double eps = o.label_smoothing;
  const double cap = o.softcap;
  // cast: all math in fp32 (an alias when logits are fp32: no in-place on x or z)
  const Tensor x = logits.to(at::kFloat);
  const Tensor z = cap > 0.0 ? at::tanh(x / cap) * cap : x;

  const Tensor kept = labels.ne(o.ignore_index);  // [n] bool
  const Tensor keptf = kept.to(at::kFloat);
  // [n, 1]; ignored rows point at class 0 and are zeroed below
  const Tensor target = labels.masked_fill(kept.logical_not(), 0).unsqueeze(1);
  const Tensor lse = at::logsumexp(z, -1, /*keepdim=*/true);  // [n, 1]

  Tensor loss = (1.0 - eps) * (lse - z.gather(1, target));
  if (eps != 0.0) loss = loss + eps * (lse - z.mean(-1, /*keepdim=*/true));
  if (o.z_loss_scale != 0.0) loss = loss + o.z_loss_scale * lse.square();
  CeBlock out;
  out.loss = loss.squeeze(1) * keptf;
  if (!want_grad) return out;

  Tensor grad = (z - lse).exp_();  // p, a fresh buffer
  if (o.z_loss_scale != 0.0) grad.mul_(1.0 + 2.0 * o.z_loss_scale * lse);
  if (eps != 0.0) grad.sub_(eps / static_cast<double>(vocab));
  grad.scatter_(1, target, grad.gather(1, target) - (1.0 - eps));
  if (cap > 0.0) grad.mul_(1.0 - (z / cap).square());
  grad.mul_(keptf.unsqueeze(1));
  out.grad = std::move(grad);
  return out;
}

// The scale of 'mean': 1 / normalizer when one is given, else
// 1 / max(count of non-ignored labels, 1); a 0-dim fp32 tensor (no host sync).
Tensor mean_scale(const Tensor& labels, const CrossEntropyOptions& o) {
  if (o.inverse_normalizer.defined()) return o.inverse_normalizer.to(labels.device(), at::kFloat);
  if (o.normalizer > 0.0)
    return at::full({}, 1.0 / o.normalizer, labels.options().dtype(at::kFloat));
  return labels.ne(o.ignore_index).sum().clamp_min(1).to(at::kFloat).reciprocal();
}

// Multiplies a block's gradient by a 0-dim scale or by rows [begin, begin+n) of a [N] scale.
void scale_block(Tensor& grad, const Tensor& scale, int64_t begin) {
  if (!scale.defined()) return;
  if (scale.dim() == 0) {
    grad.mul_(scale);
  } else {
    grad.mul_(scale.narrow(0, begin, grad.size(0)).unsqueeze(1));
  }
}

// Where backward ran twice through the same graph.
[[noreturn]] void backward_twice(const char* op) {
  TORCH_CHECK(false, op,
              ": backward ran twice through the same graph; the composite backend frees its "
              "stored gradient after the first backward (retain_graph is not supported)");
}

int64_t ce_block_rows(int64_t vocab, int64_t n) {
  return chunk_rows(kCrossEntropyBlockMb, vocab, n);
}

// Loss only, block by block (no gradient buffers).
Tensor ce_loss_only(const Tensor& logits, const Tensor& labels, const CrossEntropyOptions& o) {
  const int64_t n = logits.size(0);
  const int64_t rows = ce_block_rows(logits.size(1), n);
  Tensor per_token = at::empty({n}, logits.options().dtype(at::kFloat));
  for (int64_t begin = 0; begin < n; begin += rows) {
    const int64_t len = std::min(rows, n - begin);
    per_token.narrow(0, begin, len)
        .copy_(ce_block(logits.narrow(0, begin, len), labels.narrow(0, begin, len), o, false).loss);
  }
  return reference::reduce_token_losses(per_token, labels, o);
}

CrossEntropyOptions unpack_ce(int64_t ignore_index, double label_smoothing, double z_loss_scale,
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
  return o;
}

// Forward computes loss and d loss / d logits (fp32 math, stored in the
// logits' dtype; pre-scaled by 1/count for 'mean'). Backward multiplies the
// stored gradient by grad_output (per token for 'none') in place.
struct CrossEntropyFunction : public torch::autograd::Function<CrossEntropyFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& logits, const Tensor& labels,
                        int64_t ignore_index, double label_smoothing, double z_loss_scale,
                        double softcap, int64_t reduction, double normalizer,
                        const c10::optional<Tensor>& inverse_normalizer) {
    const CrossEntropyOptions o = unpack_ce(ignore_index, label_smoothing, z_loss_scale, softcap,
                                            reduction, normalizer, inverse_normalizer);
    const int64_t n = logits.size(0);
    const int64_t rows = ce_block_rows(logits.size(1), n);
    const Tensor scale = o.reduction == Reduction::mean ? mean_scale(labels, o) : Tensor();

    Tensor per_token = at::empty({n}, logits.options().dtype(at::kFloat));
    Tensor grad = at::empty_like(logits, at::MemoryFormat::Contiguous);
    for (int64_t begin = 0; begin < n; begin += rows) {
      const int64_t len = std::min(rows, n - begin);
      CeBlock block = ce_block(logits.narrow(0, begin, len), labels.narrow(0, begin, len), o, true);
      scale_block(block.grad, scale, begin);
      per_token.narrow(0, begin, len).copy_(block.loss);
      grad.narrow(0, begin, len).copy_(block.grad);  // cast: fp32 gradient to the logits' dtype
    }
    ctx->saved_data["grad"] = grad;
    ctx->saved_data["per_token"] = o.reduction == Reduction::none;
    return reference::reduce_token_losses(per_token, labels, o);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto it = ctx->saved_data.find("grad");
    if (it == ctx->saved_data.end()) backward_twice("cross_entropy");
    Tensor grad = it->second.toTensor();
    ctx->saved_data.erase(it);  // free the buffer with this backward, not with the graph
    const Tensor& dy = grad_outputs[0];
    grad.mul_(ctx->saved_data["per_token"].toBool() ? dy.unsqueeze(1) : dy);
    return {grad, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// ---------------------------------------------------------------------------
// Fused linear cross entropy
// ---------------------------------------------------------------------------

// What one pass over the chunks produces (undefined where not asked for).
struct FlcePass {
  Tensor per_token;    // [N] fp32
  Tensor grad_hidden;  // [N, H] hidden's dtype
  Tensor grad_weight;  // [V, H] fp32
  Tensor grad_bias;    // [V] fp32
};

struct FlceWants {
  bool loss = true;
  bool hidden = false;
  bool weight = false;
  bool bias = false;
  bool any_grad() const { return hidden || weight || bias; }
};

// Per chunk of rows: logits = h W^T + b (compute dtype), loss and d_logits
// (fp32, times `scale`: 0-dim, or [N] per token, or undefined = 1), then
//   grad_hidden[chunk] = d_logits @ W        (compute dtype)
//   grad_weight       += d_logits^T @ h      (fp32)
//   grad_bias         += sum_rows d_logits   (fp32)
FlcePass flce_pass(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                   const Tensor& labels, const CrossEntropyOptions& o, int64_t rows,
                   const Tensor& scale, FlceWants wants) {
  const int64_t n = hidden.size(0);
  const auto f32 = hidden.options().dtype(at::kFloat);
  FlcePass out;
  if (wants.loss) out.per_token = at::empty({n}, f32);
  if (wants.hidden) out.grad_hidden = at::empty_like(hidden, at::MemoryFormat::Contiguous);
  if (wants.weight) out.grad_weight = at::zeros(weight.sizes(), f32);
  if (wants.bias) out.grad_bias = at::zeros(bias.sizes(), f32);
  const c10::optional<Tensor> b = optional_tensor(bias);

  for (int64_t begin = 0; begin < n; begin += rows) {
    const int64_t len = std::min(rows, n - begin);
    const Tensor h = hidden.narrow(0, begin, len);
    CeBlock block =
        ce_block(at::linear(h, weight, b), labels.narrow(0, begin, len), o, wants.any_grad());
    if (wants.loss) out.per_token.narrow(0, begin, len).copy_(block.loss);
    if (!wants.any_grad()) continue;

    scale_block(block.grad, scale, begin);
    if (wants.bias) out.grad_bias.add_(block.grad.sum(0));
    const Tensor d_logits = block.grad.to(hidden.scalar_type());  // cast: fp32 to compute dtype
    block.grad = Tensor();                                        // free the fp32 block early
    if (wants.hidden) {
      Tensor slice = out.grad_hidden.narrow(0, begin, len);
      at::mm_out(slice, d_logits, weight);
    }
    if (wants.weight) addmm_fp32(out.grad_weight, d_logits.t(), h);
  }
  return out;
}

// Mean/sum: forward runs one pass with gradients (pre-scaled by 1/count for
// mean) and keeps them; backward multiplies by grad_output and casts.
// None: forward runs a loss-only pass and keeps the inputs; backward runs a
// second pass with grad_output as the per-token scale.
struct FlceFunction : public torch::autograd::Function<FlceFunction> {
  // bias is optional: an undefined Tensor cannot be an argument of apply.
  static Tensor forward(AutogradContext* ctx, const Tensor& hidden, const Tensor& weight,
                        const c10::optional<Tensor>& bias_opt, const Tensor& labels,
                        int64_t ignore_index, double label_smoothing, double z_loss_scale,
                        double softcap, int64_t reduction, double normalizer,
                        const c10::optional<Tensor>& inverse_normalizer, int64_t rows) {
    const Tensor bias = bias_opt.value_or(Tensor());
    const CrossEntropyOptions o = unpack_ce(ignore_index, label_smoothing, z_loss_scale, softcap,
                                            reduction, normalizer, inverse_normalizer);
    FlceWants wants;
    wants.hidden = hidden.requires_grad();
    wants.weight = weight.requires_grad();
    wants.bias = bias.defined() && bias.requires_grad();
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["per_token"] = o.reduction == Reduction::none;
    ctx->saved_data["bias_grad"] = wants.bias;  // its edge index shifts when bias is absent
    ctx->saved_data["hidden_dtype"] = static_cast<int64_t>(hidden.scalar_type());
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    ctx->saved_data["bias_dtype"] =
        static_cast<int64_t>(bias.defined() ? bias.scalar_type() : weight.scalar_type());

    if (o.reduction == Reduction::none) {
      ctx->save_for_backward({hidden, weight, bias, labels});
      ctx->saved_data["ignore_index"] = ignore_index;
      ctx->saved_data["label_smoothing"] = label_smoothing;
      ctx->saved_data["z_loss_scale"] = z_loss_scale;
      ctx->saved_data["softcap"] = softcap;
      FlceWants loss_only;
      return flce_pass(hidden, weight, bias, labels, o, rows, Tensor(), loss_only).per_token;
    }
    const Tensor scale = o.reduction == Reduction::mean ? mean_scale(labels, o) : Tensor();
    FlcePass pass = flce_pass(hidden, weight, bias, labels, o, rows, scale, wants);
    ctx->saved_data["grad_hidden"] = pass.grad_hidden;
    ctx->saved_data["grad_weight"] = pass.grad_weight;
    ctx->saved_data["grad_bias"] = pass.grad_bias;
    return reference::reduce_token_losses(pass.per_token, labels, o);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const Tensor& dy = grad_outputs[0];
    const auto dtype_of = [&](const char* key) {
      return static_cast<at::ScalarType>(ctx->saved_data[key].toInt());
    };
    Tensor d_hidden, d_weight, d_bias;
    if (ctx->saved_data["per_token"].toBool()) {
      // reduction 'none': recompute the chunks, dy scales each token's gradient
      // (nothing is consumed, so retain_graph works here).
      const auto saved = ctx->get_saved_variables();
      CrossEntropyOptions o;
      o.ignore_index = ctx->saved_data["ignore_index"].toInt();
      o.label_smoothing = ctx->saved_data["label_smoothing"].toDouble();
      o.z_loss_scale = ctx->saved_data["z_loss_scale"].toDouble();
      o.softcap = ctx->saved_data["softcap"].toDouble();
      FlceWants wants;
      wants.loss = false;
      wants.hidden = ctx->needs_input_grad(0);
      wants.weight = ctx->needs_input_grad(1);
      wants.bias = ctx->saved_data["bias_grad"].toBool();
      FlcePass pass = flce_pass(saved[0], saved[1], saved[2], saved[3], o,
                                ctx->saved_data["rows"].toInt(), dy.to(at::kFloat), wants);
      d_hidden = pass.grad_hidden;
      d_weight = pass.grad_weight;
      d_bias = pass.grad_bias;
    } else {
      auto take = [&](const char* key) {
        auto it = ctx->saved_data.find(key);
        if (it == ctx->saved_data.end()) backward_twice("fused_linear_cross_entropy");
        Tensor t = it->second.isTensor() ? it->second.toTensor() : Tensor();
        ctx->saved_data.erase(it);  // free the buffer with this backward, not with the graph
        return t;
      };
      d_hidden = take("grad_hidden");
      d_weight = take("grad_weight");
      d_bias = take("grad_bias");
      if (d_hidden.defined()) d_hidden.mul_(dy);
      if (d_weight.defined()) d_weight.mul_(dy);
      if (d_bias.defined()) d_bias.mul_(dy);
    }
    // cast: fp32 accumulators to the parameters' dtypes (no-op when they are fp32)
    if (d_hidden.defined()) d_hidden = d_hidden.to(dtype_of("hidden_dtype"));
    if (d_weight.defined()) d_weight = d_weight.to(dtype_of("weight_dtype"));
    if (d_bias.defined()) d_bias = d_bias.to(dtype_of("bias_dtype"));
    variable_list grads(12);  // one per forward argument
    grads[0] = d_hidden;
    grads[1] = d_weight;
    grads[2] = d_bias;
    return grads;
  }
};

bool grad_wanted(std::initializer_list<const Tensor*> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const Tensor* t : inputs) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

}  // namespace

void addmm_fp32(Tensor& acc, const Tensor& a, const Tensor& b) {
  if (a.scalar_type() == at::kFloat) {
    acc.addmm_(a, b);
  } else if (a.is_cuda()) {
    at::addmm_out(acc, acc, a, b, at::kFloat);  // cuBLAS: half-precision inputs, fp32 output
  } else {
    // cast: CPU has no mixed-dtype gemm; upcast the block
    acc.addmm_(a.to(at::kFloat), b.to(at::kFloat));
  }
}

int64_t chunk_rows(double chunk_mb, int64_t vocab, int64_t n) {
  TORCH_CHECK(chunk_mb > 0.0, "fused_linear_cross_entropy: chunk_mb must be > 0, got ", chunk_mb);
  const double bytes_per_row = 4.0 * static_cast<double>(std::max<int64_t>(vocab, 1));
  const auto rows = static_cast<int64_t>(std::floor(chunk_mb * 1024.0 * 1024.0 / bytes_per_row));
  return std::max<int64_t>(1, std::min<int64_t>(rows, std::max<int64_t>(n, 1)));
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options) {
  checks::ce_args("cross_entropy", logits, labels);
  if (!grad_wanted({&logits})) return ce_loss_only(logits, labels, options);
  return CrossEntropyFunction::apply(logits, labels, options.ignore_index, options.label_smoothing,
                                     options.z_loss_scale, options.softcap,
                                     static_cast<int64_t>(options.reduction), options.normalizer,
                                     optional_tensor(options.inverse_normalizer));
}

Tensor fused_linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                                  const Tensor& labels,
                                  const FusedLinearCrossEntropyOptions& options) {
  checks::flce_args(hidden, weight, bias, labels);
  const int64_t rows = chunk_rows(options.chunk_mb, weight.size(0), hidden.size(0));
  const CrossEntropyOptions& o = options.ce;
  if (!grad_wanted({&hidden, &weight, &bias})) {
    FlceWants loss_only;
    const FlcePass pass = flce_pass(hidden, weight, bias, labels, o, rows, Tensor(), loss_only);
    return reference::reduce_token_losses(pass.per_token, labels, o);
  }
  const c10::optional<Tensor> bias_opt = optional_tensor(bias);
  return FlceFunction::apply(hidden, weight, bias_opt, labels, o.ignore_index, o.label_smoothing,
                             o.z_loss_scale, o.softcap, static_cast<int64_t>(o.reduction),
                             o.normalizer, optional_tensor(o.inverse_normalizer), rows);
}

}  // namespace liger::kernels::composite
