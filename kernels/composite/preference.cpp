// Composite fused_linear_preference: the preference losses on per-sequence
// log p(labels), chunked over tokens so that the [N, V] logits never exist
// (see composite.h for the two passes and ops.h for the math).
#include "kernels/checks.h"
#include "kernels/composite/composite.h"
#include "kernels/preference_loss.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

namespace liger::kernels::composite {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// One chunk's labels, prepared once: which tokens are kept, their targets
// ([len, 1], 0 where ignored) and their sequences (0 where ignored).
struct ChunkLabels {
  Tensor kept;  // [len] fp32, 1 or 0
  Tensor target;
  Tensor sequence;
};

ChunkLabels chunk_labels(const Tensor& labels, const Tensor& sequence, int64_t ignore_index) {
  const Tensor kept = labels.ne(ignore_index);
  return {kept.to(at::kFloat), labels.masked_fill(kept.logical_not(), 0).unsqueeze(1),
          sequence.masked_fill(kept.logical_not(), 0)};
}

// The first pass: per sequence, the sum of log p(label) over its kept tokens
// and their count; per token, the log-sum-exp of its logits (fp32, kept for
// the second pass).
struct LogpPass {
  Tensor logps;   // [2P] fp32
  Tensor counts;  // [2P] fp32
  Tensor lse;     // [N] fp32
};

LogpPass logp_pass(const Tensor& hidden, const Tensor& weight, const Tensor& labels,
                   const Tensor& sequence, const PreferenceOptions& o, int64_t rows) {
  const int64_t n = hidden.size(0);
  const auto f32 = hidden.options().dtype(at::kFloat);
  LogpPass out{at::zeros({2 * o.num_pairs}, f32), at::zeros({2 * o.num_pairs}, f32),
               at::empty({n}, f32)};
  for (int64_t begin = 0; begin < n; begin += rows) {
    const int64_t len = std::min(rows, n - begin);
    const ChunkLabels c =
        chunk_labels(labels.narrow(0, begin, len), sequence.narrow(0, begin, len), o.ignore_index);
    // logits in the compute dtype (the GEMM), cast: all softmax math in fp32
    const Tensor z = at::linear(hidden.narrow(0, begin, len), weight).to(at::kFloat);
    const Tensor lse = at::logsumexp(z, -1);  // [len]
    const Tensor token_logps = (z.gather(1, c.target).squeeze(1) - lse) * c.kept;
    out.logps.index_add_(0, c.sequence, token_logps);
    out.counts.index_add_(0, c.sequence, c.kept);
    out.lse.narrow(0, begin, len).copy_(lse);
  }
  return out;
}

struct PreferenceGrads {
  Tensor hidden;  // [N, H] hidden's dtype, or undefined
  Tensor weight;  // [V, H] fp32, or undefined
};

// The second pass: with c_t = d loss / d logp_s(t) for a kept token (0 for an
// ignored one), d loss / d logits_t = c_t (onehot(y_t) - softmax(logits_t)).
// Per chunk: the logits again, p = exp(z - lse) (fp32), then
//   grad_hidden[chunk] = d_logits @ W        (compute dtype)
//   grad_weight       += d_logits^T @ h      (fp32)
PreferenceGrads gradient_pass(const Tensor& hidden, const Tensor& weight, const Tensor& labels,
                              const Tensor& sequence, const Tensor& lse, const Tensor& d_logps,
                              int64_t ignore_index, int64_t rows, bool want_hidden,
                              bool want_weight) {
  const int64_t n = hidden.size(0);
  PreferenceGrads out;
  if (want_hidden) out.hidden = at::empty_like(hidden, at::MemoryFormat::Contiguous);
  if (want_weight) out.weight = at::zeros(weight.sizes(), hidden.options().dtype(at::kFloat));
  // CPU has no mixed-dtype GEMM: with 16-bit weights the hidden gradient is
  // d_logits (fp32) @ an fp32 copy of W, made once (cast), so that the
  // per-sequence scale is not rounded before the product.
  const bool upcast = want_hidden && !hidden.is_cuda() && hidden.scalar_type() != at::kFloat;
  const Tensor weight_f32 = upcast ? weight.to(at::kFloat) : Tensor();
  for (int64_t begin = 0; begin < n; begin += rows) {
    const int64_t len = std::min(rows, n - begin);
    const Tensor h = hidden.narrow(0, begin, len);
    const ChunkLabels c =
        chunk_labels(labels.narrow(0, begin, len), sequence.narrow(0, begin, len), ignore_index);
    const Tensor scale = (d_logps.index_select(0, c.sequence) * c.kept).unsqueeze(1);  // [len, 1]
    // cast: the chunk's logits to fp32; p = softmax from the first pass's lse
    Tensor grad =
        (at::linear(h, weight).to(at::kFloat) - lse.narrow(0, begin, len).unsqueeze(1)).exp_();
    grad.mul_(-scale);
    grad.scatter_add_(1, c.target, scale);
    if (want_hidden && weight_f32.defined()) {
      // cast: the fp32 product to the hidden dtype
      out.hidden.narrow(0, begin, len).copy_(at::mm(grad, weight_f32));
    }
    const Tensor d_logits = grad.to(hidden.scalar_type());  // cast: fp32 to compute dtype
    grad = Tensor();                                        // free the fp32 chunk early
    if (want_hidden && !weight_f32.defined()) {
      Tensor slice = out.hidden.narrow(0, begin, len);
      at::mm_out(slice, d_logits, weight);
    }
    if (want_weight) addmm_fp32(out.weight, d_logits.t(), h);
  }
  return out;
}

// Forward: the gradient pass, its results kept; returns the loss computed
// before (a copy, so that this node owns the output). Backward: the kept
// gradients times grad_output, cast to the inputs' dtypes.
struct PreferenceFunction : public torch::autograd::Function<PreferenceFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& hidden, const Tensor& weight,
                        const Tensor& loss, const Tensor& labels, const Tensor& sequence,
                        const Tensor& lse, const Tensor& d_logps, int64_t ignore_index,
                        int64_t rows) {
    PreferenceGrads grads =
        gradient_pass(hidden, weight, labels, sequence, lse, d_logps, ignore_index, rows,
                      hidden.requires_grad(), weight.requires_grad());
    ctx->saved_data["grad_hidden"] = grads.hidden;
    ctx->saved_data["grad_weight"] = grads.weight;
    ctx->saved_data["weight_dtype"] = static_cast<int64_t>(weight.scalar_type());
    return loss.clone();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const Tensor& dy = grad_outputs[0];
    auto take = [&](const char* key) {
      auto it = ctx->saved_data.find(key);
      TORCH_CHECK(it != ctx->saved_data.end(),
                  "fused_linear_preference: backward ran twice through the same graph; the "
                  "composite backend frees its stored gradients after the first backward");
      Tensor t = it->second.isTensor() ? it->second.toTensor() : Tensor();
      ctx->saved_data.erase(it);  // free the buffer with this backward, not with the graph
      return t;
    };
    Tensor d_hidden = take("grad_hidden");
    Tensor d_weight = take("grad_weight");
    if (d_hidden.defined()) d_hidden.mul_(dy);
    if (d_weight.defined()) {
      d_weight.mul_(dy);
      // cast: the fp32 accumulator to the weight's dtype (no-op in fp32)
      d_weight = d_weight.to(static_cast<at::ScalarType>(ctx->saved_data["weight_dtype"].toInt()));
    }
    variable_list grads(9);  // one per forward argument
    grads[0] = d_hidden;
    grads[1] = d_weight;
    return grads;
  }
};

}  // namespace

