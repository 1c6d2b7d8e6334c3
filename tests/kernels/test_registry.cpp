// The kernel registry: which backend serves each op, and the errors it raises.
#include "kernels/registry.h"
#include "tests/catch.h"
#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

#include <algorithm>
#include <stdexcept>

using liger::kernels::Backend;
using liger::kernels::KernelSet;
using liger::kernels::KernelToggles;
using liger::kernels::Op;
using liger::kernels::resolve_kernels;
using liger::kernels::test::thrown_message;

namespace {

const Op kToggled[] = {
    Op::rms_norm, Op::add_rms_norm, Op::layer_norm, Op::rope,
    Op::rope_qkv, Op::swiglu,       Op::geglu,      Op::fused_linear_cross_entropy,
    Op::attention};

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

const c10::Device kCpu(c10::kCPU);
const c10::Device kCuda(c10::kCUDA);  // resolving only looks at the type

}  // namespace

TEST_CASE("registry names", "[registry]") {
  CHECK(std::string(liger::kernels::backend_name(Backend::composite)) == "composite");
  CHECK(std::string(liger::kernels::op_name(Op::fused_linear_cross_entropy)) ==
        "fused_linear_cross_entropy");
  CHECK(std::string(liger::kernels::op_name(Op::add_rms_norm)) == "add_rms_norm");
  const KernelToggles off = KernelToggles::all_off();
  CHECK_FALSE(off.rms_norm);
  CHECK_FALSE(off.fused_linear_cross_entropy);
  CHECK_FALSE(off.cross_entropy);
  CHECK_FALSE(off.strict);
}

TEST_CASE("registry on CPU", "[registry]") {
  SECTION("toggles on: composite, not a fallback") {
    const KernelSet set = resolve_kernels(KernelToggles{}, kCpu, torch::kBFloat16);
    for (Op op : kToggled) {
      INFO(liger::kernels::op_name(op));
      CHECK(set.backend(op) == Backend::composite);
    }
    CHECK(set.backend(Op::cross_entropy) == Backend::reference);  // off by default
    CHECK(set.use_fused_linear_cross_entropy());
    REQUIRE(set.selections().size() == static_cast<size_t>(liger::kernels::kNumOps));
    for (const auto& s : set.selections()) {
      INFO(s.describe());
      CHECK_FALSE(s.fallback);
      CHECK_FALSE(s.reason.empty());
    }
    CHECK(contains(set.selections()[0].describe(), "rms_norm: composite (fused toggle on"));
    CHECK(contains(set.selections()[static_cast<int>(Op::attention)].describe(),
                   "attention: composite (fused toggle on"));
  }

  SECTION("kernels.attention off: the reference's attention, the other ops unchanged") {
    KernelToggles t;
    t.attention = false;
    const KernelSet set = resolve_kernels(t, kCpu, torch::kFloat);
    CHECK(set.backend(Op::attention) == Backend::reference);
    CHECK(set.backend(Op::rms_norm) == Backend::composite);
    CHECK(set.selections()[static_cast<int>(Op::attention)].describe() ==
          "attention: reference (toggle off)");
  }

  SECTION("toggles off: reference") {
    const KernelSet set = resolve_kernels(KernelToggles::all_off(), kCpu, torch::kFloat);
    for (const auto& s : set.selections()) {
      INFO(s.describe());
      CHECK(s.backend == Backend::reference);
      CHECK_FALSE(s.fallback);
    }
    CHECK(set.selections()[0].describe() == "rms_norm: reference (toggle off)");
    CHECK_FALSE(set.use_fused_linear_cross_entropy());
  }

  SECTION("cross_entropy instead of fused linear cross entropy") {
    KernelToggles t;
    t.fused_linear_cross_entropy = false;
    t.cross_entropy = true;
    const KernelSet set = resolve_kernels(t, kCpu, torch::kFloat);
    CHECK(set.backend(Op::cross_entropy) == Backend::composite);
    CHECK(set.backend(Op::fused_linear_cross_entropy) == Backend::reference);
    CHECK_FALSE(set.use_fused_linear_cross_entropy());
  }

  SECTION("strict on CPU is fine: composite is what a CPU toggle asks for") {
    KernelToggles t;
    t.strict = true;
    CHECK_NOTHROW(resolve_kernels(t, kCpu, torch::kFloat));
  }

  SECTION("the table has one line per op") {
    const KernelSet set = resolve_kernels(KernelToggles{}, kCpu, torch::kFloat);
    const std::string table = liger::kernels::format_selection_table(set);
    INFO(table);
    CHECK(std::count(table.begin(), table.end(), '\n') == liger::kernels::kNumOps - 1);
    CHECK(contains(table, "rope: composite"));
    CHECK(contains(table, "add_rms_norm: composite"));
  }
}

