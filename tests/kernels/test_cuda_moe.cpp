// The cuda MoE block (kernels/cuda/moe.cpp) on a GPU: the routing layout
// exactly against a stable sort on the CPU; values and the gradients of x,
// the router, gate_up and down against the reference (HF's loop over
// experts: fp32 directly, bf16/fp16 against an fp32 run of it) and against
// the composite (y bitwise where both add a token's rows in the same order);
// awkward sizes, an expert nobody chose, one token, 128 experts with top 8;
// two runs bitwise equal. Without a CUDA device every test says so and passes.
#include "kernels/composite/composite.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/reference/reference.h"
#include "kernels/registry.h"
#include "tests/catch.h"
#include "tests/kernels/moe_inputs.h"
#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

#include <string>
#include <vector>

namespace cuda = liger::kernels::cuda;
namespace comp = liger::kernels::composite;
namespace ref = liger::kernels::reference;
using liger::kernels::test::check_runs_bf16;
using liger::kernels::test::describe;
using liger::kernels::test::dtype_name;
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

// bf16/fp16 against the composite in the same dtype: the same GEMMs, the
// SwiGLU derivative and the sums rounded in another order (a few ulp).
constexpr Tolerance kHalfVsComposite{1e-2, 1e-2};

const c10::Device kCuda(c10::kCUDA);

bool have_cuda() {
  return liger::kernels::test::have_cuda_device("cuda moe tests");
}

// The 16-bit tests' inputs (tests/kernels/moe_inputs.h), on the GPU.
std::vector<Tensor> moe_inputs(const MoeShape& s, int64_t skip, torch::ScalarType dtype) {
  return liger::kernels::test::moe_inputs(s, skip, dtype, kCuda);
}

OpFn moe_through(liger::kernels::MoeFn moe, int64_t top_k) {
  return [moe, top_k](const std::vector<Tensor>& in) {
    const auto out = moe(in[0], in[1], in[2], in[3], top_k);
    // cast: the expert ids as floats (exact), compared like the rest
    return std::vector<Tensor>{out.y, out.router_logits, out.experts.to(torch::kFloat)};
  };
}

double max_abs(const Tensor& t) {
  return t.numel() == 0 ? 0.0 : t.detach().abs().max().to(torch::kDouble).item<double>();
}

// |actual - expected| <= tol.atol * max|expected| + tol.rtol * |expected|, per tensor.
void check_close_scaled(const std::string& what, const Tensor& actual, const Tensor& expected,
                        Tolerance tol) {
  LIGER_CHECK_CLOSE(what, actual, expected, tol.atol * max_abs(expected), tol.rtol);
}

void check_runs_scaled(const std::string& what, const Run& actual, const Run& expected,
                       Tolerance tol) {
  REQUIRE(actual.outputs.size() == expected.outputs.size());
  for (size_t i = 0; i < actual.outputs.size(); ++i) {
    check_close_scaled(what + " output " + std::to_string(i), actual.outputs[i],
                       expected.outputs[i], tol);
  }
  REQUIRE(actual.grads.size() == expected.grads.size());
  for (size_t i = 0; i < actual.grads.size(); ++i) {
    check_close_scaled(what + " grad " + kMoeInputNames[i], actual.grads[i], expected.grads[i],
                       tol);
  }
}

// Whether every output and gradient of the two runs has the same bits.
void check_runs_equal(const std::string& what, const Run& a, const Run& b) {
  REQUIRE(a.outputs.size() == b.outputs.size());
  for (size_t i = 0; i < a.outputs.size(); ++i) {
    INFO(what << " output " << i);
    CHECK(torch::equal(a.outputs[i], b.outputs[i]));
  }
  REQUIRE(a.grads.size() == b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) {
    INFO(what << " grad " << kMoeInputNames[i]);
    CHECK(torch::equal(a.grads[i], b.grads[i]));
  }
}

