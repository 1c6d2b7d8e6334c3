// The CUDA cross entropy and fused linear cross entropy against the
// reference backend (logits materialised, fp32 math): loss and every
// gradient, every option, fp32 tight and bf16 loose, Llama 3 and Gemma
// vocabularies, odd shapes, and exact accumulation over micro-batches.
// Skipped (with a message) where there is no GPU.
#include "kernels/cuda/losses.h"
#include "kernels/reference/reference.h"
#include "tests/catch.h"
#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

using namespace liger::kernels;
using liger::kernels::test::closeness;

namespace {

bool have_gpu() {
  return liger::kernels::test::have_cuda_device("CUDA loss tests");
}

struct Case {
  const char* name;
  CrossEntropyOptions ce;
};

std::vector<Case> option_cases() {
  std::vector<Case> cases;
  CrossEntropyOptions o;
  cases.push_back({"plain mean", o});
  o.reduction = Reduction::sum;
  cases.push_back({"sum", o});
  CrossEntropyOptions all;
  all.label_smoothing = 0.1;
  all.z_loss_scale = 1e-4;
  all.softcap = 30.0;
  cases.push_back({"smoothing + z-loss + softcap, mean", all});
  all.reduction = Reduction::sum;
  cases.push_back({"smoothing + z-loss + softcap, sum", all});
  CrossEntropyOptions none;
  none.reduction = Reduction::none;
  cases.push_back({"none", none});
  return cases;
}

// Labels in [0, V) with about a quarter ignored.
Tensor make_labels(int64_t n, int64_t vocab, const at::Device& device) {
  Tensor labels = torch::randint(0, vocab, {n}, torch::TensorOptions().dtype(at::kLong));
  labels.masked_fill_(torch::rand({n}) < 0.25, -100);
  return labels.to(device);
}

struct Grads {
  Tensor loss, dx, dw, db;
};

// loss and gradients of `fn` with the same upstream gradient for every backend
Grads run_flce(FusedLinearCrossEntropyFn fn, const Tensor& x, const Tensor& w, const Tensor& b,
               const Tensor& y, const FusedLinearCrossEntropyOptions& o, const Tensor& upstream) {
  Tensor xl = x.detach().clone().requires_grad_(true);
  Tensor wl = w.detach().clone().requires_grad_(true);
  Tensor bl = b.defined() ? b.detach().clone().requires_grad_(true) : Tensor();
  Tensor loss = fn(xl, wl, bl, y, o);
  (loss * upstream).sum().backward();
  return {loss.detach(), xl.grad(), wl.grad(), bl.defined() ? bl.grad() : Tensor()};
}

void compare(const std::string& what, const Grads& got, const Grads& want, double atol,
             double rtol) {
  for (auto [name, a, e] : {std::tuple<const char*, Tensor, Tensor>{"loss", got.loss, want.loss},
                            {"grad_input", got.dx, want.dx},
                            {"grad_weight", got.dw, want.dw},
                            {"grad_bias", got.db, want.db}}) {
    const auto c = closeness(what + " " + name, a, e, atol, rtol);
    INFO(c.report);
    CHECK(c.ok);
  }
}

}  // namespace

