// Reference cross entropy: HF's ForCausalLMLoss (logits.float(), then
// nn.functional.cross_entropy), plus Gemma 2's final-logit softcap and a
// z-loss, all in fp32.
#include "kernels/checks.h"
#include "kernels/optional_tensor.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>

namespace liger::kernels::reference {

// mean: sum / max(count, 1), so zero non-ignored tokens give 0, not NaN.
// The count stays a tensor: no host sync on a GPU.
Tensor reduce_token_losses(const Tensor& per_token, const Tensor& labels,
                           const CrossEntropyOptions& options) {
  switch (options.reduction) {
    case Reduction::none: return per_token;
    case Reduction::sum: return per_token.sum();
    case Reduction::mean: {
      if (options.inverse_normalizer.defined()) return per_token.sum() * options.inverse_normalizer;
      if (options.normalizer > 0.0) return per_token.sum() / options.normalizer;
      const Tensor count = labels.ne(options.ignore_index).sum().clamp_min(1);
      return per_token.sum() / count.to(per_token.scalar_type());
    }
  }
  TORCH_CHECK(false, "cross_entropy: unknown reduction");
}

// z = softcap > 0 ? softcap * tanh(x / softcap) : x      (x = logits in fp32)
// loss_n = (1 - eps) * (lse_n - z_{n,y_n}) + eps * mean_i(lse_n - z_{n,i})
//          + z_loss_scale * lse_n^2                       (0 where y_n is ignored)
// The first two terms are at::cross_entropy_loss with label_smoothing = eps.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options) {
  checks::ce_args("cross_entropy", logits, labels);
  Tensor z = logits.to(at::kFloat);  // cast: all loss arithmetic in fp32
  if (options.softcap > 0.0) z = at::tanh(z / options.softcap) * options.softcap;

  Tensor per_token = at::cross_entropy_loss(z, labels, /*weight=*/{}, at::Reduction::None,
                                            options.ignore_index, options.label_smoothing);
  if (options.z_loss_scale != 0.0) {
    const Tensor lse = at::logsumexp(z, -1);
    const Tensor kept = labels.ne(options.ignore_index).to(at::kFloat);
    per_token = per_token + options.z_loss_scale * lse.pow(2) * kept;
  }
  return reduce_token_losses(per_token, labels, options);
}

// logits = hidden @ weight^T + bias (nn.Linear, in hidden's dtype), then CE.
Tensor fused_linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                                  const Tensor& labels,
                                  const FusedLinearCrossEntropyOptions& options) {
  checks::flce_args(hidden, weight, bias, labels);
  const c10::optional<Tensor> b = optional_tensor(bias);
  return cross_entropy(at::linear(hidden, weight, b), labels, options.ce);
}

}  // namespace liger::kernels::reference