PreferenceLossResult fused_linear_preference(const Tensor& hidden, const Tensor& weight,
                                             const Tensor& labels, const Tensor& sequence,
                                             const Tensor& reference_logps,
                                             const PreferenceOptions& options) {
  checks::preference_args(hidden, weight, labels, sequence, reference_logps, options.num_pairs);
  const int64_t rows = chunk_rows(options.chunk_mb, weight.size(0), hidden.size(0));
  const Tensor reference = reference_logps.defined() ? reference_logps.to(at::kFloat) : Tensor();
  const bool want_grad =
      at::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad());

  PreferenceLossResult out;
  LogpPass first;
  {
    at::NoGradGuard no_grad;  // the first pass and the loss on the sums: plain values
    first = logp_pass(hidden, weight, labels, sequence, options, rows);
    out.loss = preference_loss_of_logps(first.logps, first.counts, reference, options);
  }
  out.logps = first.logps;
  out.counts = first.counts;
  if (!want_grad) return out;
  const Tensor d_logps =
      preference_loss_gradient(first.logps, first.counts, reference, options);  // [2P] fp32
  out.loss = PreferenceFunction::apply(hidden, weight, out.loss, labels, sequence, first.lse,
                                       d_logps, options.ignore_index, rows);
  return out;
}

}  // namespace liger::kernels::composite