TEST_CASE("cuda cross_entropy matches the reference: loss and grad, every option") {
  if (!have_gpu()) return;
  torch::manual_seed(11);
  const at::Device gpu(at::kCUDA);
  struct Shape {
    int64_t n, vocab;
  };
  // 40008: a row split over a 4-block cluster whose last slice is shorter.
  for (const Shape shape :
       {Shape{37, 1000}, Shape{9, 1001}, Shape{16, 40008}, Shape{64, 128256}, Shape{8, 256000}}) {
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      for (const auto& c : option_cases()) {
        INFO(c.name << ", N " << shape.n << ", V " << shape.vocab << ", " << dtype);
        const Tensor logits32 = (torch::randn({shape.n, shape.vocab}) * 4).to(gpu);
        const Tensor logits = logits32.to(dtype);
        const Tensor labels = make_labels(shape.n, shape.vocab, gpu);
        const Tensor upstream = c.ce.reduction == Reduction::none ? torch::rand({shape.n}, gpu)
                                                                  : torch::full({}, 0.7, gpu);
        // Reference in fp32 on the same (rounded) logits: the oracle.
        Tensor ref_in = logits.to(at::kFloat).requires_grad_(true);
        Tensor ref = reference::cross_entropy(ref_in, labels, c.ce);
        (ref * upstream).sum().backward();
        Tensor ours_in = logits.detach().clone().requires_grad_(true);
        Tensor ours = cuda::cross_entropy(ours_in, labels, c.ce);
        (ours * upstream).sum().backward();
        REQUIRE(ours.scalar_type() == at::kFloat);
        REQUIRE(ours_in.grad().scalar_type() == dtype);
        const double atol = dtype == at::kFloat ? 1e-5 : 2e-2;
        const auto loss_c = closeness("loss", ours, ref.detach(), atol, 1e-5);
        INFO(loss_c.report);
        CHECK(loss_c.ok);
        // bf16 gradients: up to two bf16 roundings (the gradient, then times grad_output)
        const auto grad_c =
            closeness("grad", ours_in.grad().to(at::kFloat), ref_in.grad(),
                      dtype == at::kFloat ? 1e-6 : 1e-5, dtype == at::kFloat ? 1e-5 : 1.6e-2);
        INFO(grad_c.report);
        CHECK(grad_c.ok);
        // Loss only (no grad) gives the same loss.
        torch::NoGradGuard no_grad;
        CHECK(closeness("loss, no grad", cuda::cross_entropy(logits, labels, c.ce), ours.detach(),
                        0, 0)
                  .ok);
      }
    }
  }
}

TEST_CASE("cuda cross_entropy: every label ignored gives 0 loss and 0 grad, not NaN") {
  if (!have_gpu()) return;
  const at::Device gpu(at::kCUDA);
  Tensor logits = torch::randn({5, 300}, gpu).requires_grad_(true);
  Tensor labels = torch::full({5}, -100, torch::TensorOptions().dtype(at::kLong).device(gpu));
  Tensor loss = cuda::cross_entropy(logits, labels, {});
  loss.backward();
  CHECK(loss.item<double>() == 0.0);
  CHECK(logits.grad().abs().max().item<double>() == 0.0);
}

TEST_CASE("cuda fused_linear_cross_entropy (speed and lean) matches lm_head + reference CE") {
  if (!have_gpu()) return;
  torch::manual_seed(12);
  const at::Device gpu(at::kCUDA);
  struct Shape {
    int64_t n, hidden, vocab;
    bool bias;
    double chunk_mb;
  };
  const std::vector<Shape> shapes = {
      {67, 96, 1001, true, 0.05},      // odd sizes, many chunks and vocabulary blocks
      {256, 128, 128256, false, 8.0},  // Llama 3 vocabulary
      {64, 64, 256000, true, 16.0},    // Gemma vocabulary
      {1000, 64, 2048, false, 2.0},    // equal chunks rounded up to 128 rows, the last one shorter
      {200, 64, 5000, true, 64.0},     // one chunk: the weight gradient straight from its GEMM
  };
  for (const auto& s : shapes) {
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      for (const auto mode : {FlceMode::speed, FlceMode::lean}) {
        for (const auto& c : option_cases()) {
          INFO(c.name << ", N " << s.n << ", H " << s.hidden << ", V " << s.vocab << ", bias "
                      << s.bias << ", " << dtype << ", "
                      << (mode == FlceMode::speed ? "speed" : "lean"));
          const Tensor x = (torch::randn({s.n, s.hidden}, gpu)).to(dtype);
          const Tensor w = (torch::randn({s.vocab, s.hidden}, gpu) * 0.05).to(dtype);
          const Tensor b = s.bias ? (torch::randn({s.vocab}, gpu) * 0.1).to(dtype) : Tensor();
          const Tensor y = make_labels(s.n, s.vocab, gpu);
          const Tensor upstream = c.ce.reduction == Reduction::none ? torch::rand({s.n}, gpu)
                                                                    : torch::full({}, 0.7, gpu);
          FusedLinearCrossEntropyOptions o;
          o.ce = c.ce;
          o.chunk_mb = s.chunk_mb;
          o.mode = mode;
          // The oracle: fp32 inputs (the same rounded values), logits materialised.
          const Grads want =
              run_flce(&reference::fused_linear_cross_entropy, x.to(at::kFloat), w.to(at::kFloat),
                       b.defined() ? b.to(at::kFloat) : Tensor(), y, o, upstream);
          Grads got = run_flce(&cuda::fused_linear_cross_entropy, x, w, b, y, o, upstream);
          got.dx = got.dx.to(at::kFloat);
          got.dw = got.dw.to(at::kFloat);
          if (got.db.defined()) got.db = got.db.to(at::kFloat);
          if (dtype == at::kFloat) {
            compare("fp32", got, want, 1e-4, 1e-4);  // TF32 is off: fp32 GEMMs
          } else {
            compare("bf16", got, want, 5e-2, 2e-2);
          }
        }
      }
    }
  }
}

