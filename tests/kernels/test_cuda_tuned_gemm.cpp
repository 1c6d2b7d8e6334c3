// The tuned GEMM (kernels/cuda/tuned_gemm_op.h) against an fp64 product:
// every layout of a and b (row-major or a transposed view), with and without
// c, c that is out (accumulation in place), an fp32 out of bf16 operands, odd
// sizes and unaligned operands; the shape's second product (the stored plan)
// equal to its first bit for bit; the inputs untouched by the tuning runs;
// one note per tuned shape. Skipped without a CUDA device.
#include "kernels/cuda/tuned_gemm_op.h"
#include "kernels/reference/reference.h"
#include "kernels/registry.h"
#include "tests/catch.h"
#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

#include <string>

using torch::Tensor;

namespace {

bool have_cuda() {
  return liger::kernels::test::have_cuda_device("tuned GEMM tests");
}

// max |got - want| / max |want|, in double
double max_rel(const Tensor& got, const Tensor& want) {
  const Tensor w = want.to(torch::kDouble).cpu();
  const double scale = std::max(w.abs().max().item<double>(), 1e-30);
  return (got.to(torch::kDouble).cpu() - w).abs().max().item<double>() / scale;
}

// An [rows, cols] operand in `dtype` on the GPU, as a row-major tensor or as
// the transposed view of a [cols, rows] one.
Tensor operand(int64_t rows, int64_t cols, bool transposed, torch::ScalarType dtype) {
  const auto o = torch::device(torch::kCUDA).dtype(dtype);
  return transposed ? torch::randn({cols, rows}, o).t() : torch::randn({rows, cols}, o);
}

}  // namespace

TEST_CASE("cuda tuned_gemm matches an fp64 product on every layout", "[cuda][tuned_gemm]") {
  if (!have_cuda()) return;
  torch::manual_seed(41);
  struct Shape {
    int64_t m, n, k;
  };
  for (const Shape s : {Shape{64, 96, 80}, Shape{67, 129, 33}, Shape{256, 512, 1024}}) {
    for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
      for (int layout = 0; layout < 4; ++layout) {
        const bool ta = layout & 1, tb = layout & 2;
        INFO("m " << s.m << " n " << s.n << " k " << s.k << " " << dtype << " a^T " << ta << " b^T "
                  << tb);
        const Tensor a = operand(s.m, s.k, ta, dtype), b = operand(s.k, s.n, tb, dtype);
        const Tensor a0 = a.clone(), b0 = b.clone();
        const Tensor exact = torch::mm(a.to(torch::kDouble), b.to(torch::kDouble));
        // fp32: no TF32, the same sums in another order; bf16: one rounding of the output
        const double tol = dtype == torch::kFloat ? 1e-5 : 1e-2;

        const Tensor first = liger::kernels::cuda::tuned_gemm(a, b, Tensor(), Tensor());
        CHECK(first.scalar_type() == dtype);
        CHECK(first.sizes() == at::IntArrayRef({s.m, s.n}));
        CHECK(max_rel(first, exact) <= tol);
        CHECK(torch::equal(a, a0));
        CHECK(torch::equal(b, b0));
        const Tensor again = liger::kernels::cuda::tuned_gemm(a, b, Tensor(), Tensor());
        CHECK(torch::equal(first, again));  // the stored plan

        // + c, into a new tensor; c untouched
        const Tensor c = torch::randn({s.m, s.n}, torch::device(torch::kCUDA).dtype(dtype));
        const Tensor c0 = c.clone();
        const Tensor with_c = liger::kernels::cuda::tuned_gemm(a, b, c, Tensor());
        CHECK(max_rel(with_c, exact + c0.to(torch::kDouble)) <= tol);
        CHECK(torch::equal(c, c0));

        // accumulate in place: out is c
        Tensor acc = c.clone();
        const Tensor returned = liger::kernels::cuda::tuned_gemm(a, b, acc, acc);
        CHECK(returned.data_ptr() == acc.data_ptr());
        CHECK(max_rel(acc, exact + c0.to(torch::kDouble)) <= tol);

        if (dtype == torch::kBFloat16) {
          // fp32 out of bf16 operands: fp32 accumulation kept (no bf16 rounding)
          Tensor out32 = torch::empty({s.m, s.n}, torch::device(torch::kCUDA).dtype(torch::kFloat));
          liger::kernels::cuda::tuned_gemm(a, b, Tensor(), out32);
          CHECK(max_rel(out32, exact) <= 1e-5);
          Tensor acc32 = c0.to(torch::kFloat);
          liger::kernels::cuda::tuned_gemm(a, b, acc32, acc32);
          CHECK(max_rel(acc32, exact + c0.to(torch::kDouble)) <= 1e-5);
        }
      }
    }
  }
}

