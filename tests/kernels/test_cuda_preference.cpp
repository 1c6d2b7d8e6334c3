// The cuda fused_linear_preference against the reference backend (logits
// materialised, fp32 inputs): loss, per-sequence log-probs and token counts,
// and the gradients of hidden and weight, for every objective and DPO loss
// type, fp32 and bf16, odd and Llama 3 vocabularies, chunks that cut
// sequences, interleaved sequences; plus bitwise determinism, the loss-only
// path and a frozen weight. Skipped (with a message) where there is no GPU.
#include "kernels/cuda/losses.h"
#include "kernels/preference_loss.h"
#include "kernels/reference/reference.h"
#include "tests/catch.h"
#include "tests/kernels/preference_variants.h"
#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

#include <string>
#include <vector>

using namespace liger::kernels;
using liger::kernels::test::closeness;

namespace {

bool have_gpu() {
  return liger::kernels::test::have_cuda_device("CUDA preference loss tests");
}

PreferenceOptions options_of(const test::PreferenceVariant& v, int64_t pairs, double chunk_mb) {
  PreferenceOptions o = test::preference_options(v, pairs);
  o.chunk_mb = chunk_mb;
  return o;
}

// chunk_mb giving chunks of `rows` rows (the budget is one fp32 [rows, V]
// block; half a row more so that the floor of the division is `rows`).
double chunk_mb_for_rows(int64_t rows, int64_t vocab) {
  return (static_cast<double>(rows) + 0.5) * static_cast<double>(vocab) * 4.0 / (1024.0 * 1024.0);
}

// 2P sequences of 7 to 29 tokens, each starting with 2 to 4 prompt tokens
// (label ignored, sequence id still set), then 3 padding tokens (ignored,
// sequence -1). `interleaved`: the tokens in a random order, so that a
// sequence's tokens are scattered over every chunk.
struct Batch {
  Tensor labels, sequence;
  int64_t pairs = 0;
};

Batch make_batch(int64_t pairs, int64_t vocab, bool interleaved, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<int64_t> labels, sequence;
  for (int64_t s = 0; s < 2 * pairs; ++s) {
    const int64_t len = 7 + (s * 11 + static_cast<int64_t>(seed)) % 23;
    const int64_t prompt = 2 + s % 3;
    for (int64_t i = 0; i < len; ++i) {
      labels.push_back(i < prompt ? -100 : torch::randint(vocab, {1}).item<int64_t>());
      sequence.push_back(s);
    }
  }
  for (int i = 0; i < 3; ++i) {
    labels.push_back(-100);
    sequence.push_back(-1);
  }
  Batch b;
  b.labels = torch::tensor(labels, torch::kLong);
  b.sequence = torch::tensor(sequence, torch::kLong);
  if (interleaved) {
    const Tensor order = torch::randperm(b.labels.size(0), torch::kLong);
    b.labels = b.labels.index_select(0, order);
    b.sequence = b.sequence.index_select(0, order);
  }
  b.labels = b.labels.to(at::kCUDA);
  b.sequence = b.sequence.to(at::kCUDA);
  b.pairs = pairs;
  return b;
}

struct Result {
  Tensor loss, logps, counts, dx, dw;
};

// One forward and backward of `fn` on fresh leaves, the loss scaled by `upstream`.
Result run(FusedLinearPreferenceFn fn, const Tensor& x, const Tensor& w, const Batch& b,
           const Tensor& reference, const PreferenceOptions& o, double upstream,
           bool grad_w = true) {
  Tensor xl = x.detach().clone().requires_grad_(true);
  Tensor wl = w.detach().clone().requires_grad_(grad_w);
  const PreferenceLossResult r = fn(xl, wl, b.labels, b.sequence, reference, o);
  (r.loss * upstream).backward();
  return {r.loss.detach(), r.logps, r.counts, xl.grad(), grad_w ? wl.grad() : Tensor()};
}

// |actual - expected| <= frac * max|expected| + rtol * |expected|, in fp32.
void check_close(const std::string& what, const Tensor& actual, const Tensor& expected, double frac,
                 double rtol) {
  const Tensor e = expected.detach().to(at::kFloat);
  const double scale = e.numel() > 0 ? e.abs().max().item<double>() : 0.0;
  const auto c = closeness(what, actual.detach().to(at::kFloat), e, frac * scale, rtol);
  INFO(c.report);
  CHECK(c.ok);
}

void compare(const std::string& what, const Result& got, const Result& want, bool fp32) {
  // fp32: the same math up to the order of sums (TF32 is off: fp32 GEMMs).
  // bf16: the logits and d logits are rounded to bf16 (the reference here is fp32).
  const double out_tol = fp32 ? 1e-4 : 2e-2;
  const double grad_tol = fp32 ? 1e-4 : 3e-2;
  check_close(what + " loss", got.loss, want.loss, out_tol, out_tol);
  check_close(what + " logps", got.logps, want.logps, out_tol, out_tol);
  CHECK(torch::equal(got.counts, want.counts));  // counts are exact
  check_close(what + " grad hidden", got.dx, want.dx, grad_tol, grad_tol);
  check_close(what + " grad weight", got.dw, want.dw, grad_tol, grad_tol);
}

// DPO's reference log-probs, placed so that the pair's u (ops.h) takes set
// values: for pair i, u = -offset_i with ref_c = logp_c + offset_i * n_c^a
// and ref_r = logp_r (a = 1 for length-averaged losses, else 0). beta u then
// stays at least 0.25 away from the hinge's kink at 1 and the sigmoids are
// not saturated, whatever the bf16 rounding.
Tensor placed_reference(const Tensor& logps, const Tensor& counts, const PreferenceOptions& o) {
  const int64_t p = o.num_pairs;
  const std::vector<double> u = {-1.5, 0.3, 0.8, -0.4, 3.0, 1.2, -2.5};
  Tensor offsets = torch::zeros({2 * p}, logps.options());
  for (int64_t i = 0; i < p; ++i) offsets[i] = -u[i % u.size()];
  if (uses_length_average(o)) offsets = offsets * counts.clamp_min(1.0);
  return (logps + offsets).detach();
}

}  // namespace

