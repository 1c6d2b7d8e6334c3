// The composite MoE block and its grouped GEMMs: against the reference (HF's
// loop over experts) in fp32, with aligned sizes (at::_grouped_mm as is),
// awkward ones (padded), an expert that receives no token, and top-1; in
// bf16 and fp16 at 128 experts, top 8, against an fp32 run of the reference
// (the GPU test's inputs and tolerances); the grouped GEMMs against a loop of
// plain matrix products.
#include "kernels/composite/composite.h"
#include "kernels/grouped_mm.h"
#include "kernels/moe_routing.h"
#include "kernels/reference/reference.h"
#include "tests/catch.h"
#include "tests/kernels/moe_inputs.h"
#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

namespace ref = liger::kernels::reference;
namespace comp = liger::kernels::composite;
using liger::kernels::test::check_runs;
using liger::kernels::test::check_runs_bf16;
using liger::kernels::test::describe;
using liger::kernels::test::kMoeFp32;
using liger::kernels::test::kMoeHalfSum;
using liger::kernels::test::kMoeInputNames;
using liger::kernels::test::MoeShape;
using liger::kernels::test::OpFn;
using liger::kernels::test::Run;
using liger::kernels::test::run_op;
using liger::kernels::test::Tolerance;
using torch::Tensor;

namespace {

// x [N, H] and a router [E, H] whose logits keep every pair of experts at
// least 1 apart (x's first E columns: 2 x a permutation of 0..E-1, read
// through an identity block; the rest adds under 0.5), so both backends pick
// the same experts. `skip`: no token routes to that expert (its column of x
// is pushed far down), or -1.
std::vector<Tensor> moe_inputs(const MoeShape& s, int64_t skip) {
  Tensor x = torch::randn({s.tokens, s.hidden});
  for (int64_t i = 0; i < s.tokens; ++i) {
    x.index_put_({i, torch::indexing::Slice(0, s.experts)},
                 2.0 * torch::randperm(s.experts).to(torch::kFloat));
  }
  if (skip >= 0) x.select(1, skip).fill_(-100.0);
  Tensor router = torch::randn({s.experts, s.hidden}) * 0.02;
  router.narrow(1, 0, s.experts).copy_(torch::eye(s.experts));
  return {x, router, torch::randn({s.experts, 2 * s.ffn, s.hidden}) * 0.2,
          torch::randn({s.experts, s.hidden, s.ffn}) * 0.2};
}

OpFn moe_through(liger::kernels::MoeFn moe, int64_t top_k) {
  return [moe, top_k](const std::vector<Tensor>& in) {
    const auto out = moe(in[0], in[1], in[2], in[3], top_k);
    return std::vector<Tensor>{out.y, out.router_logits, out.experts.to(torch::kFloat)};
  };
}

void check_moe(const MoeShape& s, int64_t skip) {
  INFO("tokens " << s.tokens << " hidden " << s.hidden << " ffn " << s.ffn << " experts "
                 << s.experts << " top_k " << s.top_k << " skip " << skip);
  const std::vector<Tensor> in = moe_inputs(s, skip);
  const std::vector<bool> grads = {true, true, true, true};
  const Run expected = run_op(moe_through(&ref::moe, s.top_k), in, grads);
  const Run actual = run_op(moe_through(&comp::moe, s.top_k), in, grads);
  check_runs("composite moe", actual, expected, kMoeFp32, kMoeFp32, kMoeInputNames);
  if (skip >= 0) {
    // The expert nobody chose gets exactly zero gradients.
    CHECK(actual.grads[2][skip].abs().max().item<double>() == 0.0);
    CHECK(actual.grads[3][skip].abs().max().item<double>() == 0.0);
  }
  // A gradient that vanished everywhere would pass the comparison above.
  for (const Tensor& g : actual.grads) CHECK(g.abs().max().item<double>() > 0.0);
}

}  // namespace

TEST_CASE("composite moe matches HF's loop over experts, values and gradients", "[moe]") {
  torch::manual_seed(7);
  SECTION("aligned sizes: at::_grouped_mm as is") {
    check_moe({16, 32, 24, 4, 2}, -1);
  }
  SECTION("awkward sizes: padded operands") {
    check_moe({13, 22, 13, 5, 2}, -1);
  }
  SECTION("an expert nobody chose") {
    check_moe({11, 20, 12, 5, 2}, 3);
  }
  SECTION("top-1 and top-all") {
    check_moe({9, 16, 8, 3, 1}, -1);
    check_moe({9, 16, 8, 3, 3}, -1);
  }
}