void check_moe(const MoeShape& s, int64_t skip, torch::ScalarType dtype) {
  const std::string what = describe(s, skip, dtype);
  INFO(what);
  const std::vector<Tensor> in = moe_inputs(s, skip, dtype);
  const std::vector<bool> grads = {true, true, true, true};
  const Run actual = run_op(moe_through(&cuda::moe, s.top_k), in, grads);
  const Run reference = run_op(moe_through(&ref::moe, s.top_k), in, grads);
  const Run composite = run_op(moe_through(&comp::moe, s.top_k), in, grads);

  // Against the reference.
  if (dtype == torch::kFloat) {
    check_runs_scaled("cuda vs reference", actual, reference, kMoeFp32);
  } else {
    std::vector<Tensor> upcast;
    for (const Tensor& t : in) upcast.push_back(t.to(torch::kFloat));
    const Run truth = run_op(moe_through(&ref::moe, s.top_k), upcast, grads);
    check_runs_bf16("cuda vs reference", actual, reference, truth, kMoeHalfSum, kMoeHalfSum,
                    kMoeInputNames);
  }

  // Against the composite: the same routing (logits and experts bitwise), and
  // y bitwise when a token's rows are at most two (its index_add then adds
  // them in either order to the same bits).
  CHECK(torch::equal(actual.outputs[1], composite.outputs[1]));
  CHECK(torch::equal(actual.outputs[2], composite.outputs[2]));
  if (s.top_k <= 2) {
    const Tensor diff =
        (actual.outputs[0].to(torch::kFloat) - composite.outputs[0].to(torch::kFloat));
    INFO("y vs composite: max |diff| " << max_abs(diff));
    CHECK(torch::equal(actual.outputs[0], composite.outputs[0]));
  }
  check_runs_scaled("cuda vs composite", actual, composite,
                    dtype == torch::kFloat ? kMoeFp32 : kHalfVsComposite);

  // A gradient that vanished everywhere would pass the comparisons above.
  for (size_t i = 0; i < actual.grads.size(); ++i) {
    INFO("grad " << kMoeInputNames[i]);
    CHECK(max_abs(actual.grads[i]) > 0.0);
  }
  if (skip >= 0) {
    // The expert nobody chose gets exactly zero weight gradients.
    CHECK(max_abs(actual.grads[2][skip]) == 0.0);
    CHECK(max_abs(actual.grads[3][skip]) == 0.0);
  }
}

// The layout a stable sort of the flat expert ids gives, on the CPU.
cuda::MoeRows expected_rows(const Tensor& experts, int64_t num_experts) {
  const Tensor flat = experts.cpu().reshape({-1});
  cuda::MoeRows rows;
  rows.choice_of_row = std::get<1>(torch::sort(flat, /*stable=*/true, 0, false));
  rows.row_of_choice = torch::empty_like(flat);
  rows.row_of_choice.index_put_({rows.choice_of_row}, torch::arange(flat.numel()));
  rows.row_of_choice = rows.row_of_choice.view(experts.sizes());
  rows.expert_ends = torch::bincount(flat, {}, num_experts).cumsum(0);
  return rows;
}

void check_rows(const Tensor& experts, int64_t num_experts) {
  INFO("choices " << experts.sizes() << " experts " << num_experts);
  const cuda::MoeRows expected = expected_rows(experts, num_experts);
  const cuda::MoeRows actual = cuda::moe_rows(experts.to(kCuda), num_experts);
  CHECK(actual.row_of_choice.scalar_type() == torch::kInt);
  CHECK(actual.choice_of_row.scalar_type() == torch::kInt);
  CHECK(actual.expert_ends.scalar_type() == torch::kInt);
  // cast: int32 to int64 (exact) to compare with the CPU's
  CHECK(torch::equal(actual.row_of_choice.cpu().to(torch::kLong), expected.row_of_choice));
  CHECK(torch::equal(actual.choice_of_row.cpu().to(torch::kLong), expected.choice_of_row));
  CHECK(torch::equal(actual.expert_ends.cpu().to(torch::kLong), expected.expert_ends));
}

// [N, k] distinct experts per token, as the router's top k gives them.
Tensor distinct_experts(int64_t tokens, int64_t top_k, int64_t num_experts) {
  return std::get<1>(torch::rand({tokens, num_experts}).topk(top_k, 1));
}

}  // namespace