TEST_CASE("cuda fused_linear_preference matches the reference: every objective, fp32 and bf16",
          "[cuda][preference]") {
  if (!have_gpu()) return;
  const at::Device gpu(at::kCUDA);
  struct Shape {
    const char* name;
    int64_t pairs, hidden, vocab;
    bool interleaved;
    std::vector<int64_t> chunk_rows;  // 0: the default budget (one chunk here)
  };
  const std::vector<Shape> shapes = {
      // odd vocabulary (no 16-byte vectors), chunks of 16 and 5 rows cut every sequence
      {"odd", 3, 72, 1001, false, {0, 16, 5}},
      // sequences scattered over every chunk
      {"interleaved", 4, 64, 2048, true, {0, 33}},
      // Llama 3's vocabulary (the cluster kernel), chunks of 24 rows
      {"llama3 vocab", 2, 128, 128256, false, {0, 24}},
  };
  for (const Shape& s : shapes) {
    const Batch batch = make_batch(s.pairs, s.vocab, s.interleaved, 40 + s.vocab);
    const int64_t n = batch.labels.size(0);
    torch::manual_seed(7);
    const Tensor x32 = torch::randn({n, s.hidden}, gpu);
    const Tensor w32 = torch::randn({s.vocab, s.hidden}, gpu) * 0.05;
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      const Tensor x = x32.to(dtype), w = w32.to(dtype);
      // The oracle: the same (rounded) values in fp32, logits materialised.
      const Tensor xf = x.to(at::kFloat), wf = w.to(at::kFloat);
      for (const test::PreferenceVariant& v : test::kPreferenceVariants) {
        for (const int64_t rows : s.chunk_rows) {
          PreferenceOptions o =
              options_of(v, s.pairs, rows == 0 ? 256.0 : chunk_mb_for_rows(rows, s.vocab));
          Tensor reference;
          if (needs_reference(o.objective)) {
            torch::NoGradGuard no_grad;
            PreferenceOptions plain =
                options_of(test::kPreferenceVariants[4], s.pairs, 256.0);  // ORPO: no ref
            const PreferenceLossResult r = reference::fused_linear_preference(
                xf, wf, batch.labels, batch.sequence, Tensor(), plain);
            reference = placed_reference(r.logps, r.counts, o);
          }
          const std::string what = std::string(s.name) + ", " + v.name + ", " +
                                   liger::kernels::test::dtype_name(dtype) + ", chunk rows " +
                                   std::to_string(rows);
          INFO(what);
          const Result want =
              run(&reference::fused_linear_preference, xf, wf, batch, reference, o, 0.7);
          const Result got = run(&cuda::fused_linear_preference, x, w, batch, reference, o, 0.7);
          CHECK(got.dx.scalar_type() == dtype);
          CHECK(got.dw.scalar_type() == dtype);
          compare(what, got, want, dtype == at::kFloat);
        }
      }
    }
  }
}