TEST_CASE("the 16-bit moe inputs route as in fp32, weights within 2^-8", "[moe]") {
  // The 16-bit logits are rounded (x's dtype, as HF's); softmax turns a
  // logit's error d into a relative error e^d - 1 of its weight. Inputs whose
  // chosen logits sit near 254 (bf16 rounds them to integers) failed here.
  const MoeShape s{300, 256, 96, 128, 8};
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    torch::manual_seed(22);
    INFO(describe(s, -1, dtype));
    const std::vector<Tensor> in = liger::kernels::test::moe_inputs(s, -1, dtype, torch::kCPU);
    const liger::kernels::Routing half = liger::kernels::route_tokens(in[0], in[1], s.top_k);
    // cast: the same (16-bit representable) inputs in fp32: the truth's routing
    const liger::kernels::Routing full =
        liger::kernels::route_tokens(in[0].to(torch::kFloat), in[1].to(torch::kFloat), s.top_k);
    CHECK(torch::equal(half.experts, full.experts));
    const double max_diff = (half.weights - full.weights).abs().max().item<double>();
    INFO("routing weights: max |16-bit - fp32| " << max_diff);
    CHECK(max_diff <= std::ldexp(1.0, -8));
  }
}

TEST_CASE("composite moe in bf16 and fp16 at 128 experts, top 8, against the fp32 truth", "[moe]") {
  // The GPU test's inputs and tolerances (test_cuda_moe.cpp), on the CPU: the
  // reference itself must pass them, or the inputs, not the backends, are
  // being measured; the composite must pass them and be about as accurate.
  const MoeShape s{300, 256, 96, 128, 8};
  const std::vector<bool> grads = {true, true, true, true};
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    torch::manual_seed(22);
    INFO(describe(s, -1, dtype));
    const std::vector<Tensor> in = liger::kernels::test::moe_inputs(s, -1, dtype, torch::kCPU);
    const Run actual = run_op(moe_through(&comp::moe, s.top_k), in, grads);
    const Run reference = run_op(moe_through(&ref::moe, s.top_k), in, grads);
    std::vector<Tensor> upcast;
    for (const Tensor& t : in) upcast.push_back(t.to(torch::kFloat));
    const Run truth = run_op(moe_through(&ref::moe, s.top_k), upcast, grads);
    // (Against itself, check_runs_bf16's second check holds trivially; the first is the point.)
    check_runs_bf16("reference", reference, reference, truth, kMoeHalfSum, kMoeHalfSum,
                    kMoeInputNames);
    check_runs_bf16("composite", actual, reference, truth, kMoeHalfSum, kMoeHalfSum,
                    kMoeInputNames);
    CHECK(torch::equal(actual.outputs[2], reference.outputs[2]));  // the same experts
    // A gradient that vanished everywhere would pass the comparisons above.
    for (const Tensor& g : actual.grads) CHECK(g.abs().max().item<double>() > 0.0);
  }
}

TEST_CASE("grouped GEMMs match a loop of matrix products", "[moe]") {
  torch::manual_seed(8);
  for (const int64_t k : {8, 7}) {
    for (const int64_t n : {12, 5}) {
      INFO("k " << k << " n " << n);
      // Groups of 3, 0, 6 and 2 rows.
      const Tensor ends = torch::tensor({3, 3, 9, 11}, torch::kInt);
      const Tensor a = torch::randn({11, k});
      const Tensor b = torch::randn({4, n, k}).transpose(1, 2);  // [4, k, n], a transposed view
      const Tensor out = liger::kernels::grouped_mm(a, b, ends);
      const Tensor c = torch::randn({11, n});
      const Tensor per_group = liger::kernels::grouped_mm_per_group(a, c, ends);
      int64_t start = 0;
      for (int64_t g = 0; g < 4; ++g) {
        const int64_t end = ends[g].item<int64_t>();
        const Tensor rows_a = a.slice(0, start, end);
        if (end > start) {
          CHECK(torch::allclose(out.slice(0, start, end), rows_a.mm(b[g]), 1e-5, 1e-5));
        }
        CHECK(torch::allclose(per_group[g], rows_a.t().mm(c.slice(0, start, end)), 1e-5, 1e-5));
        start = end;
      }
      CHECK(per_group[1].abs().max().item<double>() == 0.0);
    }
  }
}