TEST_CASE("cuda moe routing layout matches a stable sort", "[cuda][moe]") {
  if (!have_cuda()) return;
  torch::manual_seed(21);
  SECTION("top k of the router: distinct experts per token") {
    check_rows(distinct_experts(37, 2, 5), 5);
    check_rows(distinct_experts(300, 8, 128), 128);
    check_rows(distinct_experts(1, 2, 5), 5);          // one token: three experts empty
    check_rows(distinct_experts(1, 1, 1), 1);          // one choice, one expert
    check_rows(distinct_experts(3000, 8, 64), 64);     // 24000 choices: many tiles, a partial last
    check_rows(distinct_experts(700, 4, 1024), 1024);  // the most experts the scan takes
  }
  SECTION("any ids, repeats included: still stable") {
    check_rows(torch::randint(0, 5, {513, 1}), 5);  // one past a tile of 512
    check_rows(torch::randint(0, 3, {4096, 3}), 3);
    check_rows(torch::full({1000, 2}, 2, torch::kLong), 4);  // every choice on one expert
    Tensor gaps = torch::randint(0, 6, {200, 2});
    gaps.masked_fill_(gaps == 3, 5);  // expert 3 and 6 never chosen
    check_rows(gaps, 7);
  }
}

TEST_CASE("cuda moe matches the reference and the composite, values and gradients", "[cuda][moe]") {
  if (!have_cuda()) return;
  for (const auto dtype : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
    torch::manual_seed(22);
    // 16-byte vectors throughout (H 72, F 40).
    check_moe({37, 72, 40, 5, 2}, -1, dtype);
    // 128 experts, top 8: a token's rows summed in the combine's order.
    check_moe({300, 256, 96, 128, 8}, -1, dtype);
    // An expert nobody chose: an empty group in every GEMM.
    check_moe({37, 72, 40, 5, 2}, 3, dtype);
    // One token: most experts empty.
    check_moe({1, 72, 40, 5, 2}, -1, dtype);
    // Odd sizes: single-element kernels, the grouped GEMMs' padded rows, top 3.
    check_moe({13, 22, 13, 5, 3}, -1, dtype);
  }
}

TEST_CASE("cuda moe takes non-contiguous inputs", "[cuda][moe]") {
  if (!have_cuda()) return;
  torch::manual_seed(23);
  const MoeShape s{29, 40, 24, 6, 2};
  const std::vector<Tensor> in = moe_inputs(s, -1, torch::kBFloat16);
  // x as every other column of a wider tensor: a strided view, copied once.
  Tensor wide = torch::zeros({s.tokens, 2 * s.hidden}, in[0].options());
  wide.slice(1, 0, 2 * s.hidden, 2).copy_(in[0]);
  const Tensor x_view = wide.slice(1, 0, 2 * s.hidden, 2);
  const auto strided = cuda::moe(x_view, in[1], in[2], in[3], s.top_k);
  const auto dense = cuda::moe(in[0], in[1], in[2], in[3], s.top_k);
  CHECK(torch::equal(strided.y, dense.y));
}

TEST_CASE("cuda moe is deterministic: two runs, the same bits", "[cuda][moe]") {
  if (!have_cuda()) return;
  const std::vector<bool> grads = {true, true, true, true};
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    torch::manual_seed(24);
    const MoeShape s{300, 256, 96, 128, 8};
    INFO(describe(s, -1, dtype));
    const std::vector<Tensor> in = moe_inputs(s, -1, dtype);
    const Run first = run_op(moe_through(&cuda::moe, s.top_k), in, grads);
    const Run second = run_op(moe_through(&cuda::moe, s.top_k), in, grads);
    check_runs_equal("two cuda runs", first, second);
  }
}

TEST_CASE("cuda moe is the cuda backend's moe", "[cuda][moe][registry]") {
  // Resolving reads the device type only: no GPU needed.
  for (const auto dtype : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
    const liger::kernels::KernelSet set =
        liger::kernels::resolve_kernels(liger::kernels::KernelToggles{}, kCuda, dtype);
    INFO(dtype_name(dtype));
    CHECK(set.backend(liger::kernels::Op::moe) == liger::kernels::Backend::cuda);
  }
}
