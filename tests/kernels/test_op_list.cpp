// Every op of kernels/op_list.h on every backend that serves it here, against
// the reference backend: values and gradients, fp32 (tight) and bf16 (loose,
// against an fp32 run of the reference; see check_runs_bf16). One sample case
// per op, small and awkward (odd sizes, GQA, ignored labels, several chunks),
// with tolerances that hold for each backend (those of the per-backend tests);
// kCases, after the cases, has one per entry of the list, so an op added to the
// list without its case_<op>() does not compile. A backend that gains a
// kernel for an op is compared here without editing this file. The
// thorough per-backend tests stay in test_composite.cpp, test_cuda_*.cpp.
#include "kernels/backend.h"
#include "kernels/op_list.h"
#include "kernels/registry.h"
#include "tests/catch.h"
#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

#include <array>
#include <functional>
#include <set>
#include <string>
#include <vector>

using liger::kernels::AttentionOptions;
using liger::kernels::Backend;
using liger::kernels::BackendProvider;
using liger::kernels::CrossEntropyOptions;
using liger::kernels::FusedLinearCrossEntropyOptions;
using liger::kernels::kAllOps;
using liger::kernels::kNumOps;
using liger::kernels::Op;
using liger::kernels::OpTable;
using liger::kernels::RmsNormOptions;
using liger::kernels::test::compare_backends;
using liger::kernels::test::dtype_name;
using liger::kernels::test::OpFn;
using liger::kernels::test::Run;
using liger::kernels::test::run_op;
using liger::kernels::test::Tolerance;
using torch::Tensor;