TEST_CASE(
    "cuda fused_linear_cross_entropy with a frozen weight (LoRA's head): the same input gradient, "
    "no weight gradient") {
  if (!have_gpu()) return;
  torch::manual_seed(14);
  const at::Device gpu(at::kCUDA);
  for (const auto mode : {FlceMode::speed, FlceMode::lean}) {
    for (const double chunk_mb :
         {0.05, 64.0}) {  // many chunks (the fp32 buffer path) and one chunk
      INFO((mode == FlceMode::speed ? "speed" : "lean") << ", chunk_mb " << chunk_mb);
      const Tensor x = torch::randn({131, 72}, gpu).to(at::kBFloat16);
      const Tensor w = (torch::randn({3001, 72}, gpu) * 0.05).to(at::kBFloat16);
      const Tensor y = make_labels(131, 3001, gpu);
      FusedLinearCrossEntropyOptions o;
      o.chunk_mb = chunk_mb;
      o.mode = mode;
      const Grads both = run_flce(&cuda::fused_linear_cross_entropy, x, w, Tensor(), y, o,
                                  torch::full({}, 1.0, gpu));
      Tensor xl = x.clone().requires_grad_(true);
      const Tensor frozen = w.clone();  // requires no grad
      cuda::fused_linear_cross_entropy(xl, frozen, Tensor(), y, o).backward();
      CHECK_FALSE(frozen.grad().defined());
      CHECK(
          torch::equal(xl.grad(), both.dx));  // the same GEMMs for the input gradient, bit for bit
    }
  }
}

TEST_CASE("cuda fused_linear_cross_entropy: 4 micro-batches equal one batch (sum / global count)") {
  if (!have_gpu()) return;
  torch::manual_seed(13);
  const at::Device gpu(at::kCUDA);
  const int64_t n = 96, h = 64, v = 5000;
  const Tensor x = torch::randn({n, h}, gpu);
  const Tensor w = torch::randn({v, h}, gpu) * 0.05;
  const Tensor y = make_labels(n, v, gpu);
  const double count = y.ne(-100).sum().item<double>();
  for (const auto mode : {FlceMode::speed, FlceMode::lean}) {
    FusedLinearCrossEntropyOptions o;
    o.ce.reduction = Reduction::sum;
    o.chunk_mb = 0.3;
    o.mode = mode;
    Tensor w_one = w.clone().requires_grad_(true);
    (cuda::fused_linear_cross_entropy(x, w_one, Tensor(), y, o) / count).backward();
    Tensor w_acc = w.clone().requires_grad_(true);
    Tensor total = torch::zeros({}, gpu);
    for (int64_t i = 0; i < 4; ++i) {
      Tensor part = cuda::fused_linear_cross_entropy(x.narrow(0, i * 24, 24), w_acc, Tensor(),
                                                     y.narrow(0, i * 24, 24), o) /
                    count;
      part.backward();
      total += part.detach();
    }
    const auto c = closeness("grad_weight", w_acc.grad(), w_one.grad(), 1e-6, 1e-5);
    INFO(c.report);
    CHECK(c.ok);
  }
}

