// The normalizer contract: 'mean' with options.normalizer = C equals the sum
// divided by C, in value and gradient, for the reference and composite
// cross entropy and fused linear cross entropy (the trainer's exact
// gradient accumulation relies on it).
#include "kernels/composite/composite.h"
#include "kernels/reference/reference.h"
#include "tests/catch.h"
#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

using namespace liger::kernels;
using liger::kernels::test::closeness;

TEST_CASE("mean with a normalizer equals sum / normalizer, values and gradients") {
  torch::manual_seed(5);
  const int64_t n = 23, h = 16, v = 97;
  const Tensor x = torch::randn({n, h}), w = torch::randn({v, h}) * 0.1;
  Tensor y = torch::randint(0, v, {n}, at::kLong);
  y.index_put_({torch::indexing::Slice(0, 7)}, -100);
  const double normalizer = 61.0;  // e.g. the whole accumulated batch's count, not this one's
  CrossEntropyOptions sum;
  sum.reduction = Reduction::sum;
  sum.label_smoothing = 0.05;
  CrossEntropyOptions mean = sum;
  mean.reduction = Reduction::mean;
  mean.normalizer = normalizer;

  struct Backend {
    const char* name;
    CrossEntropyFn ce;
    FusedLinearCrossEntropyFn flce;
  };
  for (const auto& b :
       {Backend{"reference", &reference::cross_entropy, &reference::fused_linear_cross_entropy},
        Backend{"composite", &composite::cross_entropy, &composite::fused_linear_cross_entropy}}) {
    INFO(b.name);
    // cross entropy on logits
    Tensor la = (x.matmul(w.t())).detach().requires_grad_(true),
           lb = la.detach().clone().requires_grad_(true);
    Tensor expected = b.ce(la, y, sum) / normalizer;
    Tensor actual = b.ce(lb, y, mean);
    expected.backward();
    actual.backward();
    CHECK(closeness("ce loss", actual.detach(), expected.detach(), 1e-6, 1e-6).ok);
    CHECK(closeness("ce grad", lb.grad(), la.grad(), 1e-7, 1e-5).ok);
    // fused linear cross entropy
    Tensor wa = w.clone().requires_grad_(true), wb = w.clone().requires_grad_(true);
    FusedLinearCrossEntropyOptions fs, fm;
    fs.ce = sum;
    fm.ce = mean;
    fs.chunk_mb = fm.chunk_mb = 0.01;  // several chunks
    Tensor e2 = b.flce(x, wa, Tensor(), y, fs) / normalizer;
    Tensor a2 = b.flce(x, wb, Tensor(), y, fm);
    e2.backward();
    a2.backward();
    CHECK(closeness("flce loss", a2.detach(), e2.detach(), 1e-6, 1e-6).ok);
    const auto c = closeness("flce grad_weight", wb.grad(), wa.grad(), 1e-7, 1e-5);
    INFO(c.report);
    CHECK(c.ok);
  }
}

TEST_CASE("mean with an inverse_normalizer tensor equals the normalizer it holds") {
  // The CUDA-graph step passes 1 / count as a device scalar; every backend
  // must give the loss and gradients of the double normalizer.
  torch::manual_seed(6);
  const int64_t n = 19, h = 8, v = 53;
  const Tensor x = torch::randn({n, h}), w = torch::randn({v, h}) * 0.1;
  Tensor y = torch::randint(0, v, {n}, at::kLong);
  y.index_put_({torch::indexing::Slice(0, 5)}, -100);
  const double normalizer = 37.0;
  CrossEntropyOptions by_double;
  by_double.reduction = Reduction::mean;
  by_double.z_loss_scale = 1e-3;
  by_double.normalizer = normalizer;
  CrossEntropyOptions by_tensor = by_double;
  by_tensor.normalizer = 0.0;
  by_tensor.inverse_normalizer = torch::full({}, 1.0 / normalizer, at::kFloat);
  CrossEntropyOptions wrong = by_tensor;  // the test can tell: another count
  wrong.inverse_normalizer = torch::full({}, 1.0 / 36.0, at::kFloat);

  struct Backend {
    const char* name;
    CrossEntropyFn ce;
    FusedLinearCrossEntropyFn flce;
  };
  for (const auto& b :
       {Backend{"reference", &reference::cross_entropy, &reference::fused_linear_cross_entropy},
        Backend{"composite", &composite::cross_entropy, &composite::fused_linear_cross_entropy}}) {
    INFO(b.name);
    Tensor la = x.matmul(w.t()).detach().requires_grad_(true),
           lb = la.detach().clone().requires_grad_(true);
    Tensor expected = b.ce(la, y, by_double), actual = b.ce(lb, y, by_tensor);
    expected.backward();
    actual.backward();
    CHECK(closeness("ce loss", actual.detach(), expected.detach(), 1e-6, 1e-6).ok);
    CHECK(closeness("ce grad", lb.grad(), la.grad(), 1e-7, 1e-6).ok);
    CHECK_FALSE(closeness("ce loss, another count", b.ce(la.detach(), y, wrong), expected.detach(),
                          1e-6, 1e-6)
                    .ok);
    Tensor wa = w.clone().requires_grad_(true), wb = w.clone().requires_grad_(true);
    FusedLinearCrossEntropyOptions fd, ft;
    fd.ce = by_double;
    ft.ce = by_tensor;
    fd.chunk_mb = ft.chunk_mb = 0.005;  // several chunks
    Tensor e2 = b.flce(x, wa, Tensor(), y, fd), a2 = b.flce(x, wb, Tensor(), y, ft);
    e2.backward();
    a2.backward();
    CHECK(closeness("flce loss", a2.detach(), e2.detach(), 1e-6, 1e-6).ok);
    CHECK(closeness("flce grad_weight", wb.grad(), wa.grad(), 1e-7, 1e-6).ok);
  }
}