TEST_CASE("cuda tuned_gemm: unaligned operands, row slices as out, notes", "[cuda][tuned_gemm]") {
  if (!have_cuda()) return;
  torch::manual_seed(42);
  const auto o = torch::device(torch::kCUDA).dtype(torch::kBFloat16);
  liger::kernels::cuda::take_tuned_gemm_notes();  // start from none
  // Columns 1.. of a wider buffer: the pointer and rows are 2-byte aligned only.
  const Tensor a = torch::randn({48, 65}, o).narrow(1, 1, 64);
  const Tensor b = torch::randn({64, 40}, o);
  const Tensor exact = torch::mm(a.to(torch::kDouble), b.to(torch::kDouble));
  CHECK(max_rel(liger::kernels::cuda::tuned_gemm(a, b, Tensor(), Tensor()), exact) <= 1e-2);
  // out: a block of a wider tensor (row stride 48), rows 8..56 (as the fused loss writes a chunk)
  Tensor big = torch::zeros({64, 48}, o);
  liger::kernels::cuda::tuned_gemm(a, b, Tensor(), big.narrow(0, 8, 48).narrow(1, 0, 40));
  CHECK(max_rel(big.narrow(0, 8, 48).narrow(1, 0, 40), exact) <= 1e-2);
  CHECK(big.narrow(0, 0, 8).abs().max().item<double>() == 0.0);
  CHECK(big.narrow(0, 56, 8).abs().max().item<double>() == 0.0);
  CHECK(big.narrow(1, 40, 8).abs().max().item<double>() == 0.0);
  const std::vector<std::string> notes = liger::kernels::cuda::take_tuned_gemm_notes();
  REQUIRE(notes.size() == 2);  // two shapes (different out row strides)
  for (const std::string& n : notes) {
    INFO(n);
    CHECK(n.find("gemm 48x40x64 NN bf16->bf16") == 0);
    CHECK(n.find(" ms") != std::string::npos);
  }
  CHECK(liger::kernels::cuda::take_tuned_gemm_notes().empty());
}

TEST_CASE("cuda tuned_gemm: what it does not take goes to ATen", "[cuda][tuned_gemm]") {
  if (!have_cuda()) return;
  const auto o = torch::device(torch::kCUDA).dtype(torch::kFloat);
  const Tensor a = torch::randn({8, 4}, o), b = torch::randn({4, 6}, o);
  // a bias row broadcast over the rows (addmm's)
  const Tensor bias = torch::randn({6}, o);
  CHECK(torch::allclose(liger::kernels::cuda::tuned_gemm(a, b, bias, Tensor()),
                        torch::addmm(bias, a, b)));
  // an empty product
  const Tensor e = liger::kernels::cuda::tuned_gemm(torch::randn({8, 0}, o),
                                                    torch::randn({0, 6}, o), Tensor(), Tensor());
  CHECK(e.sizes() == at::IntArrayRef({8, 6}));
  CHECK(e.abs().max().item<double>() == 0.0);
  // fp64 has no cuBLASLt path here
  const Tensor a64 = a.to(torch::kDouble), b64 = b.to(torch::kDouble);
  CHECK(torch::allclose(liger::kernels::cuda::tuned_gemm(a64, b64, Tensor(), Tensor()),
                        torch::mm(a64, b64)));
}

TEST_CASE("cuda tuned_gemm toggle: the registry serves cuda on a CUDA device",
          "[cuda][tuned_gemm][registry]") {
  liger::kernels::KernelToggles t;
  t.tuned_gemm = true;
  const auto set = liger::kernels::resolve_kernels(t, c10::Device(c10::kCUDA, 0), torch::kBFloat16);
  const auto& s = set.selections()[static_cast<int>(liger::kernels::Op::tuned_gemm)];
  INFO(s.describe());
  CHECK(s.backend == liger::kernels::Backend::cuda);
  CHECK_FALSE(s.fallback);
  const auto off = liger::kernels::resolve_kernels(liger::kernels::KernelToggles{},
                                                   c10::Device(c10::kCUDA, 0), torch::kBFloat16);
  CHECK(off.backend(liger::kernels::Op::tuned_gemm) == liger::kernels::Backend::reference);
}
