// ATen binding of the cuda fused_linear_preference (the math is FusedLinearPreferenceFn's
// in kernels/ops.h). Two passes over chunks of tokens, the chunk size from
// options.chunk_mb as the composite's (one fp32 [rows, V] block), so the [N, V]
// logits never exist:
//   pass 1, per chunk: logits = x_chunk @ W^T (cuBLAS, in x's dtype, fp32
//           accumulation), then cross_entropy_rows without gradient gives
//           nll_t = lse_t - z_label per token; after the last chunk one kernel
//           sums -nll and the kept tokens per sequence (preference_sums.h).
//   loss:   preference_loss_of_logps and d loss / d logp per sequence
//           (preference_loss_gradient), small ATen ops on [2P] tensors.
//   pass 2, per chunk: the same logits again; cross_entropy_rows writes the
//           gradient in place over them with the per-row scale -c_seq(t):
//           d logits_t = c_seq(t) (onehot(y_t) - softmax(z_t)), in x's dtype;
//           then dX_chunk = d logits @ W and dW += d logits^T @ x_chunk (fp32).
// Forward computes the loss and both gradients; backward multiplies them by
// grad_output on the device (skipped when it is 1). Nothing reads a device
// value back on the host.
#include "kernels/checks.h"
#include "kernels/composite/composite.h"
#include "kernels/cuda/binding.h"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/losses.h"
#include "kernels/cuda/preference_sums.h"
#include "kernels/preference_loss.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>

namespace liger::kernels::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr const char* kOp = "fused_linear_preference";

// The tokens as the per-sequence kernels see them.
launch::PreferenceTokens tokens_of(const Tensor& labels, const Tensor& sequence, int64_t vocab,
                                   const PreferenceOptions& o) {
  launch::PreferenceTokens t;
  t.labels = labels.data_ptr<int64_t>();
  t.sequence = sequence.data_ptr<int64_t>();
  t.rows = labels.size(0);
  t.sequences = 2 * o.num_pairs;
  t.vocab = vocab;
  t.ignore_index = o.ignore_index;
  return t;
}

// cross_entropy_rows' arguments for a chunk of logits [len, V] and its labels:
// plain cross entropy (no smoothing, z-loss or softcap).
launch::CrossEntropyArgs chunk_args(const Tensor& logits, const Tensor& labels,
                                    int64_t ignore_index) {
  launch::CrossEntropyArgs a;
  a.logits = logits.data_ptr();
  a.labels = labels.data_ptr<int64_t>();
  a.rows = logits.size(0);
  a.cols = logits.size(1);
  a.row_stride = logits.stride(0);
  a.vocab = logits.size(1);
  a.dtype = dtype_of(kOp, logits);
  a.ignore_index = ignore_index;
  return a;
}

// The chunk's logits in x's dtype. The op has no tuned-GEMM option: ATen's mm
// (cuBLAS), as the cuda fused_linear_cross_entropy without kernels.tuned_gemm.
Tensor chunk_logits(const Tensor& x, const Tensor& weight) {
  return reference::matmul(x, weight.t(), Tensor(), Tensor());
}

// Pass 1: per sequence, the sum of log p(label) and the kept tokens ([2P]
// fp32 each). `nll` [N] fp32 receives lse - z_label per token (0 where ignored).
void logp_pass(const Tensor& hidden, const Tensor& weight, const Tensor& labels,
               const Tensor& sequence, const PreferenceOptions& o, int64_t rows, Tensor& nll,
               Tensor& logps, Tensor& counts) {
  const int64_t n = hidden.size(0), vocab = weight.size(0);
  const cudaStream_t stream = current_stream();
  for (int64_t begin = 0; begin < n; begin += rows) {
    const int64_t len = std::min(rows, n - begin);
    const Tensor logits = chunk_logits(hidden.narrow(0, begin, len), weight);  // [len, V]
    const Tensor y = labels.narrow(0, begin, len);
    check_launch(kOp, launch::cross_entropy_rows(chunk_args(logits, y, o.ignore_index),
                                                 nll.data_ptr<float>() + begin, nullptr, stream));
  }
  check_launch(kOp, launch::preference_sequence_sums(tokens_of(labels, sequence, vocab, o),
                                                     nll.data_ptr<float>(), logps.data_ptr<float>(),
                                                     counts.data_ptr<float>(), stream));
}