TEST_CASE("registry errors", "[registry]") {
  SECTION("cross_entropy and fused_linear_cross_entropy both on") {
    KernelToggles t;
    t.cross_entropy = true;
    t.fused_linear_cross_entropy = true;
    CHECK_THROWS_AS(resolve_kernels(t, kCpu, torch::kFloat), std::invalid_argument);
    const std::string message = thrown_message([&] { resolve_kernels(t, kCpu, torch::kFloat); });
    INFO(message);
    CHECK(contains(message, "kernels.cross_entropy"));
    CHECK(contains(message, "kernels.fused_linear_cross_entropy"));
  }

  SECTION("a non-float compute dtype") {
    CHECK_THROWS_AS(resolve_kernels(KernelToggles{}, kCpu, torch::kLong), std::invalid_argument);
  }
}

TEST_CASE("registry on a CUDA device (resolved without touching a GPU)", "[registry]") {
  SECTION("not strict: cuda where it has a kernel, else composite marked fallback") {
    const KernelSet set = resolve_kernels(KernelToggles{}, kCuda, torch::kBFloat16);
    for (Op op : kToggled) {
      const auto& s = set.selections()[static_cast<int>(op)];
      INFO(s.describe());
      CHECK(s.op == op);
      if (s.backend == Backend::cuda) {  // CUDA builds (see test_cuda_kernels.cpp)
        CHECK_FALSE(s.fallback);
        continue;
      }
      CHECK(s.backend == Backend::composite);
      CHECK(s.fallback);
      CHECK((contains(s.reason, "no cuda kernel for this op yet") ||
             contains(s.reason, "built without CUDA")));
      CHECK(contains(s.describe(), "fallback"));
    }
    // Toggles that are off are not fallbacks.
    CHECK_FALSE(set.selections()[static_cast<int>(Op::cross_entropy)].fallback);
  }

  SECTION("strict: the first fallback is an error naming the op and the fix") {
    // float64 has no cuda kernel (and builds without CUDA have none at all),
    // so the first toggled op, rms_norm, falls back.
    KernelToggles t;
    t.strict = true;
    CHECK_THROWS_AS(resolve_kernels(t, kCuda, torch::kDouble), std::runtime_error);
    const std::string message = thrown_message([&] { resolve_kernels(t, kCuda, torch::kDouble); });
    INFO(message);
    CHECK(contains(message, "kernels.strict: rms_norm wanted cuda but"));
    CHECK(contains(message, "set kernels.strict: false"));
  }

  SECTION("strict with every toggle off: nothing falls back") {
    KernelToggles t = KernelToggles::all_off();
    t.strict = true;
    CHECK_NOTHROW(resolve_kernels(t, kCuda, torch::kBFloat16));
  }
}

TEST_CASE("KernelSet::reference serves every op from reference", "[registry]") {
  const KernelSet set = KernelSet::reference();
  for (const auto& s : set.selections()) {
    INFO(s.describe());
    CHECK(s.backend == Backend::reference);
  }
  CHECK_FALSE(set.use_fused_linear_cross_entropy());
  // The set is callable end to end.
  torch::manual_seed(13);
  const torch::Tensor x = torch::randn({2, 3, 8});
  CHECK(set.rms_norm(x, torch::ones({8}), {}).sizes() == x.sizes());
  const torch::Tensor q = torch::randn({1, 4, 2, 8});
  CHECK(set.attention(q, q, q, {}).sizes() == q.sizes());
}