TEST_CASE("cuda fused_linear_preference: the per-sequence sums are the log-probs of the labels",
          "[cuda][preference]") {
  if (!have_gpu()) return;
  const at::Device gpu(at::kCUDA);
  torch::manual_seed(3);
  const Tensor h = torch::randn({6, 8}, gpu);
  const Tensor w = torch::randn({11, 8}, gpu);
  // sequence 1's tokens around sequence 0's; the last token is padding (-1)
  const Tensor labels = torch::tensor({3, -100, 4, 7, 2, -100}, torch::kLong).to(gpu);
  const Tensor sequence = torch::tensor({1, 0, 0, 0, 1, -1}, torch::kLong).to(gpu);
  const PreferenceOptions o = options_of(test::kPreferenceVariants[4], 1, chunk_mb_for_rows(4, 11));
  const PreferenceLossResult r = cuda::fused_linear_preference(h, w, labels, sequence, Tensor(), o);
  const Tensor lp = torch::log_softmax(torch::matmul(h, w.t()).to(at::kDouble), -1).cpu();
  const double chosen = lp[2][4].item<double>() + lp[3][7].item<double>();
  const double rejected = lp[0][3].item<double>() + lp[4][2].item<double>();
  CHECK(r.logps[0].item<double>() == Approx(chosen).epsilon(1e-5));
  CHECK(r.logps[1].item<double>() == Approx(rejected).epsilon(1e-5));
  CHECK(r.counts[0].item<double>() == 2.0);
  CHECK(r.counts[1].item<double>() == 2.0);
}

TEST_CASE("cuda fused_linear_preference is deterministic: two runs are bitwise equal",
          "[cuda][preference]") {
  if (!have_gpu()) return;
  const at::Device gpu(at::kCUDA);
  const int64_t vocab = 128256;
  const Batch batch = make_batch(4, vocab, true, 5);
  const int64_t n = batch.labels.size(0);
  torch::manual_seed(9);
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    INFO(liger::kernels::test::dtype_name(dtype));
    const Tensor x = torch::randn({n, 256}, gpu).to(dtype);
    const Tensor w = (torch::randn({vocab, 256}, gpu) * 0.05).to(dtype);
    const PreferenceOptions o =
        options_of(test::kPreferenceVariants[5], 4, chunk_mb_for_rows(40, vocab));  // SimPO
    const Result a = run(&cuda::fused_linear_preference, x, w, batch, Tensor(), o, 1.0);
    const Result b = run(&cuda::fused_linear_preference, x, w, batch, Tensor(), o, 1.0);
    CHECK(torch::equal(a.loss, b.loss));
    CHECK(torch::equal(a.logps, b.logps));
    CHECK(torch::equal(a.counts, b.counts));
    CHECK(torch::equal(a.dx, b.dx));
    CHECK(torch::equal(a.dw, b.dw));
  }
}

TEST_CASE(
    "cuda fused_linear_preference: without grad the same loss; a frozen weight the same input "
    "gradient; grad_output 1 and 0.7",
    "[cuda][preference]") {
  if (!have_gpu()) return;
  const at::Device gpu(at::kCUDA);
  const int64_t vocab = 3001;
  const Batch batch = make_batch(2, vocab, false, 11);
  const int64_t n = batch.labels.size(0);
  torch::manual_seed(13);
  const Tensor x = torch::randn({n, 96}, gpu).to(at::kBFloat16);
  const Tensor w = (torch::randn({vocab, 96}, gpu) * 0.05).to(at::kBFloat16);
  for (const int64_t rows : {7, 1000}) {  // many chunks (the fp32 sum of dW) and one chunk
    INFO("chunk rows " << rows);
    const PreferenceOptions o =
        options_of(test::kPreferenceVariants[4], 2, chunk_mb_for_rows(rows, vocab));
    const Result both = run(&cuda::fused_linear_preference, x, w, batch, Tensor(), o, 1.0);
    {
      torch::NoGradGuard no_grad;
      const PreferenceLossResult r =
          cuda::fused_linear_preference(x, w, batch.labels, batch.sequence, Tensor(), o);
      CHECK(torch::equal(r.loss, both.loss));
      CHECK(torch::equal(r.logps, both.logps));
    }
    const Result frozen =
        run(&cuda::fused_linear_preference, x, w, batch, Tensor(), o, 1.0, /*grad_w=*/false);
    CHECK_FALSE(frozen.dw.defined());
    CHECK(torch::equal(frozen.dx, both.dx));  // the same GEMMs for the input gradient
    // grad_output 0.7 scales both gradients (once rounded to bf16)
    const Result scaled = run(&cuda::fused_linear_preference, x, w, batch, Tensor(), o, 0.7);
    check_close("grad hidden x 0.7", scaled.dx, both.dx.to(at::kFloat) * 0.7, 0.0, 1e-2);
    check_close("grad weight x 0.7", scaled.dw, both.dw.to(at::kFloat) * 0.7, 0.0, 1e-2);
  }
}