struct PreferenceGrads {
  Tensor hidden;  // [N, H] hidden's dtype, or undefined
  Tensor weight;  // [V, H] weight's dtype, or undefined
};

// Pass 2 (see the top of the file). `row_scale` [N] fp32 is -c_seq(t) per
// token (0 where ignored); `nll` is scratch for the kernel's per-row loss.
PreferenceGrads gradient_pass(const Tensor& hidden, const Tensor& weight, const Tensor& labels,
                              const Tensor& row_scale, const Tensor& nll, int64_t ignore_index,
                              int64_t rows, bool want_hidden, bool want_weight) {
  const int64_t n = hidden.size(0);
  PreferenceGrads out;
  if (want_hidden) out.hidden = at::empty_like(hidden);
  // One chunk: its GEMM writes the weight gradient in the weight's dtype (fp32
  // accumulation inside, one rounding). Otherwise an fp32 sum over chunks,
  // written whole by the first chunk's GEMM and added to by the others (zero
  // when there are no rows: no chunk runs).
  const bool direct_w = want_weight && n > 0 && rows >= n;
  const auto w32 = weight.options().dtype(at::kFloat);
  Tensor grad_w32 = !want_weight || direct_w ? Tensor()
                    : n > 0                  ? at::empty(weight.sizes(), w32)
                                             : at::zeros(weight.sizes(), w32);
  const cudaStream_t stream = current_stream();
  for (int64_t begin = 0; begin < n; begin += rows) {
    const int64_t len = std::min(rows, n - begin);
    const Tensor x = hidden.narrow(0, begin, len);
    const Tensor logits = chunk_logits(x, weight);  // [len, V]
    launch::CrossEntropyArgs a = chunk_args(logits, labels.narrow(0, begin, len), ignore_index);
    a.grad = logits.data_ptr();  // in place: the chunk's logits become d logits
    a.row_scale = row_scale.data_ptr<float>() + begin;
    check_launch(kOp,
                 launch::cross_entropy_rows(a, nll.data_ptr<float>() + begin, nullptr, stream));
    if (want_hidden) {
      // dX = d logits @ W, written by cuBLAS into the chunk's rows (x's dtype)
      reference::matmul(logits, weight, Tensor(), out.hidden.narrow(0, begin, len));
    }
    if (direct_w) {
      out.weight = reference::matmul(logits.t(), x, Tensor(), Tensor());
    } else if (want_weight) {
      // dW += d logits^T @ x in fp32 (a 16-bit sum across chunks would drift)
      reference::matmul(logits.t(), x, begin == 0 ? Tensor() : grad_w32, grad_w32);
    }
  }
  if (want_weight && !direct_w) {
    out.weight = grad_w32.to(weight.scalar_type());  // cast: fp32 sum -> the weight's dtype
  }
  return out;
}

// grad *= grad_output on the device, skipped when grad_output is 1.
void scale_by(Tensor& grad, const Tensor& dy) {
  if (!grad.defined()) return;
  const Tensor scale = dy.to(at::kFloat).contiguous();
  check_launch(kOp, launch::scale_unless_one(grad.data_ptr(), grad.numel(), dtype_of(kOp, grad),
                                             scale.data_ptr<float>(), current_stream()));
}