TEST_CASE("cuda fused_linear_cross_entropy without grad computes the loss only") {
  if (!have_gpu()) return;
  const at::Device gpu(at::kCUDA);
  const Tensor x = torch::randn({33, 40}, gpu), w = torch::randn({700, 40}, gpu) * 0.1;
  const Tensor y = make_labels(33, 700, gpu);
  FusedLinearCrossEntropyOptions o;
  Tensor with_grad_x = x.clone().requires_grad_(true);
  const Tensor expected = cuda::fused_linear_cross_entropy(with_grad_x, w, Tensor(), y, o).detach();
  torch::NoGradGuard no_grad;
  const auto c = closeness("loss", cuda::fused_linear_cross_entropy(x, w, Tensor(), y, o), expected,
                           1e-6, 1e-6);
  INFO(c.report);
  CHECK(c.ok);
}

TEST_CASE(
    "cuda losses: an inverse_normalizer tensor gives exactly the double normalizer's result") {
  // The CUDA-graph step's 1 / count lives in device memory; the kernels read
  // the mean scale through a pointer either way, so the results are bitwise equal.
  if (!have_gpu()) return;
  torch::manual_seed(17);
  const at::Device gpu(at::kCUDA);
  const int64_t n = 80, h = 64, v = 3000;
  const Tensor x = torch::randn({n, h}, gpu).to(at::kBFloat16);
  const Tensor w = (torch::randn({v, h}, gpu) * 0.05).to(at::kBFloat16);
  const Tensor y = make_labels(n, v, gpu);
  CrossEntropyOptions by_double;
  by_double.normalizer = 123.0;
  CrossEntropyOptions by_tensor;
  by_tensor.inverse_normalizer =
      torch::full({}, 1.0 / 123.0, at::TensorOptions().dtype(at::kFloat).device(gpu));
  // cross entropy on logits
  const Tensor logits = x.matmul(w.t());
  Tensor la = logits.clone().requires_grad_(true), lb = logits.clone().requires_grad_(true);
  Tensor ea = cuda::cross_entropy(la, y, by_double), eb = cuda::cross_entropy(lb, y, by_tensor);
  ea.backward();
  eb.backward();
  CHECK(torch::equal(ea, eb));
  CHECK(torch::equal(la.grad(), lb.grad()));
  for (const auto mode : {FlceMode::speed, FlceMode::lean}) {
    INFO("mode " << (mode == FlceMode::speed ? "speed" : "lean"));
    FusedLinearCrossEntropyOptions fd, ft;
    fd.ce = by_double;
    ft.ce = by_tensor;
    fd.chunk_mb = ft.chunk_mb = 0.2;
    fd.mode = ft.mode = mode;
    Tensor xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
    Tensor wa = w.clone().requires_grad_(true), wb = w.clone().requires_grad_(true);
    Tensor a = cuda::fused_linear_cross_entropy(xa, wa, Tensor(), y, fd);
    Tensor b = cuda::fused_linear_cross_entropy(xb, wb, Tensor(), y, ft);
    a.backward();
    b.backward();
    CHECK(torch::equal(a, b));
    CHECK(torch::equal(xa.grad(), xb.grad()));
    CHECK(torch::equal(wa.grad(), wb.grad()));
    // And it is the scale that is read: another count changes the loss.
    FusedLinearCrossEntropyOptions other = ft;
    other.ce.inverse_normalizer = by_tensor.inverse_normalizer * 2.0;
    at::NoGradGuard no_grad;
    CHECK_FALSE(
        torch::equal(cuda::fused_linear_cross_entropy(x, w, Tensor(), y, other), a.detach()));
  }
}
