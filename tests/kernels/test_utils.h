// Helpers for the kernel tests: run an op forward and backward on fresh
// leaves, and compare tensors with explicit tolerances, printing the worst
// error on failure.
#pragma once

#include "tests/catch.h"

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace liger::kernels::test {

using torch::Tensor;

// The tensors here are small: one intra-op thread is fastest, and it stays
// fast when other jobs keep the machine's cores busy (OpenMP barriers across
// oversubscribed cores spin for a long time).
inline const bool kOneIntraOpThread = [] {
  torch::set_num_threads(1);
  return true;
}();

// allclose-style check |a - b| <= atol + rtol * |b| (b is the expected value),
// evaluated in fp64. The report names the worst element when it fails.
struct Closeness {
  bool ok = true;
  std::string report;
};

inline Closeness closeness(const std::string& what, const Tensor& actual, const Tensor& expected,
                           double atol, double rtol) {
  std::ostringstream out;
  Closeness c;
  if (actual.defined() != expected.defined()) {
    c.ok = false;
    out << what << ": one side is undefined (actual " << actual.defined() << ", expected "
        << expected.defined() << ")";
    c.report = out.str();
    return c;
  }
  if (!actual.defined()) return c;
  if (actual.sizes() != expected.sizes()) {
    c.ok = false;
    out << what << ": shape " << actual.sizes() << " vs expected " << expected.sizes();
    c.report = out.str();
    return c;
  }
  if (actual.scalar_type() != expected.scalar_type()) {
    c.ok = false;
    out << what << ": dtype " << actual.scalar_type() << " vs expected " << expected.scalar_type();
    c.report = out.str();
    return c;
  }
  const Tensor a = actual.detach().to(torch::kCPU, torch::kDouble);
  const Tensor e = expected.detach().to(torch::kCPU, torch::kDouble);
  if (a.numel() == 0) return c;
  const Tensor err = (a - e).abs();
  const Tensor excess = err - (atol + rtol * e.abs());
  const int64_t worst = excess.flatten().argmax().item<int64_t>();
  const double max_abs = err.max().item<double>();
  const double max_rel = (err / e.abs().clamp_min(1e-12)).max().item<double>();
  c.ok = excess.flatten()[worst].item<double>() <= 0.0 && !a.isnan().any().item<bool>();
  out << what << ": max |err| " << max_abs << ", max rel " << max_rel << ", worst element #"
      << worst << ": " << a.flatten()[worst].item<double>() << " vs expected "
      << e.flatten()[worst].item<double>() << " (atol " << atol << ", rtol " << rtol
      << ", max |expected| " << e.abs().max().item<double>() << ")";
  c.report = out.str();
  return c;
}

#define LIGER_CHECK_CLOSE(what, actual, expected, atol, rtol)                            \
  do {                                                                                   \
    const auto liger_c =                                                                 \
        ::liger::kernels::test::closeness((what), (actual), (expected), (atol), (rtol)); \
    INFO(liger_c.report);                                                                \
    CHECK(liger_c.ok);                                                                   \
  } while (0)

struct Tolerance {
  double atol;
  double rtol;
};

// Outputs and input gradients of one forward + backward.
struct Run {
  std::vector<Tensor> outputs;
  std::vector<Tensor> grads;  // one per input; undefined where not asked for
};

using OpFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

// Runs `fn` on fresh leaf copies of `inputs` (requires_grad where `wants_grad`
// says so) and back-propagates upstream gradients drawn from `seed` (the same
// for every backend and dtype: drawn in fp32, rounded to bf16, then cast to
// each output's dtype).
inline Run run_op(const OpFn& fn, const std::vector<Tensor>& inputs,
                  const std::vector<bool>& wants_grad, uint64_t seed = 1234) {
  std::vector<Tensor> leaves;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor leaf = inputs[i].defined() ? inputs[i].detach().clone() : Tensor();
    if (leaf.defined() && i < wants_grad.size() && wants_grad[i]) leaf.requires_grad_(true);
    leaves.push_back(leaf);
  }
  Run run;
  run.outputs = fn(leaves);
  std::vector<Tensor> outs, ups;
  torch::manual_seed(seed);
  for (const Tensor& out : run.outputs) {
    // Rounded through bf16 so that every dtype sees the same upstream values.
    const Tensor up =
        torch::randn(out.sizes(), out.options().dtype(torch::kFloat)).to(torch::kBFloat16);
    if (!out.requires_grad()) continue;
    outs.push_back(out);
    ups.push_back(up.to(out.scalar_type()));
  }
  if (!outs.empty()) torch::autograd::backward(outs, ups);
  for (const Tensor& leaf : leaves) {
    run.grads.push_back(leaf.defined() && leaf.requires_grad() ? leaf.grad() : Tensor());
  }
  return run;
}