// Forward: pass 2, its gradients kept; returns a copy of the loss computed
// before (so that this node owns the output). Backward: the kept gradients
// times grad_output.
struct PreferenceFunction : public torch::autograd::Function<PreferenceFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& hidden, const Tensor& weight,
                        const Tensor& loss, const Tensor& labels, const Tensor& row_scale,
                        const Tensor& nll, int64_t ignore_index, int64_t rows, bool want_hidden,
                        bool want_weight) {
    // contiguous as in pass 1 (no copy when they already are)
    const PreferenceGrads grads =
        gradient_pass(hidden.contiguous(), weight.contiguous(), labels, row_scale, nll,
                      ignore_index, rows, want_hidden, want_weight);
    ctx->saved_data["grad_hidden"] = grads.hidden;
    ctx->saved_data["grad_weight"] = grads.weight;
    return loss.clone();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    TORCH_CHECK(ctx->saved_data.count("grad_hidden"),
                "cuda fused_linear_preference: backward ran twice through the same graph");
    Tensor grads[2];
    const char* names[2] = {"grad_hidden", "grad_weight"};
    for (int i = 0; i < 2; ++i) {
      const c10::IValue value = ctx->saved_data[names[i]];
      grads[i] = value.isTensor() ? value.toTensor() : Tensor();
      ctx->saved_data.erase(names[i]);  // the buffer goes with this backward
      scale_by(grads[i], grad_outputs[0]);
    }
    variable_list out(10);  // one per forward argument
    out[0] = grads[0];
    out[1] = grads[1];
    return out;
  }
};

bool wants_grad(const Tensor& t) {
  return t.requires_grad() && at::GradMode::is_enabled();
}

}  // namespace

PreferenceLossResult fused_linear_preference(const Tensor& hidden_in, const Tensor& weight_in,
                                             const Tensor& labels_in, const Tensor& sequence_in,
                                             const Tensor& reference_logps,
                                             const PreferenceOptions& options) {
  checks::preference_args(hidden_in, weight_in, labels_in, sequence_in, reference_logps,
                          options.num_pairs);
  if (!hidden_in.is_cuda() || !is_kernel_dtype(hidden_in)) {
    return composite::fused_linear_preference(hidden_in, weight_in, labels_in, sequence_in,
                                              reference_logps, options);
  }
  check_device(kOp, "weight", weight_in, hidden_in);
  check_device(kOp, "labels", labels_in, hidden_in);
  check_device(kOp, "sequence", sequence_in, hidden_in);
  if (reference_logps.defined()) check_device(kOp, "reference_logps", reference_logps, hidden_in);
  c10::cuda::CUDAGuard guard(hidden_in.device());

  // contiguous operands: chunks of rows are then contiguous views, and the
  // hidden gradient's chunks contiguous outputs of their GEMMs
  const Tensor hidden = hidden_in.contiguous(), weight = weight_in.contiguous();
  const Tensor labels = labels_in.contiguous(), sequence = sequence_in.contiguous();
  const Tensor reference = reference_logps.defined() ? reference_logps.to(at::kFloat) : Tensor();
  const int64_t n = hidden.size(0), vocab = weight.size(0);
  const int64_t rows = composite::chunk_rows(options.chunk_mb, vocab, n);
  const bool want_hidden = wants_grad(hidden_in), want_weight = wants_grad(weight_in);
  const auto f32 = hidden.options().dtype(at::kFloat);

  PreferenceLossResult out;
  out.logps = at::empty({2 * options.num_pairs}, f32);
  out.counts = at::empty({2 * options.num_pairs}, f32);
  Tensor nll = at::empty({n}, f32);
  Tensor d_logps;
  {
    at::NoGradGuard no_grad;  // the first pass and the loss on the sums: plain values
    logp_pass(hidden, weight, labels, sequence, options, rows, nll, out.logps, out.counts);
    out.loss = preference_loss_of_logps(out.logps, out.counts, reference, options);
    if (!want_hidden && !want_weight) return out;
    d_logps = preference_loss_gradient(out.logps, out.counts, reference, options);  // [2P] fp32
  }
  Tensor row_scale = at::empty({n}, f32);
  check_launch(kOp, launch::preference_row_scale(tokens_of(labels, sequence, vocab, options),
                                                 d_logps.data_ptr<float>(),
                                                 row_scale.data_ptr<float>(), current_stream()));
  out.loss = PreferenceFunction::apply(hidden_in, weight_in, out.loss, labels, row_scale, nll,
                                       options.ignore_index, rows, want_hidden, want_weight);
  return out;
}

}  // namespace liger::kernels::cuda
