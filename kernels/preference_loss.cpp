// The preference losses on per-sequence log-probs (see preference_loss.h and
// FusedLinearPreferenceFn in ops.h). All arithmetic in fp32 on [P] tensors.
#include "kernels/preference_loss.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace liger::kernels {
namespace {

// The pair's halves: [0, P) chosen, [P, 2P) rejected.
struct Halves {
  Tensor chosen, rejected;
};

Halves halves(const Tensor& per_sequence, int64_t pairs) {
  return {per_sequence.narrow(0, 0, pairs), per_sequence.narrow(0, pairs, pairs)};
}

void check_sizes(const Tensor& logps, const Tensor& counts, const Tensor& reference_logps,
                 const PreferenceOptions& o) {
  TORCH_CHECK(o.num_pairs > 0, "fused_linear_preference: num_pairs must be > 0");
  TORCH_CHECK(
      logps.dim() == 1 && logps.size(0) == 2 * o.num_pairs && counts.sizes() == logps.sizes(),
      "fused_linear_preference: logps and counts must be [2P] = [", 2 * o.num_pairs, "], got ",
      logps.sizes(), " and ", counts.sizes());
  if (needs_reference(o.objective)) {
    TORCH_CHECK(reference_logps.defined() && reference_logps.sizes() == logps.sizes(),
                "fused_linear_preference: DPO needs reference_logps [2P] = [", 2 * o.num_pairs,
                "]");
  }
}

// The pair normaliser D and the chosen-token normaliser M (0-dim fp32).
Tensor pair_normalizer(const PreferenceOptions& o, const Tensor& like) {
  const double d = o.pair_normalizer > 0.0 ? o.pair_normalizer : static_cast<double>(o.num_pairs);
  return at::full({}, d, like.options().dtype(at::kFloat));
}

Tensor chosen_token_normalizer(const PreferenceOptions& o, const Tensor& chosen_counts) {
  if (o.chosen_token_normalizer > 0.0) {
    return at::full({}, o.chosen_token_normalizer, chosen_counts.options());
  }
  return chosen_counts.sum().clamp_min(1.0);
}

// The NLL term's weight: nll_weight, plus ORPO's own NLL on chosen.
double nll_coefficient(const PreferenceOptions& o) {
  return o.nll_weight + (o.objective == PreferenceObjective::orpo ? 1.0 : 0.0);
}

// The values the loss reads per sequence: sums, or length averages.
Tensor as_read(const Tensor& per_sequence, const Tensor& counts, const PreferenceOptions& o) {
  return uses_length_average(o) ? per_sequence / counts.clamp_min(1.0) : per_sequence;
}

// log(1 - exp(a)) for a < 0, without cancellation: log(-expm1(a)).
Tensor log1m_exp(const Tensor& a) {
  return at::log(-at::expm1(a));
}

}  // namespace

bool uses_length_average(const PreferenceOptions& o) {
  if (o.objective == PreferenceObjective::dpo) return o.loss_type == DpoLossType::ipo;
  return true;  // ORPO and SimPO
}

Tensor preference_loss_of_logps(const Tensor& logps, const Tensor& counts,
                                const Tensor& reference_logps, const PreferenceOptions& o) {
  check_sizes(logps, counts, reference_logps, o);
  const int64_t pairs = o.num_pairs;
  const Halves p = halves(as_read(logps, counts, o), pairs);
  const double ls = o.label_smoothing;
  Tensor pair_loss;  // [P]
  switch (o.objective) {
    case PreferenceObjective::dpo: {
      const Halves r = halves(as_read(reference_logps, counts, o), pairs);
      const Tensor u = (p.chosen - r.chosen) - (p.rejected - r.rejected);
      switch (o.loss_type) {
        case DpoLossType::sigmoid:
          pair_loss = -(1.0 - ls) * at::log_sigmoid(o.beta * u) - ls * at::log_sigmoid(-o.beta * u);
          break;
        case DpoLossType::ipo: pair_loss = (u - 1.0 / (2.0 * o.beta)).square(); break;
        case DpoLossType::hinge: pair_loss = at::relu(1.0 - o.beta * u); break;
      }
      break;
    }
    case PreferenceObjective::orpo: {
      const Tensor odds = (p.chosen - p.rejected) - (log1m_exp(p.chosen) - log1m_exp(p.rejected));
      pair_loss = -o.orpo_alpha * at::log_sigmoid(odds);
      break;
    }
    case PreferenceObjective::simpo: {
      const Tensor z = o.beta * (p.chosen - p.rejected) - o.simpo_gamma;
      pair_loss = -(1.0 - ls) * at::log_sigmoid(z) - ls * at::log_sigmoid(-z);
      break;
    }
  }
  Tensor loss = pair_loss.sum() / pair_normalizer(o, logps);
  const double nll = nll_coefficient(o);
  if (nll != 0.0) {
    const Halves sums = halves(logps, pairs);
    const Halves n = halves(counts, pairs);
    loss = loss - nll * sums.chosen.sum() / chosen_token_normalizer(o, n.chosen);
  }
  return loss;
}

