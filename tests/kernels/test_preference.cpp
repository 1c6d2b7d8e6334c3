// fused_linear_preference: the composite backend against the reference (values
// and gradients, every objective and DPO loss type), the loss on sums against
// numbers worked out by hand, and accumulation over two calls.
#include "kernels/composite/composite.h"
#include "kernels/preference_loss.h"
#include "kernels/reference/reference.h"
#include "tests/catch.h"
#include "tests/kernels/preference_variants.h"
#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

#include <cmath>

namespace ref = liger::kernels::reference;
namespace comp = liger::kernels::composite;
using liger::kernels::DpoLossType;
using liger::kernels::PreferenceLossResult;
using liger::kernels::PreferenceObjective;
using liger::kernels::PreferenceOptions;
using liger::kernels::test::compare_backends;
using liger::kernels::test::kPreferenceVariants;
using liger::kernels::test::OpFn;
using liger::kernels::test::preference_options;
using liger::kernels::test::PreferenceVariant;
using liger::kernels::test::Run;
using liger::kernels::test::run_op;
using liger::kernels::test::Tolerance;
using torch::Tensor;

namespace {

constexpr Tolerance kFp32{1e-5, 1e-5};
constexpr Tolerance kBf16{2e-2, 2e-2};

// A micro-batch of `pairs` pairs: 2P sequences of 3 to 6 tokens in a row,
// the first token of each a prompt token (ignored), then one padding token
// (ignored, sequence -1) at the end.
struct Batch {
  Tensor labels, sequence, reference;
  int64_t pairs;
};

Batch make_batch(int64_t pairs, int64_t vocab, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<int64_t> labels, sequence;
  for (int64_t s = 0; s < 2 * pairs; ++s) {
    const int64_t len = 3 + (s * 7 + static_cast<int64_t>(seed)) % 4;
    for (int64_t i = 0; i < len; ++i) {
      labels.push_back(i == 0 ? -100 : torch::randint(vocab, {1}).item<int64_t>());
      sequence.push_back(s);
    }
  }
  labels.push_back(-100);
  sequence.push_back(-1);
  Batch b;
  b.labels = torch::tensor(labels, torch::kLong);
  b.sequence = torch::tensor(sequence, torch::kLong);
  b.reference = torch::randn({2 * pairs}) * 2.0 - 12.0;
  b.pairs = pairs;
  return b;
}

using PreferenceFn = PreferenceLossResult (*)(const Tensor&, const Tensor&, const Tensor&,
                                              const Tensor&, const Tensor&,
                                              const PreferenceOptions&);

OpFn wrap(PreferenceFn fn, const Batch& b, const PreferenceOptions& o) {
  const Tensor reference = liger::kernels::needs_reference(o.objective) ? b.reference : Tensor();
  return [fn, b, o, reference](const std::vector<Tensor>& in) {
    const PreferenceLossResult r = fn(in[0], in[1], b.labels, b.sequence, reference, o);
    return std::vector<Tensor>{r.loss, r.logps, r.counts};
  };
}

double log_sigmoid(double x) {
  return -std::log1p(std::exp(-x));
}

}  // namespace

TEST_CASE("composite fused_linear_preference matches the reference, every objective",
          "[preference]") {
  const int64_t hidden = 16, vocab = 97;
  const Batch batch = make_batch(3, vocab, 21);
  const int64_t n = batch.labels.size(0);
  for (const PreferenceVariant& v : kPreferenceVariants) {
    for (double chunk_mb : {256.0, 4.0 * vocab * 4 / (1024.0 * 1024.0)}) {
      for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
        torch::manual_seed(5);
        const Tensor h = torch::randn({n, hidden}).to(dtype);
        const Tensor w = (torch::randn({vocab, hidden}) * 0.3).to(dtype);
        PreferenceOptions o = preference_options(v, batch.pairs);
        o.chunk_mb = chunk_mb;
        const std::string what = std::string(v.name) + (chunk_mb < 1.0 ? " 4-row chunks " : " ") +
                                 liger::kernels::test::dtype_name(dtype);
        compare_backends(what, wrap(ref::fused_linear_preference, batch, o),
                         wrap(comp::fused_linear_preference, batch, o), {h, w}, {true, true},
                         {"hidden", "weight"}, kFp32, kBf16, kBf16);
      }
    }
  }
}

TEST_CASE("fused_linear_preference: the per-sequence sums are the log-probs of the labels",
          "[preference]") {
  torch::manual_seed(3);
  const Tensor h = torch::randn({5, 8});
  const Tensor w = torch::randn({11, 8});
  const Tensor labels = torch::tensor({-100, 4, 7, -100, 2}, torch::kLong);
  const Tensor sequence = torch::tensor({0, 0, 0, 1, 1}, torch::kLong);
  PreferenceOptions o = preference_options(kPreferenceVariants[4], 1);  // ORPO: no reference needed
  o.chunk_mb = 4.0 * 11 * 2 / (1024.0 * 1024.0);
  const PreferenceLossResult r = comp::fused_linear_preference(h, w, labels, sequence, Tensor(), o);
  const Tensor lp = torch::log_softmax(torch::matmul(h, w.t()).to(torch::kDouble), -1);
  const double chosen = lp[1][4].item<double>() + lp[2][7].item<double>();
  const double rejected = lp[4][2].item<double>();
  CHECK(r.logps[0].item<double>() == Approx(chosen).epsilon(1e-6));
  CHECK(r.logps[1].item<double>() == Approx(rejected).epsilon(1e-6));
  CHECK(r.counts[0].item<double>() == 2.0);
  CHECK(r.counts[1].item<double>() == 1.0);
}