namespace {

// bf16 against the fp32 truth, atol relative to the tensor's largest
// magnitude: a bf16 rounding or two (2^-8 each).
constexpr Tolerance kBf16{1e-2, 1e-2};
// bf16 sums over rows (weight and bias gradients): the roundings of the terms add up.
constexpr Tolerance kBf16Sum{2e-2, 2e-2};

// Where a case runs: the dtype of its float inputs, and the device.
struct Target {
  torch::ScalarType dtype;
  torch::Device device;
};

// One sample case of an op: inputs in the target's dtype and device, and the
// op called through one backend's kernels. What is not an input of the
// comparison (labels, cos/sin, options) is captured by `call`.
struct SampleCase {
  std::vector<Tensor> inputs;
  std::vector<bool> wants_grad;  // per input
  std::vector<std::string> input_names;
  std::function<std::vector<Tensor>(const OpTable& kernels, const std::vector<Tensor>& in)> call;
  Tolerance fp32;       // every output and gradient in fp32
  Tolerance bf16_out;   // bf16 outputs (see check_runs_bf16)
  Tolerance bf16_grad;  // bf16 gradients
};

// randn(shape) * scale + shift, drawn in fp32 on the CPU (the same values on
// every device), then cast to the target dtype (bf16: the inputs' one
// rounding) and moved to its device.
Tensor draw(at::IntArrayRef shape, const Target& t, double scale = 1.0, double shift = 0.0) {
  return (torch::randn(shape) * scale + shift).to(t.device, t.dtype);
}

// An upstream-style fp32 constant whose values are bf16-representable, so
// that the bf16 run and its fp32 truth see the same numbers.
Tensor draw_bf16_exact(at::IntArrayRef shape, const Target& t) {
  return torch::randn(shape).to(torch::kBFloat16).to(t.device, torch::kFloat);
}

// Labels in [0, vocab) on the target's device, every 4th one ignored (-100).
Tensor draw_labels(int64_t n, int64_t vocab, const Target& t) {
  Tensor labels = torch::randint(vocab, {n}, torch::kLong);
  labels.index_put_({torch::arange(0, n, 4)}, -100);
  return labels.to(t.device);
}

// HF-style cos/sin [1, T, D] in fp32 (cat(freqs, freqs)).
std::pair<Tensor, Tensor> rope_tables(int64_t t, int64_t d, const Target& target) {
  const Tensor inv_freq =
      1.0 / torch::pow(10000.0, torch::arange(0, d, 2, torch::kDouble) / static_cast<double>(d));
  const Tensor freqs = torch::arange(t, torch::kDouble).unsqueeze(1) * inv_freq.unsqueeze(0);
  const Tensor emb = torch::cat({freqs, freqs}, -1).unsqueeze(0);
  return {emb.cos().to(target.device, torch::kFloat), emb.sin().to(target.device, torch::kFloat)};
}

// Every option of the loss at once; mean over the non-ignored tokens.
CrossEntropyOptions all_loss_options() {
  CrossEntropyOptions o;
  o.label_smoothing = 0.1;
  o.z_loss_scale = 1e-3;
  o.softcap = 20.0;
  return o;
}

// ---------------------------------------------------------------------------
// One case per op of the list: case_<op>(target)
// ---------------------------------------------------------------------------

SampleCase case_rms_norm(const Target& t) {
  torch::manual_seed(101);
  RmsNormOptions o;  // llama casting
  o.eps = 1e-6;
  SampleCase c;
  c.inputs = {draw({3, 5, 67}, t), draw({67}, t, 0.1, 1.0)};
  c.wants_grad = {true, true};
  c.input_names = {"x", "weight"};
  c.call = [o](const OpTable& k, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{k.rms_norm(in[0], in[1], o)};
  };
  c.fp32 = {2e-5, 2e-5};
  c.bf16_out = kBf16;
  c.bf16_grad = kBf16Sum;
  return c;
}

SampleCase case_add_rms_norm(const Target& t) {
  torch::manual_seed(102);
  RmsNormOptions o;  // gemma: offset 1, everything in fp32
  o.eps = 1e-6;
  o.offset = 1.0;
  o.casting = liger::kernels::RmsNormCasting::gemma;
  SampleCase c;
  c.inputs = {draw({3, 5, 67}, t), draw({3, 5, 67}, t), draw({67}, t, 0.1)};
  c.wants_grad = {true, true, true};
  c.input_names = {"x", "residual", "weight"};
  c.call = [o](const OpTable& k, const std::vector<Tensor>& in) {
    const auto [y, s] = k.add_rms_norm(in[0], in[1], in[2], o);
    return std::vector<Tensor>{y, s};
  };
  c.fp32 = {2e-5, 2e-5};
  c.bf16_out = kBf16;
  c.bf16_grad = kBf16Sum;
  return c;
}

SampleCase case_layer_norm(const Target& t) {
  torch::manual_seed(103);
  SampleCase c;
  c.inputs = {draw({3, 5, 67}, t, 2.0, 0.5), draw({67}, t, 0.1, 1.0), draw({67}, t, 0.1)};
  c.wants_grad = {true, true, true};
  c.input_names = {"x", "weight", "bias"};
  c.call = [](const OpTable& k, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{k.layer_norm(in[0], in[1], in[2], 1e-5)};
  };
  c.fp32 = {5e-5, 2e-5};
  c.bf16_out = kBf16;
  c.bf16_grad = kBf16Sum;
  return c;
}

SampleCase case_rope(const Target& t) {
  torch::manual_seed(104);
  const auto [cos, sin] = rope_tables(7, 36, t);
  SampleCase c;
  c.inputs = {draw({2, 7, 6, 36}, t), draw({2, 7, 2, 36}, t)};  // GQA: 6 query, 2 key heads
  c.wants_grad = {true, true};
  c.input_names = {"q", "k"};
  c.call = [cos = cos, sin = sin](const OpTable& k, const std::vector<Tensor>& in) {
    const auto [q_rotated, k_rotated] = k.rope(in[0], in[1], cos, sin);
    return std::vector<Tensor>{q_rotated, k_rotated};
  };
  c.fp32 = {2e-5, 2e-5};
  c.bf16_out = kBf16;
  c.bf16_grad = kBf16;
  return c;
}

SampleCase case_rope_qkv(const Target& t) {
  torch::manual_seed(105);
  const auto [cos, sin] = rope_tables(7, 36, t);
  SampleCase c;
  c.inputs = {draw({2, 7, 6 + 2 * 2, 36}, t)};  // q|k|v: 6 query heads, 2 key/value heads
  c.wants_grad = {true};
  c.input_names = {"qkv"};
  c.call = [cos = cos, sin = sin](const OpTable& k, const std::vector<Tensor>& in) {
    const auto heads = k.rope_qkv(in[0], 6, 2, cos, sin);
    return std::vector<Tensor>{heads.q, heads.k, heads.v};
  };
  c.fp32 = {2e-5, 2e-5};
  c.bf16_out = kBf16;
  c.bf16_grad = kBf16;
  return c;
}

// A GLU and its recomputing backward (the companion kernel): outputs are
// h = glu(gate, up), then {h, d_gate, d_up} recomputed from a fixed dh.
SampleCase glu_case(liger::kernels::GluFn OpTable::*glu,
                    liger::kernels::GluRecomputeFn OpTable::*recompute, const Target& t) {
  SampleCase c;
  c.inputs = {draw({3, 5, 67}, t, 2.0), draw({3, 5, 67}, t)};
  c.wants_grad = {true, true};
  c.input_names = {"gate", "up"};
  const Tensor dh = draw_bf16_exact({3, 5, 67}, t);
  c.call = [glu, recompute, dh](const OpTable& k, const std::vector<Tensor>& in) {
    const Tensor h = (k.*glu)(in[0], in[1]);
    // cast: dh to the inputs' dtype (exact: its values are bf16-representable)
    const auto again = (k.*recompute)(in[0].detach(), in[1].detach(), dh.to(in[0].scalar_type()),
                                      /*overwrite_inputs=*/false);
    return std::vector<Tensor>{h, again.h, again.d_gate, again.d_up};
  };
  c.fp32 = {2e-5, 2e-5};
  c.bf16_out = kBf16;
  c.bf16_grad = kBf16;
  return c;
}

SampleCase case_swiglu(const Target& t) {
  torch::manual_seed(106);
  return glu_case(&OpTable::swiglu, &OpTable::swiglu_recompute, t);
}

SampleCase case_geglu(const Target& t) {
  torch::manual_seed(107);
  return glu_case(&OpTable::geglu, &OpTable::geglu_recompute, t);
}

SampleCase case_cross_entropy(const Target& t) {
  torch::manual_seed(108);
  const int64_t n = 13, vocab = 301;
  SampleCase c;
  c.inputs = {draw({n, vocab}, t, 3.0)};
  c.wants_grad = {true};
  c.input_names = {"logits"};
  const Tensor labels = draw_labels(n, vocab, t);
  const CrossEntropyOptions o = all_loss_options();
  c.call = [labels, o](const OpTable& k, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{k.cross_entropy(in[0], labels, o)};
  };
  // The loss is fp32 math on every backend; bf16 rounds the logits' gradient.
  c.fp32 = {1e-6, 1e-5};
  c.bf16_out = {1e-5, 1e-5};
  c.bf16_grad = kBf16;
  return c;
}

SampleCase case_fused_linear_cross_entropy(const Target& t) {
  torch::manual_seed(109);
  const int64_t n = 13, hidden = 24, vocab = 301;
  SampleCase c;
  c.inputs = {draw({n, hidden}, t), draw({vocab, hidden}, t, 0.3), draw({vocab}, t)};
  c.wants_grad = {true, true, true};
  c.input_names = {"hidden", "weight", "bias"};
  const Tensor labels = draw_labels(n, vocab, t);
  FusedLinearCrossEntropyOptions o;
  o.ce = all_loss_options();
  o.chunk_mb = 4.0 * vocab * 3 / (1024.0 * 1024.0);  // 3 rows of fp32 logits: several chunks
  c.call = [labels, o](const OpTable& k, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{k.fused_linear_cross_entropy(in[0], in[1], in[2], labels, o)};
  };
  c.fp32 = {2e-5, 2e-5};
  c.bf16_out = kBf16;
  c.bf16_grad = kBf16Sum;
  return c;
}

// Plain causal attention (SDPA on every backend) and Gemma 2's sliding layer
// (a window and a softcap: the reference's explicit path, the others' own).
SampleCase case_attention(const Target& t) {
  torch::manual_seed(110);
  AttentionOptions causal;
  AttentionOptions gemma2 = causal;
  gemma2.sliding_window = 3;
  gemma2.softcap = 2.0;
  SampleCase c;
  // GQA: 4 query heads over 2 key/value heads, 7 positions.
  c.inputs = {draw({2, 7, 4, 16}, t, 2.0), draw({2, 7, 2, 16}, t), draw({2, 7, 2, 16}, t)};
  c.wants_grad = {true, true, true};
  c.input_names = {"q", "k", "v"};
  c.call = [causal, gemma2](const OpTable& k, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{k.attention(in[0], in[1], in[2], causal),
                               k.attention(in[0], in[1], in[2], gemma2)};
  };
  c.fp32 = {2e-5, 2e-5};
  c.bf16_out = kBf16;
  c.bf16_grad = kBf16Sum;
  return c;
}

SampleCase case_tuned_gemm(const Target& t) {
  torch::manual_seed(111);
  SampleCase c;
  // x [13, 24] @ W^T with W [19, 24] (b a transposed view, as in a linear
  // layer), plus c [13, 19], or a bias [19] added to every row. No autograd:
  // values only.
  c.inputs = {draw({13, 24}, t), draw({19, 24}, t), draw({13, 19}, t), draw({19}, t)};
  c.wants_grad = {false, false, false, false};
  c.input_names = {"a", "weight", "c", "bias"};
  c.call = [](const OpTable& k, const std::vector<Tensor>& in) {
    return std::vector<Tensor>{k.tuned_gemm(in[0], in[1].t(), in[2], Tensor()),
                               k.tuned_gemm(in[0], in[1].t(), Tensor(), Tensor()),
                               k.tuned_gemm(in[0], in[1].t(), in[3], Tensor())};
  };
  c.fp32 = {1e-4, 1e-5};  // atol: 1e-5 of the largest product (about 10)
  c.bf16_out = kBf16;
  c.bf16_grad = kBf16;
  return c;
}

// ---------------------------------------------------------------------------
// The table: one case per op, in the list's order
// ---------------------------------------------------------------------------

using CaseMaker = SampleCase (*)(const Target& target);

#define LIGER_CASE_OF(op, toggle, Kernel, doc) &case_##op,
const std::array<CaseMaker, kNumOps> kCases = {LIGER_KERNEL_OPS(LIGER_CASE_OF)};
#undef LIGER_CASE_OF

// The op of `sample` through one backend's kernels.
OpFn through(const OpTable& kernels, const SampleCase& sample) {
  return
      [&kernels, call = sample.call](const std::vector<Tensor>& in) { return call(kernels, in); };
}

// Runs the case of `op` at `target` and compares every backend that serves
// it there with the reference. Returns the names of the backends compared.
std::vector<std::string> check_op(Op op, const Target& target) {
  const std::string where = std::string(liger::kernels::op_name(op)) + " on " +
                            target.device.str() + " in " + dtype_name(target.dtype);
  INFO(where);
  const SampleCase sample = kCases[static_cast<int>(op)](target);
  REQUIRE(sample.wants_grad.size() == sample.inputs.size());
  const OpTable& reference = liger::kernels::reference_backend().ops;
  REQUIRE(reference.has(op));

  // The case itself: the reference runs it, and every input that asks for a
  // gradient gets one (a case without gradients would test only values).
  const Run truth = run_op(through(reference, sample), sample.inputs, sample.wants_grad);
  REQUIRE_FALSE(truth.outputs.empty());
  for (size_t i = 0; i < sample.inputs.size(); ++i) {
    INFO("input " << sample.input_names[i]);
    CHECK(truth.grads[i].defined() == sample.wants_grad[i]);
  }

  std::vector<std::string> compared;
  for (const Backend backend : liger::kernels::kAllBackends) {
    if (backend == Backend::reference) continue;
    const BackendProvider* provider = liger::kernels::backend_provider(backend);
    if (provider == nullptr || !provider->ops.has(op)) continue;
    if (!provider->unavailable(op, target.device, target.dtype).empty()) continue;
    compare_backends(std::string(liger::kernels::backend_name(backend)) + " vs reference: " + where,
                     through(reference, sample), through(provider->ops, sample), sample.inputs,
                     sample.wants_grad, sample.input_names, sample.fp32, sample.bf16_out,
                     sample.bf16_grad);
    compared.push_back(liger::kernels::backend_name(backend));
  }
  return compared;
}

}  // namespace