// Compares every output and gradient of two runs.
inline void check_runs(const std::string& what, const Run& actual, const Run& expected,
                       Tolerance out_tol, Tolerance grad_tol,
                       const std::vector<std::string>& input_names) {
  REQUIRE(actual.outputs.size() == expected.outputs.size());
  for (size_t i = 0; i < actual.outputs.size(); ++i) {
    LIGER_CHECK_CLOSE(what + " output " + std::to_string(i), actual.outputs[i], expected.outputs[i],
                      out_tol.atol, out_tol.rtol);
  }
  REQUIRE(actual.grads.size() == expected.grads.size());
  for (size_t i = 0; i < actual.grads.size(); ++i) {
    const std::string name = i < input_names.size() ? input_names[i] : std::to_string(i);
    LIGER_CHECK_CLOSE(what + " grad " + name, actual.grads[i], expected.grads[i], grad_tol.atol,
                      grad_tol.rtol);
  }
}

// bf16 check against an fp32 "truth" (the reference run in fp32 on the same,
// bf16-representable, inputs). The reference itself is not exact in bf16
// (e.g. ATen's bf16 layer_norm sums the weight gradient in bf16), so for each
// tensor the composite must
//   1. be within `tol` of the truth, the absolute part scaled by the tensor's
//      size: |actual - truth| <= tol.atol * max|truth| + tol.rtol * |truth|;
//   2. be about as accurate as the reference in bf16:
//      max|actual - truth| <= 2 max|reference - truth| + 2^-8 max|truth|
//      (2x: the composite may round once more, e.g. cross entropy stores
//      d_logits in bf16 before scaling them by grad_output).
inline void check_runs_bf16(const std::string& what, const Run& actual, const Run& reference,
                            const Run& truth, Tolerance out_tol, Tolerance grad_tol,
                            const std::vector<std::string>& input_names) {
  auto check_one = [&](const std::string& name, const Tensor& a, const Tensor& r, const Tensor& t,
                       Tolerance tol) {
    REQUIRE(a.defined() == t.defined());
    if (!a.defined()) return;
    const Tensor t64 = t.detach().to(torch::kCPU, torch::kDouble);
    const double scale = t64.numel() > 0 ? t64.abs().max().item<double>() : 0.0;
    LIGER_CHECK_CLOSE(name + " vs fp32 truth", a, t.to(a.scalar_type()), tol.atol * scale,
                      tol.rtol);
    const double err_actual =
        (a.detach().to(torch::kCPU, torch::kDouble) - t64).abs().max().item<double>();
    const double err_reference =
        (r.detach().to(torch::kCPU, torch::kDouble) - t64).abs().max().item<double>();
    const double slack = std::ldexp(scale, -8);
    INFO(name << ": max error vs fp32 truth: composite " << err_actual << ", reference "
              << err_reference << " (slack " << slack << ")");
    CHECK(err_actual <= 2.0 * err_reference + slack);
  };
  REQUIRE(actual.outputs.size() == truth.outputs.size());
  for (size_t i = 0; i < actual.outputs.size(); ++i) {
    check_one(what + " output " + std::to_string(i), actual.outputs[i], reference.outputs[i],
              truth.outputs[i], out_tol);
  }
  REQUIRE(actual.grads.size() == truth.grads.size());
  for (size_t i = 0; i < actual.grads.size(); ++i) {
    const std::string name = i < input_names.size() ? input_names[i] : std::to_string(i);
    check_one(what + " grad " + name, actual.grads[i], reference.grads[i], truth.grads[i],
              grad_tol);
  }
}

// Composite vs reference on `inputs` (all of one float dtype, or undefined):
// in fp32 directly with `fp32_tol`; in bf16 through check_runs_bf16 with
// `bf16_out_tol` / `bf16_grad_tol`.
inline void compare_backends(const std::string& what, const OpFn& reference, const OpFn& composite,
                             const std::vector<Tensor>& inputs, const std::vector<bool>& wants_grad,
                             const std::vector<std::string>& input_names, Tolerance fp32_tol,
                             Tolerance bf16_out_tol, Tolerance bf16_grad_tol) {
  INFO(what);
  const Run actual = run_op(composite, inputs, wants_grad);
  const Run expected = run_op(reference, inputs, wants_grad);
  const bool fp32 = inputs.front().scalar_type() == torch::kFloat;
  if (fp32) {
    check_runs(what, actual, expected, fp32_tol, fp32_tol, input_names);
    return;
  }
  std::vector<Tensor> upcast;
  for (const Tensor& t : inputs) upcast.push_back(t.defined() ? t.to(torch::kFloat) : Tensor());
  const Run truth = run_op(reference, upcast, wants_grad);
  check_runs_bf16(what, actual, expected, truth, bf16_out_tol, bf16_grad_tol, input_names);
}

// The what() of the exception `fn` throws, or "" when it throws none.
template <typename Fn>
std::string thrown_message(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

inline std::string dtype_name(torch::ScalarType t) {
  return c10::toString(t);
}

// True on a CUDA device; otherwise records that `tests` were skipped here.
inline bool have_cuda_device(const char* tests) {
  if (torch::cuda::is_available()) return true;
  WARN("no CUDA device: the " << tests << " are skipped here (they run on the GPU machine)");
  return false;
}

}  // namespace liger::kernels::test
