// The packed projection (models/packed_projection.h) against one
// torch::linear per weight: values and gradients, in fp32 and bf16, with
// only some inputs needing gradients, and inside the model (q, k, v of every
// attention layer come from it).
#include "models/packed_projection.h"
#include "tests/catch.h"
#include "tests/models/model_test_util.h"

#include <torch/torch.h>

using at::Tensor;
using liger::models::test::max_rel;

namespace {

const liger::kernels::KernelSet& reference_kernels() {
  static const liger::kernels::KernelSet set = liger::kernels::KernelSet::reference();
  return set;
}

}  // namespace

TEST_CASE("packed projection: values and gradients equal one linear per weight") {
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    INFO("dtype " << dtype);
    torch::manual_seed(31);
    const Tensor x0 = torch::randn({2, 5, 24}).to(dtype);
    const std::vector<Tensor> w0 = {(0.2 * torch::randn({16, 24})).to(dtype),
                                    (0.2 * torch::randn({4, 24})).to(dtype),
                                    (0.2 * torch::randn({4, 24})).to(dtype)};
    const Tensor dy = torch::randn({2, 5, 24}).to(dtype);

    const Tensor x = x0.clone().requires_grad_(true);
    std::vector<Tensor> w;
    for (const Tensor& t : w0) w.push_back(t.clone().requires_grad_(true));
    const Tensor y = liger::models::packed_projection(reference_kernels(), x, w);
    REQUIRE(y.sizes() == at::IntArrayRef({2, 5, 24}));
    REQUIRE(y.requires_grad());
    y.backward(dy);

    const Tensor xe = x0.clone().requires_grad_(true);
    std::vector<Tensor> we, parts;
    for (const Tensor& t : w0) {
      we.push_back(t.clone().requires_grad_(true));
      parts.push_back(torch::linear(xe, we.back()));
    }
    const Tensor ye = torch::cat(parts, -1);
    ye.backward(dy);

    const double tolerance = dtype == at::kFloat ? 1e-6 : 1e-2;
    CHECK(max_rel(y, ye) <= tolerance);
    CHECK(max_rel(x.grad(), xe.grad()) <= tolerance);
    for (size_t i = 0; i < w.size(); ++i) {
      INFO("weight " << i);
      CHECK(w[i].grad().sizes() == w0[i].sizes());
      CHECK(w[i].grad().scalar_type() == dtype);
      CHECK(max_rel(w[i].grad(), we[i].grad()) <= tolerance);
    }

    SECTION("only one weight needs a gradient") {
      const Tensor w1 = w0[1].clone().requires_grad_(true);
      liger::models::packed_projection(reference_kernels(), x0, {w0[0], w1, w0[2]}).backward(dy);
      CHECK(max_rel(w1.grad(), we[1].grad()) <= tolerance);
    }
    SECTION("one weight: a plain linear layer") {
      const Tensor x1 = x0.clone().requires_grad_(true), w1 = w0[0].clone().requires_grad_(true);
      const Tensor y1 = liger::models::packed_projection(reference_kernels(), x1, {w1});
      const Tensor x2 = x0.clone().requires_grad_(true), w2 = w0[0].clone().requires_grad_(true);
      const Tensor y2 = torch::linear(x2, w2);
      const Tensor dy1 = torch::randn({2, 5, 16}).to(dtype);
      y1.backward(dy1);
      y2.backward(dy1);
      CHECK(y1.sizes() == y2.sizes());
      CHECK(max_rel(y1, y2) <= tolerance);
      CHECK(max_rel(x1.grad(), x2.grad()) <= tolerance);
      CHECK(max_rel(w1.grad(), w2.grad()) <= tolerance);
    }
    SECTION("no gradients wanted: no graph") {
      torch::NoGradGuard no_grad;
      CHECK_FALSE(liger::models::packed_projection(reference_kernels(), x, w).requires_grad());
    }
  }
}

TEST_CASE("packed projection refuses weights that do not fit x") {
  const Tensor x = torch::randn({3, 8});
  auto message = [&](const std::vector<Tensor>& weights) {
    try {
      liger::models::packed_projection(reference_kernels(), x, weights);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string shape = message({torch::randn({4, 8}), torch::randn({4, 7})});
  INFO(shape);
  CHECK(shape.find("packed_projection: weight [4, 7] does not take 8 inputs") != std::string::npos);
  const std::string dtype = message({torch::randn({4, 8}).to(at::kBFloat16)});
  INFO(dtype);
  CHECK(dtype.find("packed_projection: weight is BFloat16 but x is Float") != std::string::npos);
}