TEST_CASE("a resolved set calls the chosen backend", "[registry]") {
  // composite and reference agree, so check the call goes through at all and
  // keeps gradients.
  const KernelSet set = resolve_kernels(KernelToggles{}, kCpu, torch::kFloat);
  torch::manual_seed(14);
  const torch::Tensor h = torch::randn({5, 8}, torch::requires_grad());
  const torch::Tensor w = torch::randn({13, 8}, torch::requires_grad());
  const torch::Tensor labels = torch::tensor({1, 2, -100, 4, 12}, torch::kLong);
  const torch::Tensor loss = set.fused_linear_cross_entropy(h, w, {}, labels, {});
  loss.backward();
  CHECK(h.grad().defined());
  CHECK(w.grad().defined());
}

TEST_CASE("rope_qkv follows the rope toggle", "[registry]") {
  const auto selection = [](const KernelSet& set, Op op) {
    return set.selections()[static_cast<int>(op)];
  };
  const KernelSet on = resolve_kernels(KernelToggles{}, kCpu, torch::kFloat);
  CHECK(on.backend(Op::rope_qkv) == Backend::composite);
  CHECK(contains(selection(on, Op::rope_qkv).describe(),
                 "rope_qkv: composite (fused toggle kernels.rope on"));
  KernelToggles t;
  t.rope = false;
  const KernelSet off = resolve_kernels(t, kCpu, torch::kFloat);
  CHECK(off.backend(Op::rope_qkv) == Backend::reference);
  CHECK(off.backend(Op::rms_norm) == Backend::composite);
  CHECK(selection(off, Op::rope_qkv).describe() == "rope_qkv: reference (toggle kernels.rope off)");
  for (const KernelSet* set : {&on, &off}) {
    torch::manual_seed(16);
    const torch::Tensor qkv = torch::randn({1, 3, 6, 8});
    const torch::Tensor cos = torch::ones({1, 3, 8}), sin = torch::zeros({1, 3, 8});
    const auto out = set->rope_qkv(qkv, 4, 1, cos, sin);  // cos 1, sin 0: the identity
    CHECK(torch::equal(out.q, qkv.narrow(2, 0, 4)));
    CHECK(torch::equal(out.k, qkv.narrow(2, 4, 1)));
    CHECK(torch::equal(out.v, qkv.narrow(2, 5, 1)));
  }
}

TEST_CASE("add_rms_norm follows the rms_norm toggle and is in the table", "[registry]") {
  const auto selection = [](const KernelSet& set, Op op) {
    return set.selections()[static_cast<int>(op)];
  };
  SECTION("on: the backend of rms_norm, logged with the toggle it follows") {
    const KernelSet set = resolve_kernels(KernelToggles{}, kCpu, torch::kFloat);
    CHECK(set.backend(Op::add_rms_norm) == Backend::composite);
    const auto s = selection(set, Op::add_rms_norm);
    INFO(s.describe());
    CHECK(s.op == Op::add_rms_norm);
    CHECK_FALSE(s.fallback);
    CHECK(contains(s.describe(), "add_rms_norm: composite (fused toggle kernels.rms_norm on"));
  }
  SECTION("kernels.rms_norm off: reference, the other ops unchanged") {
    KernelToggles t;
    t.rms_norm = false;
    const KernelSet set = resolve_kernels(t, kCpu, torch::kFloat);
    CHECK(set.backend(Op::rms_norm) == Backend::reference);
    CHECK(set.backend(Op::add_rms_norm) == Backend::reference);
    CHECK(set.backend(Op::layer_norm) == Backend::composite);
    CHECK(selection(set, Op::add_rms_norm).describe() ==
          "add_rms_norm: reference (toggle kernels.rms_norm off)");
  }
  SECTION("on a CUDA device: the same backend as rms_norm; a fallback names the toggle") {
    for (const auto dtype : {torch::kBFloat16, torch::kDouble}) {
      const KernelSet set = resolve_kernels(KernelToggles{}, kCuda, dtype);
      INFO(dtype);
      CHECK(set.backend(Op::add_rms_norm) == set.backend(Op::rms_norm));
      CHECK(selection(set, Op::add_rms_norm).fallback == selection(set, Op::rms_norm).fallback);
    }
    // float64 has no cuda kernel (and builds without CUDA have none at all).
    const KernelSet set = resolve_kernels(KernelToggles{}, kCuda, torch::kDouble);
    const auto s = selection(set, Op::add_rms_norm);
    INFO(s.describe());
    CHECK(s.backend == Backend::composite);
    CHECK(contains(s.describe(), "add_rms_norm: composite (fallback, wanted cuda: "));
  }
  SECTION("the reference set serves it from reference, callable end to end") {
    const KernelSet set = KernelSet::reference();
    CHECK(set.backend(Op::add_rms_norm) == Backend::reference);
    torch::manual_seed(15);
    const torch::Tensor x = torch::randn({2, 3, 8}), r = torch::randn({2, 3, 8});
    const auto [y, s] = set.add_rms_norm(x, r, torch::ones({8}), {});
    CHECK(torch::equal(s, x + r));
    CHECK(y.sizes() == x.sizes());
  }
}