Tensor preference_loss_gradient(const Tensor& logps, const Tensor& counts,
                                const Tensor& reference_logps, const PreferenceOptions& o) {
  check_sizes(logps, counts, reference_logps, o);
  const int64_t pairs = o.num_pairs;
  const Halves p = halves(as_read(logps, counts, o), pairs);
  const Halves n = halves(counts.clamp_min(1.0), pairs);
  const double ls = o.label_smoothing;
  // d L_i / d (what the loss reads) for chosen and rejected, [P] each.
  Tensor d_chosen, d_rejected;
  switch (o.objective) {
    case PreferenceObjective::dpo: {
      const Halves r = halves(as_read(reference_logps, counts, o), pairs);
      const Tensor u = (p.chosen - r.chosen) - (p.rejected - r.rejected);
      Tensor d_u;
      switch (o.loss_type) {
        case DpoLossType::sigmoid: {
          const Tensor z = o.beta * u;
          d_u = o.beta * (-(1.0 - ls) * at::sigmoid(-z) + ls * at::sigmoid(z));
          break;
        }
        case DpoLossType::ipo: d_u = 2.0 * (u - 1.0 / (2.0 * o.beta)); break;
        case DpoLossType::hinge: d_u = -o.beta * (1.0 - o.beta * u).gt(0.0).to(u.dtype()); break;
      }
      d_chosen = d_u;
      d_rejected = -d_u;
      break;
    }
    case PreferenceObjective::orpo: {
      const Tensor odds = (p.chosen - p.rejected) - (log1m_exp(p.chosen) - log1m_exp(p.rejected));
      const Tensor d_odds = -o.orpo_alpha * at::sigmoid(-odds);
      // d/da [a - log(1 - e^a)] = 1 + e^a / (1 - e^a) = 1 / (1 - e^a) = -1 / expm1(a)
      d_chosen = d_odds * (-at::expm1(p.chosen)).reciprocal();
      d_rejected = -d_odds * (-at::expm1(p.rejected)).reciprocal();
      break;
    }
    case PreferenceObjective::simpo: {
      const Tensor z = o.beta * (p.chosen - p.rejected) - o.simpo_gamma;
      const Tensor d_z = -(1.0 - ls) * at::sigmoid(-z) + ls * at::sigmoid(z);
      d_chosen = o.beta * d_z;
      d_rejected = -o.beta * d_z;
      break;
    }
  }
  if (uses_length_average(o)) {  // through avg_s = logp_s / n_s
    d_chosen = d_chosen / n.chosen;
    d_rejected = d_rejected / n.rejected;
  }
  Tensor grad = at::cat({d_chosen, d_rejected}) / pair_normalizer(o, logps);
  const double nll = nll_coefficient(o);
  if (nll != 0.0) {
    const Tensor chosen_tokens = chosen_token_normalizer(o, halves(counts, pairs).chosen);
    grad.narrow(0, 0, pairs).sub_(nll / chosen_tokens);
  }
  return grad;
}

PreferencePairStats preference_pair_stats(const Tensor& logps, const Tensor& counts,
                                          const Tensor& reference_logps,
                                          const PreferenceOptions& o) {
  check_sizes(logps, counts, reference_logps, o);
  const Halves p = halves(as_read(logps, counts, o), o.num_pairs);
  PreferencePairStats s;
  s.logps_chosen = p.chosen;
  s.logps_rejected = p.rejected;
  switch (o.objective) {
    case PreferenceObjective::dpo: {
      const Halves r = halves(as_read(reference_logps, counts, o), o.num_pairs);
      s.rewards_chosen = o.beta * (p.chosen - r.chosen);
      s.rewards_rejected = o.beta * (p.rejected - r.rejected);
      break;
    }
    case PreferenceObjective::orpo:
      s.rewards_chosen = o.orpo_alpha * p.chosen;
      s.rewards_rejected = o.orpo_alpha * p.rejected;
      break;
    case PreferenceObjective::simpo:
      s.rewards_chosen = o.beta * p.chosen;
      s.rewards_rejected = o.beta * p.rejected;
      break;
  }
  return s;
}

}  // namespace liger::kernels