TEST_CASE("the op list: names, toggles and docs", "[op_list]") {
  std::set<std::string> names;
  for (int i = 0; i < kNumOps; ++i) {
    const Op op = kAllOps[i];
    const std::string name = liger::kernels::op_name(op);
    INFO("op #" << i << ": " << name);
    CHECK(static_cast<int>(op) == i);
    CHECK(names.insert(name).second);  // unique
    CHECK_FALSE(std::string(liger::kernels::op_doc(op)).empty());
    // An op without a toggle is served by the reference everywhere.
    if (liger::kernels::toggle_name(op) == nullptr) {
      const auto set = liger::kernels::resolve_kernels(liger::kernels::KernelToggles{},
                                                       c10::Device(c10::kCUDA), c10::kBFloat16);
      CHECK(set.backend(op) == Backend::reference);
      CHECK(set.selections()[i].reason == liger::kernels::op_doc(op));
    }
  }
  CHECK(std::string(liger::kernels::toggle_name(Op::add_rms_norm)) == "rms_norm");
  CHECK(std::string(liger::kernels::toggle_name(Op::rope_qkv)) == "rope");
  CHECK(std::string(liger::kernels::toggle_name(Op::layer_norm)) == "layer_norm");
  CHECK(std::string(liger::kernels::toggle_name(Op::attention)) == "attention");
}

TEST_CASE(
    "every listed op: each backend that serves it here matches the reference, values "
    "and gradients, fp32 and bf16",
    "[op_list]") {
  std::vector<torch::Device> devices = {torch::Device(torch::kCPU)};
  if (liger::kernels::test::have_cuda_device("cuda comparisons of the op list")) {
    devices.push_back(torch::Device(torch::kCUDA));
  }
  if (liger::kernels::cuda_backend() == nullptr) {
    WARN("built without CUDA: the cuda backend is not compared");
  }
  std::string summary;
  for (const Op op : kAllOps) {
    for (const torch::Device& device : devices) {
      for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
        const std::vector<std::string> compared = check_op(op, {dtype, device});
        summary += std::string(liger::kernels::op_name(op)) + " " + device.str() + " " +
                   dtype_name(dtype) + ":";
        for (const std::string& backend : compared) summary += " " + backend;
        if (compared.empty()) summary += " (reference only)";
        summary += "\n";
      }
    }
  }
  INFO("compared:\n" << summary);
  SUCCEED();
}
