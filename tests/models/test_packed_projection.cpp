// The packed projection (models/packed_projection.h) against one
// torch::linear per weight: values and gradients, in fp32 and bf16, with
// only some inputs needing gradients, with biases (alone and beside LoRA
// adapters on all or some of the weights), and inside the model (q, k, v of
// every attention layer come from it).
#include "models/lora_operands.h"
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

TEST_CASE("packed projection with biases: values and gradients equal linear(x, W_i, b_i)") {
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    // none: biases only; all / some: LoRA adapters on every weight, or on q and v.
    for (const char* adapters : {"none", "all", "some"}) {
      INFO("dtype " << dtype << ", adapters " << adapters);
      torch::manual_seed(37);
      const Tensor x0 = torch::randn({2, 5, 24}).to(dtype);
      const std::vector<int64_t> rows = {16, 4, 4};
      std::vector<Tensor> w0, b0, a0, lb0;
      for (const int64_t out : rows) {
        w0.push_back((0.2 * torch::randn({out, 24})).to(dtype));
        b0.push_back(torch::randn({out}).to(dtype));  // as large as the products: a lost bias shows
        a0.push_back((0.3 * torch::randn({3, 24})).to(dtype));
        lb0.push_back((0.3 * torch::randn({out, 3})).to(dtype));
      }
      const Tensor dy = torch::randn({2, 5, 24}).to(dtype);
      const double scaling = 1.5;
      auto has_adapter = [&](size_t i) {
        return std::string(adapters) == "all" || (std::string(adapters) == "some" && i != 1);
      };

      const Tensor x = x0.clone().requires_grad_(true);
      std::vector<Tensor> w, b;
      for (size_t i = 0; i < rows.size(); ++i) {
        w.push_back(w0[i].clone().requires_grad_(true));
        b.push_back(b0[i].clone().requires_grad_(true));
      }
      liger::models::LoraOperands lora;
      lora.scaling = scaling;
      for (size_t i = 0; i < rows.size(); ++i) {
        lora.a.push_back(has_adapter(i) ? a0[i] : Tensor());
        lora.b.push_back(has_adapter(i) ? lb0[i] : Tensor());
      }
      const bool adapted = std::string(adapters) != "none";
      const Tensor y =
          liger::models::packed_projection(reference_kernels(), x, w, adapted ? &lora : nullptr, b);
      y.backward(dy);

      const Tensor xe = x0.clone().requires_grad_(true);
      std::vector<Tensor> we, be, parts;
      for (size_t i = 0; i < rows.size(); ++i) {
        we.push_back(w0[i].clone().requires_grad_(true));
        be.push_back(b0[i].clone().requires_grad_(true));
        Tensor part = torch::linear(xe, we[i], be[i]);
        if (has_adapter(i)) part = part + torch::linear(torch::linear(xe, a0[i]), lb0[i]) * scaling;
        parts.push_back(part);
      }
      torch::cat(parts, -1).backward(dy);

      const double tolerance = dtype == at::kFloat ? 1e-6 : 1e-2;
      CHECK(max_rel(y, torch::cat(parts, -1).detach()) <= tolerance);
      CHECK(max_rel(x.grad(), xe.grad()) <= tolerance);
      for (size_t i = 0; i < rows.size(); ++i) {
        INFO("weight " << i);
        CHECK(max_rel(w[i].grad(), we[i].grad()) <= tolerance);
        REQUIRE(b[i].grad().defined());
        CHECK(b[i].grad().scalar_type() == dtype);
        CHECK(max_rel(b[i].grad(), be[i].grad()) <= tolerance);
      }
    }
  }
  SECTION("a frozen bias gets no gradient, the others still do") {
    const Tensor x = torch::randn({3, 8}).requires_grad_(true);
    const Tensor w = torch::randn({4, 8}).requires_grad_(true);
    const Tensor frozen = torch::randn({4});
    liger::models::packed_projection(reference_kernels(), x, {w}, nullptr, {frozen})
        .sum()
        .backward();
    CHECK_FALSE(frozen.grad().defined());
    CHECK(x.grad().defined());
    CHECK(w.grad().defined());
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
  std::string bias;
  try {
    liger::models::packed_projection(reference_kernels(), x, {torch::randn({4, 8})}, nullptr,
                                     {torch::randn({5})});
  } catch (const std::exception& e) {
    bias = e.what();
  }
  INFO(bias);
  CHECK(bias.find("packed_projection: bias [5] Float does not fit weight [4, 8]") !=
        std::string::npos);
}
