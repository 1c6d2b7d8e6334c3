// Reference fused_linear_preference: the whole logits, log_softmax in fp32,
// the per-sequence sums by index_add, and the loss of kernels/preference_loss.h
// with autograd through all of it (the baseline of the fused backends).
#include "kernels/checks.h"
#include "kernels/preference_loss.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>

namespace liger::kernels::reference {

PreferenceLossResult fused_linear_preference(const Tensor& hidden, const Tensor& weight,
                                             const Tensor& labels, const Tensor& sequence,
                                             const Tensor& reference_logps,
                                             const PreferenceOptions& options) {
  checks::preference_args(hidden, weight, labels, sequence, reference_logps, options.num_pairs);
  const int64_t sequences = 2 * options.num_pairs;
  // logits in hidden's dtype (nn.Linear), then cast: log_softmax in fp32
  const Tensor log_probs = at::log_softmax(at::linear(hidden, weight).to(at::kFloat), -1);
  const Tensor kept = labels.ne(options.ignore_index);
  const Tensor target = labels.masked_fill(kept.logical_not(), 0).unsqueeze(1);
  const Tensor token_logps = log_probs.gather(1, target).squeeze(1) * kept.to(at::kFloat);
  const Tensor seq = sequence.masked_fill(kept.logical_not(), 0);
  const auto f32 = hidden.options().dtype(at::kFloat);
  const Tensor logps = at::zeros({sequences}, f32).index_add(0, seq, token_logps);
  const Tensor counts = at::zeros({sequences}, f32).index_add(0, seq, kept.to(at::kFloat));
  const Tensor reference = reference_logps.defined() ? reference_logps.to(at::kFloat) : Tensor();
  PreferenceLossResult out;
  out.loss = preference_loss_of_logps(logps, counts, reference, options);
  out.logps = logps.detach();
  out.counts = counts;
  return out;
}

}  // namespace liger::kernels::reference