TEST_CASE(
    "add_rms_norm equals the add and the rms_norm of the resolved backend, values and "
    "gradients",
    "[registry]") {
  const c10::Device cpu(c10::kCPU);
  for (const bool on : {false, true}) {
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      INFO((on ? "toggles on" : "toggles off") << ", " << dtype);
      const liger::kernels::KernelToggles toggles =
          on ? liger::kernels::KernelToggles{} : liger::kernels::KernelToggles::all_off();
      const auto set = liger::kernels::resolve_kernels(toggles, cpu, dtype);
      torch::manual_seed(4);
      const at::Tensor x0 = torch::randn({3, 5, 64}).to(dtype),
                       r0 = torch::randn({3, 5, 64}).to(dtype);
      const at::Tensor w0 = (1 + 0.1 * torch::randn({64})).to(dtype),
                       dy = torch::randn({3, 5, 64}).to(dtype),
                       ds = torch::randn({3, 5, 64}).to(dtype);
      liger::kernels::RmsNormOptions options;
      options.eps = 1e-5;
      at::Tensor x = x0.clone().requires_grad_(true), r = r0.clone().requires_grad_(true),
                 w = w0.clone().requires_grad_(true);
      const auto [y, s] = set.add_rms_norm(x, r, w, options);
      at::Tensor xe = x0.clone().requires_grad_(true), re = r0.clone().requires_grad_(true),
                 we = w0.clone().requires_grad_(true);
      const at::Tensor se = xe + re;
      const at::Tensor ye = set.rms_norm(se, we, options);
      CHECK(torch::equal(s, se));
      CHECK(torch::equal(y, ye));
      // Both outputs carry gradients (the norm's and the residual stream's).
      torch::autograd::backward({y, s}, {dy, ds});
      torch::autograd::backward({ye, se}, {dy, ds});
      CHECK(torch::equal(x.grad(), xe.grad()));
      CHECK(torch::equal(r.grad(), re.grad()));
      CHECK(torch::equal(w.grad(), we.grad()));
    }
  }
}

TEST_CASE("registry: the tuned_gemm toggle", "[registry]") {
  SECTION("off by default: ATen's mm, not a fallback") {
    const KernelSet set = resolve_kernels(KernelToggles{}, kCpu, torch::kFloat);
    const auto& s = set.selections()[static_cast<int>(Op::tuned_gemm)];
    CHECK(s.describe() == "tuned_gemm: reference (toggle off)");
    CHECK_FALSE(s.fallback);
  }
  SECTION("on, on a CPU: the reference, marked as a fallback; an error under strict") {
    KernelToggles t;
    t.tuned_gemm = true;
    const KernelSet set = resolve_kernels(t, kCpu, torch::kFloat);
    const auto& s = set.selections()[static_cast<int>(Op::tuned_gemm)];
    INFO(s.describe());
    CHECK(s.backend == Backend::reference);
    CHECK(s.fallback);
    t.strict = true;
    const std::string message = thrown_message([&] { resolve_kernels(t, kCpu, torch::kFloat); });
    INFO(message);
    CHECK(contains(message, "kernels.strict: tuned_gemm wanted cuda"));
    CHECK(contains(message, "kernels.tuned_gemm: false"));
  }
  SECTION("the set's matmul is a @ b (+ c)") {
    const KernelSet set = resolve_kernels(KernelToggles{}, kCpu, torch::kFloat);
    torch::manual_seed(15);
    const torch::Tensor a = torch::randn({4, 3}), b = torch::randn({3, 5}),
                        c = torch::randn({4, 5});
    CHECK(torch::allclose(set.matmul(a, b), torch::mm(a, b)));
    CHECK(torch::allclose(set.matmul(a, b, c), torch::addmm(c, a, b)));
  }
}