TEST_CASE("preference losses on sums: values worked out by hand", "[preference]") {
  // One pair: chosen sum -6 over 3 tokens, rejected sum -10 over 4 tokens;
  // reference sums -7 and -9.
  const Tensor logps = torch::tensor({-6.0f, -10.0f});
  const Tensor counts = torch::tensor({3.0f, 4.0f});
  const Tensor reference = torch::tensor({-7.0f, -9.0f});
  PreferenceOptions o;
  o.num_pairs = 1;
  o.beta = 0.5;
  auto loss = [&](const PreferenceOptions& opts, const Tensor& refs) {
    return liger::kernels::preference_loss_of_logps(logps, counts, refs, opts).item<double>();
  };
  SECTION("DPO sigmoid, ipo, hinge") {
    const double u = (-6.0 + 7.0) - (-10.0 + 9.0);  // 2
    CHECK(loss(o, reference) == Approx(-log_sigmoid(0.5 * u)).epsilon(1e-6));
    o.label_smoothing = 0.25;
    CHECK(loss(o, reference) ==
          Approx(-0.75 * log_sigmoid(0.5 * u) - 0.25 * log_sigmoid(-0.5 * u)).epsilon(1e-6));
    o.label_smoothing = 0.0;
    o.loss_type = DpoLossType::ipo;
    const double u_avg = (-2.0 + 7.0 / 3.0) - (-2.5 + 9.0 / 4.0);
    CHECK(loss(o, reference) == Approx(std::pow(u_avg - 1.0, 2)).epsilon(1e-6));
    o.loss_type = DpoLossType::hinge;
    CHECK(loss(o, reference) == Approx(0.0).margin(1e-7));  // 1 - 0.5 * 2 = 0
    o.beta = 0.1;
    CHECK(loss(o, reference) == Approx(0.8).epsilon(1e-6));
  }
  SECTION("DPO sigmoid with the policy equal to the reference is ln 2") {
    CHECK(loss(o, logps) == std::log(2.0f));
  }
  SECTION("ORPO: NLL on chosen tokens minus alpha logsigmoid(log odds)") {
    o.objective = PreferenceObjective::orpo;
    o.orpo_alpha = 0.3;
    const double a = -2.0, b = -2.5;
    const double odds = (a - b) - (std::log(1.0 - std::exp(a)) - std::log(1.0 - std::exp(b)));
    CHECK(loss(o, Tensor()) == Approx(6.0 / 3.0 - 0.3 * log_sigmoid(odds)).epsilon(1e-6));
  }
  SECTION("SimPO, and the NLL weight") {
    o.objective = PreferenceObjective::simpo;
    o.simpo_gamma = 0.4;
    const double z = 0.5 * (-2.0 + 2.5) - 0.4;
    CHECK(loss(o, Tensor()) == Approx(-log_sigmoid(z)).epsilon(1e-6));
    o.nll_weight = 2.0;
    CHECK(loss(o, Tensor()) == Approx(-log_sigmoid(z) + 2.0 * 6.0 / 3.0).epsilon(1e-6));
  }
  SECTION("DPO without reference log-probs is an error") {
    CHECK_THROWS(loss(o, Tensor()));
  }
}

TEST_CASE("fused_linear_preference: two calls with the batch's normalisers add up to one call",
          "[preference]") {
  const int64_t hidden = 12, vocab = 53;
  const Batch first = make_batch(2, vocab, 31);
  const Batch second = make_batch(1, vocab, 32);
  // Both micro-batches as one: the second's sequences renumbered after the
  // first's chosen and rejected halves.
  const auto renumber = [](const Batch& b, int64_t chosen_offset, int64_t rejected_offset) {
    const Tensor rejected = b.sequence.ge(b.pairs);
    return torch::where(
        b.sequence.lt(0), b.sequence,
        torch::where(rejected, b.sequence - b.pairs + rejected_offset, b.sequence + chosen_offset));
  };
  Batch whole;
  whole.pairs = 3;
  whole.labels = torch::cat({first.labels, second.labels});
  whole.sequence = torch::cat({renumber(first, 0, 3), renumber(second, 2, 5)});
  whole.reference = torch::cat({first.reference.narrow(0, 0, 2), second.reference.narrow(0, 0, 1),
                                first.reference.narrow(0, 2, 2), second.reference.narrow(0, 1, 1)});
  for (const PreferenceVariant& v : kPreferenceVariants) {
    INFO(v.name);
    torch::manual_seed(6);
    const Tensor h = torch::randn({whole.labels.size(0), hidden});
    const Tensor w = torch::randn({vocab, hidden}) * 0.3;
    const Run expected = run_op(
        wrap(comp::fused_linear_preference, whole, preference_options(v, 3)), {h, w}, {true, true});
    const double chosen_tokens =
        expected.outputs[2].narrow(0, 0, 3).sum().item<double>();  // counts of the chosen

    Tensor loss_sum = torch::zeros({});
    Tensor grad_w = torch::zeros_like(w);
    const int64_t n_first = first.labels.size(0);
    for (const Batch* b : {&first, &second}) {
      PreferenceOptions o = preference_options(v, b->pairs);
      o.pair_normalizer = 3.0;
      o.chosen_token_normalizer = chosen_tokens;
      const Tensor hb =
          b == &first ? h.narrow(0, 0, n_first) : h.narrow(0, n_first, h.size(0) - n_first);
      const Run part = run_op(wrap(comp::fused_linear_preference, *b, o), {hb, w}, {true, true});
      loss_sum += part.outputs[0];
      grad_w += part.grads[1];
    }
    LIGER_CHECK_CLOSE(std::string(v.name) + " loss", loss_sum, expected.outputs[0], 1e-6, 1e-5);
    LIGER_CHECK_CLOSE(std::string(v.name) + " weight grad", grad_w, expected.grads[1], 1e-6, 1e-5);
  }
}
