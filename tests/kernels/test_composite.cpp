// The composite backend against the reference: values and gradients, fp32
// (tight) and bf16 (loose), odd sizes.
#include "kernels/composite/composite.h"
#include "kernels/reference/reference.h"
#include "tests/catch.h"
#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

namespace ref = liger::kernels::reference;
namespace comp = liger::kernels::composite;
using liger::kernels::CrossEntropyOptions;
using liger::kernels::FusedLinearCrossEntropyOptions;
using liger::kernels::Reduction;
using liger::kernels::RmsNormCasting;
using liger::kernels::RmsNormOptions;
using liger::kernels::test::check_runs;
using liger::kernels::test::compare_backends;
using liger::kernels::test::dtype_name;
using liger::kernels::test::OpFn;
using liger::kernels::test::Run;
using liger::kernels::test::run_op;
using liger::kernels::test::Tolerance;
using torch::Tensor;

namespace {

// fp32: both sides do the same math in a different order.
constexpr Tolerance kFp32{1e-5, 1e-5};
// bf16, against the fp32 truth (see check_runs_bf16; atol is relative to the
// largest magnitude of the tensor): a bf16 rounding or two (2^-8 each).
constexpr Tolerance kBf16{1e-2, 1e-2};
// bf16 sums over many rows (weight/bias gradients): the rounding of the terms
// adds up, relative to the size of the terms rather than of the sum.
constexpr Tolerance kBf16Sum{2e-2, 2e-2};

const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::mean: return "mean";
    case Reduction::sum: return "sum";
    case Reduction::none: return "none";
  }
  return "?";
}

// HF-style cos/sin: [1, T, D] from cat(freqs, freqs), fp32.
std::pair<Tensor, Tensor> rope_tables(int64_t t, int64_t d, double base = 10000.0) {
  const Tensor inv_freq =
      1.0 / torch::pow(base, torch::arange(0, d, 2, torch::kDouble) / static_cast<double>(d));
  const Tensor freqs = torch::arange(t, torch::kDouble).unsqueeze(1) * inv_freq.unsqueeze(0);
  const Tensor emb = torch::cat({freqs, freqs}, -1).unsqueeze(0);
  return {emb.cos().to(torch::kFloat), emb.sin().to(torch::kFloat)};
}

// Labels in [0, V) with every `ignore_every`-th one set to -100 (0: none).
Tensor make_labels(int64_t n, int64_t vocab, int64_t ignore_every) {
  Tensor labels = torch::randint(vocab, {n}, torch::kLong);
  if (ignore_every > 0) labels.index_put_({torch::arange(0, n, ignore_every)}, -100);
  return labels;
}

}  // namespace

TEST_CASE("composite rms_norm matches reference", "[composite][rms_norm]") {
  struct Mode {
    RmsNormCasting casting;
    double offset;
    const char* name;
  };
  const Mode modes[] = {{RmsNormCasting::llama, 0.0, "llama"},
                        {RmsNormCasting::gemma, 1.0, "gemma"},
                        {RmsNormCasting::none, 0.0, "none"},
                        {RmsNormCasting::llama, 1.0, "llama+offset"}};
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (const Mode& mode : modes) {
      torch::manual_seed(0);
      const Tensor x = torch::randn({5, 123, 123}).to(dtype);
      const Tensor w = (torch::randn({123}) * 0.1 + (mode.offset == 0.0 ? 1.0 : 0.0)).to(dtype);
      RmsNormOptions o;
      o.eps = 1e-6;
      o.offset = mode.offset;
      o.casting = mode.casting;
      auto wrap = [&](auto fn) -> OpFn {
        return [fn, o](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{fn(in[0], in[1], o)};
        };
      };
      const std::string what = std::string("rms_norm ") + mode.name + " " + dtype_name(dtype);
      for (auto wants : {std::vector<bool>{true, true}, std::vector<bool>{true, false},
                         std::vector<bool>{false, true}}) {
        // The weight gradient sums 615 rows: fp32 order differences reach ~1e-5 there.
        compare_backends(what, wrap(ref::rms_norm), wrap(comp::rms_norm), {x, w}, wants,
                         {"x", "weight"}, {2e-5, 1e-5}, kBf16, kBf16Sum);
      }
    }
  }
}

TEST_CASE("composite layer_norm matches reference", "[composite][layer_norm]") {
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (bool with_bias : {true, false}) {
      torch::manual_seed(1);
      const Tensor x = (torch::randn({5, 123, 123}) * 2 + 0.5).to(dtype);
      const Tensor w = (torch::randn({123}) * 0.1 + 1.0).to(dtype);
      const Tensor b = with_bias ? (torch::randn({123}) * 0.1).to(dtype) : Tensor();
      auto wrap = [](auto fn) -> OpFn {
        return [fn](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{fn(in[0], in[1], in[2], 1e-5)};
        };
      };
      const std::string what =
          std::string("layer_norm ") + (with_bias ? "bias " : "no bias ") + dtype_name(dtype);
      compare_backends(what, wrap(ref::layer_norm), wrap(comp::layer_norm), {x, w, b},
                       {true, true, true}, {"x", "weight", "bias"}, {5e-5, 1e-5}, kBf16, kBf16Sum);
    }
  }
}

TEST_CASE("composite rope_qkv (packed q|k|v) matches reference", "[composite][rope]") {
  const int64_t b = 2, t = 7, hq = 6, hk = 2, d = 92;
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    torch::manual_seed(4);
    const Tensor qkv = torch::randn({b, t, hq + 2 * hk, d}).to(dtype);
    const auto [cos, sin] = rope_tables(t, d);
    auto wrap = [cos = cos, sin = sin](auto fn) -> OpFn {
      return [fn, cos, sin](const std::vector<Tensor>& in) {
        const auto out = fn(in[0], 6, 2, cos, sin);
        return std::vector<Tensor>{out.q, out.k, out.v};
      };
    };
    compare_backends(std::string("rope_qkv ") + dtype_name(dtype), wrap(ref::rope_qkv),
                     wrap(comp::rope_qkv), {qkv}, {true}, {"qkv"}, kFp32, kBf16, kBf16);
  }
}

TEST_CASE("composite rope matches reference", "[composite][rope]") {
  // head_dim 92, GQA (6 query heads, 2 key/value heads), odd T.
  const int64_t b = 2, t = 7, hq = 6, hk = 2, d = 92;
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (bool per_batch : {false, true}) {
      torch::manual_seed(2);
      const Tensor q = torch::randn({b, t, hq, d}).to(dtype);
      const Tensor k = torch::randn({b, t, hk, d}).to(dtype);
      Tensor cos, sin;
      std::tie(cos, sin) = rope_tables(t, d);
      if (per_batch) {  // [B, T, D] with different positions per sequence
        const auto shifted = rope_tables(t + 3, d);
        cos = torch::cat({cos, shifted.first.narrow(1, 3, t)}, 0);
        sin = torch::cat({sin, shifted.second.narrow(1, 3, t)}, 0);
      }
      auto wrap = [cos, sin](auto fn) -> OpFn {
        return [fn, cos, sin](const std::vector<Tensor>& in) {
          auto [qo, ko] = fn(in[0], in[1], cos, sin);
          return std::vector<Tensor>{qo, ko};
        };
      };
      const std::string what =
          std::string("rope ") + (per_batch ? "[B,T,D] " : "[1,T,D] ") + dtype_name(dtype);
      compare_backends(what, wrap(ref::rope), wrap(comp::rope), {q, k}, {true, true}, {"q", "k"},
                       kFp32, kBf16, kBf16);
    }
  }
  SECTION("only q reaches the loss") {
    torch::manual_seed(3);
    const Tensor q = torch::randn({1, 5, 4, 92}, torch::requires_grad());
    const Tensor k = torch::randn({1, 5, 2, 92}, torch::requires_grad());
    auto [cos, sin] = rope_tables(5, 92);
    auto out = comp::rope(q, k, cos, sin);
    out.first.sum().backward();
    const Tensor q2 = q.detach().clone().requires_grad_(true);
    ref::rope(q2, k.detach(), cos, sin).first.sum().backward();
    LIGER_CHECK_CLOSE("rope q grad", q.grad(), q2.grad(), 1e-6, 1e-6);
    CHECK_FALSE(k.grad().defined());
  }
}

TEST_CASE("composite swiglu and geglu match reference", "[composite][glu]") {
  struct Op {
    const char* name;
    Tensor (*reference)(const Tensor&, const Tensor&);
    Tensor (*composite)(const Tensor&, const Tensor&);
  };
  const Op ops[] = {{"swiglu", &ref::swiglu, &comp::swiglu}, {"geglu", &ref::geglu, &comp::geglu}};
  for (const Op& op : ops) {
    for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
      torch::manual_seed(4);
      const Tensor gate = (torch::randn({3, 37, 257}) * 2).to(dtype);
      const Tensor up = torch::randn({3, 37, 257}).to(dtype);
      auto wrap = [](auto fn) -> OpFn {
        return
            [fn](const std::vector<Tensor>& in) { return std::vector<Tensor>{fn(in[0], in[1])}; };
      };
      const std::string what = std::string(op.name) + " " + dtype_name(dtype);
      for (auto wants : {std::vector<bool>{true, true}, std::vector<bool>{false, true}}) {
        compare_backends(what, wrap(op.reference), wrap(op.composite), {gate, up}, wants,
                         {"gate", "up"}, kFp32, kBf16, kBf16);
      }
    }
  }
}

namespace {

struct CeCase {
  const char* name;
  int64_t ignore_every;  // every k-th label is -100 (0: none, 1: all)
  double label_smoothing;
  double z_loss_scale;
  double softcap;
};

const CeCase kCeCases[] = {
    {"plain", 0, 0.0, 0.0, 0.0},       {"ignored labels", 3, 0.0, 0.0, 0.0},
    {"all ignored", 1, 0.0, 0.0, 0.0}, {"label smoothing", 4, 0.1, 0.0, 0.0},
    {"z-loss", 4, 0.0, 1e-3, 0.0},     {"softcap", 4, 0.0, 0.0, 3.0},
    {"everything", 5, 0.2, 1e-2, 2.0},
};

const Reduction kReductions[] = {Reduction::mean, Reduction::sum, Reduction::none};

CrossEntropyOptions ce_options(const CeCase& c, Reduction reduction) {
  CrossEntropyOptions o;
  o.label_smoothing = c.label_smoothing;
  o.z_loss_scale = c.z_loss_scale;
  o.softcap = c.softcap;
  o.reduction = reduction;
  return o;
}

}  // namespace

TEST_CASE("composite cross_entropy matches reference", "[composite][cross_entropy]") {
  const int64_t n = 37, vocab = 1003;
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (const CeCase& c : kCeCases) {
      for (Reduction reduction : kReductions) {
        torch::manual_seed(5);
        const Tensor logits = (torch::randn({n, vocab}) * 3).to(dtype);
        const Tensor labels = make_labels(n, vocab, c.ignore_every);
        const CrossEntropyOptions o = ce_options(c, reduction);
        auto wrap = [labels, o](auto fn) -> OpFn {
          return [fn, labels, o](const std::vector<Tensor>& in) {
            return std::vector<Tensor>{fn(in[0], labels, o)};
          };
        };
        const std::string what = std::string("cross_entropy ") + c.name + " " +
                                 reduction_name(reduction) + " " + dtype_name(dtype);
        // The loss is fp32 on both sides; bf16 only rounds the logits' gradient.
        compare_backends(what, wrap(ref::cross_entropy), wrap(comp::cross_entropy), {logits},
                         {true}, {"logits"}, {1e-6, 1e-5}, {1e-5, 1e-5}, kBf16);
        const Run actual = run_op(wrap(comp::cross_entropy), {logits}, {true});
        CHECK(actual.outputs[0].scalar_type() == torch::kFloat);
        CHECK(actual.grads[0].scalar_type() == dtype);
        if (c.ignore_every == 1 && reduction != Reduction::none) {
          INFO(what);
          CHECK(actual.outputs[0].item<double>() == 0.0);
          CHECK(actual.grads[0].abs().max().item<double>() == 0.0);
        }
      }
    }
  }
  SECTION("another ignore_index") {
    torch::manual_seed(6);
    const Tensor logits = torch::randn({9, 50}, torch::requires_grad());
    Tensor labels = torch::randint(50, {9}, torch::kLong);
    labels[2] = 7;  // ignore_index 7: this row and any other 7 are ignored
    CrossEntropyOptions o;
    o.ignore_index = 7;
    const Run expected = run_op(
        [&](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{ref::cross_entropy(in[0], labels, o)};
        },
        {logits}, {true});
    const Run actual = run_op(
        [&](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{comp::cross_entropy(in[0], labels, o)};
        },
        {logits}, {true});
    check_runs("ignore_index 7", actual, expected, kFp32, kFp32, {"logits"});
    CHECK(actual.grads[0][2].abs().max().item<double>() == 0.0);
  }
  SECTION("no grad: loss only, same value") {
    torch::manual_seed(7);
    const Tensor logits = torch::randn({11, 99});
    const Tensor labels = make_labels(11, 99, 4);
    const Tensor expected = ref::cross_entropy(logits, labels, {});
    torch::NoGradGuard no_grad;
    const Tensor actual = comp::cross_entropy(logits.requires_grad_(true), labels, {});
    CHECK_FALSE(actual.requires_grad());
    LIGER_CHECK_CLOSE("no-grad loss", actual, expected, 1e-6, 1e-6);
  }
  SECTION("a second backward through the same graph is an error") {
    const Tensor logits = torch::randn({4, 10}, torch::requires_grad());
    const Tensor loss = comp::cross_entropy(logits, torch::tensor({1, 2, 3, 4}), {});
    loss.backward({}, /*retain_graph=*/true);
    const std::string message = liger::kernels::test::thrown_message([&] { loss.backward(); });
    INFO(message);
    CHECK(message.find("backward ran twice") != std::string::npos);
  }
}

TEST_CASE("composite fused_linear_cross_entropy matches reference",
          "[composite][fused_linear_cross_entropy]") {
  const int64_t n = 37, hidden = 64, vocab = 1003;
  // chunk_mb such that a chunk holds `rows` rows of fp32 logits.
  auto mb_for_rows = [&](int64_t rows) { return 4.0 * vocab * rows / (1024.0 * 1024.0); };
  REQUIRE(comp::chunk_rows(mb_for_rows(3), vocab, n) == 3);
  REQUIRE(comp::chunk_rows(256.0, vocab, n) == n);
  REQUIRE(comp::chunk_rows(1e-9, vocab, n) == 1);
  REQUIRE_THROWS(comp::chunk_rows(0.0, vocab, n));

  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (const CeCase& c : kCeCases) {
      for (Reduction reduction : kReductions) {
        for (bool with_bias : {false, true}) {
          for (double chunk_mb : {256.0, mb_for_rows(3)}) {
            torch::manual_seed(8);
            const Tensor h = torch::randn({n, hidden}).to(dtype);
            const Tensor w = (torch::randn({vocab, hidden}) * 0.3).to(dtype);
            const Tensor b = with_bias ? torch::randn({vocab}).to(dtype) : Tensor();
            const Tensor labels = make_labels(n, vocab, c.ignore_every);
            FusedLinearCrossEntropyOptions o;
            o.ce = ce_options(c, reduction);
            o.chunk_mb = chunk_mb;
            auto wrap = [labels, o](auto fn) -> OpFn {
              return [fn, labels, o](const std::vector<Tensor>& in) {
                return std::vector<Tensor>{fn(in[0], in[1], in[2], labels, o)};
              };
            };
            const std::string what = std::string("flce ") + c.name + " " +
                                     reduction_name(reduction) + (with_bias ? " bias" : "") +
                                     (chunk_mb < 1.0 ? " 3-row chunks " : " one chunk ") +
                                     dtype_name(dtype);
            compare_backends(what, wrap(ref::fused_linear_cross_entropy),
                             wrap(comp::fused_linear_cross_entropy), {h, w, b}, {true, true, true},
                             {"hidden", "weight", "bias"}, kFp32, kBf16, kBf16Sum);
            const Run actual =
                run_op(wrap(comp::fused_linear_cross_entropy), {h, w, b}, {true, true, true});

            // Under no_grad the same loss comes back, without a graph.
            torch::NoGradGuard no_grad;
            const Tensor loss = comp::fused_linear_cross_entropy(h, w, b, labels, o);
            CHECK_FALSE(loss.requires_grad());
            LIGER_CHECK_CLOSE(what + " no-grad loss", loss, actual.outputs[0], 0.0, 0.0);
          }
        }
      }
    }
  }
  SECTION("backward twice: an error for mean, a recomputation for none") {
    torch::manual_seed(10);
    const Tensor h = torch::randn({6, 8}, torch::requires_grad());
    const Tensor w = torch::randn({17, 8}, torch::requires_grad());
    const Tensor labels = make_labels(6, 17, 4);
    FusedLinearCrossEntropyOptions o;
    const Tensor mean_loss = comp::fused_linear_cross_entropy(h, w, {}, labels, o);
    mean_loss.backward({}, /*retain_graph=*/true);
    const std::string message = liger::kernels::test::thrown_message([&] { mean_loss.backward(); });
    INFO(message);
    CHECK(message.find("backward ran twice") != std::string::npos);

    o.ce.reduction = Reduction::none;
    const Tensor per_token = comp::fused_linear_cross_entropy(h, w, {}, labels, o);
    h.mutable_grad() = Tensor();
    per_token.sum().backward({}, /*retain_graph=*/true);
    const Tensor first = h.grad().clone();
    per_token.sum().backward();
    LIGER_CHECK_CLOSE("second backward adds the same gradient", h.grad(), first * 2, 1e-6, 1e-6);
  }
  SECTION("only the hidden states need a gradient") {
    torch::manual_seed(9);
    const Tensor h = torch::randn({13, 16});
    const Tensor w = torch::randn({101, 16});
    const Tensor labels = make_labels(13, 101, 5);
    FusedLinearCrossEntropyOptions o;
    o.chunk_mb = 4.0 * 101 * 4 / (1024.0 * 1024.0);  // 4-row chunks
    auto wrap = [&](auto fn) -> OpFn {
      return [fn, labels, o](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{fn(in[0], in[1], Tensor(), labels, o)};
      };
    };
    const Run expected = run_op(wrap(ref::fused_linear_cross_entropy), {h, w}, {true, false});
    const Run actual = run_op(wrap(comp::fused_linear_cross_entropy), {h, w}, {true, false});
    check_runs("flce hidden only", actual, expected, kFp32, kFp32, {"hidden", "weight"});
  }
}

// The same comparisons on a GPU, where there is one (the GPU machine): the
// composite backend must work on any device, and FLCE takes a different
// (mixed-dtype cuBLAS) path there to accumulate the weight gradient in fp32.
TEST_CASE("composite matches reference on CUDA", "[composite][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("no CUDA device: skipped");
    return;
  }
  const auto cuda = torch::Device(torch::kCUDA);
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const std::string suffix = std::string(" cuda ") + dtype_name(dtype);
    torch::manual_seed(20);
    {
      const Tensor x = torch::randn({5, 123, 123}, cuda).to(dtype);
      const Tensor w = (torch::randn({123}, cuda) * 0.1 + 1.0).to(dtype);
      RmsNormOptions o;
      auto wrap = [o](auto fn) -> OpFn {
        return [fn, o](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{fn(in[0], in[1], o)};
        };
      };
      compare_backends("rms_norm" + suffix, wrap(ref::rms_norm), wrap(comp::rms_norm), {x, w},
                       {true, true}, {"x", "weight"}, {2e-5, 1e-5}, kBf16, kBf16Sum);
      auto wrap_ln = [](auto fn) -> OpFn {
        return [fn](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{fn(in[0], in[1], in[2], 1e-5)};
        };
      };
      compare_backends("layer_norm" + suffix, wrap_ln(ref::layer_norm), wrap_ln(comp::layer_norm),
                       {x, w, w * 0.5}, {true, true, true}, {"x", "weight", "bias"}, {5e-5, 1e-5},
                       kBf16, kBf16Sum);
    }
    {
      const Tensor q = torch::randn({2, 7, 6, 92}, cuda).to(dtype);
      const Tensor k = torch::randn({2, 7, 2, 92}, cuda).to(dtype);
      const auto tables = rope_tables(7, 92);
      const Tensor cos = tables.first.to(cuda), sin = tables.second.to(cuda);
      auto wrap = [cos, sin](auto fn) -> OpFn {
        return [fn, cos, sin](const std::vector<Tensor>& in) {
          auto out = fn(in[0], in[1], cos, sin);
          return std::vector<Tensor>{out.first, out.second};
        };
      };
      compare_backends("rope" + suffix, wrap(ref::rope), wrap(comp::rope), {q, k}, {true, true},
                       {"q", "k"}, kFp32, kBf16, kBf16);
    }
    {
      const Tensor gate = torch::randn({3, 37, 257}, cuda).to(dtype);
      const Tensor up = torch::randn({3, 37, 257}, cuda).to(dtype);
      auto wrap = [](auto fn) -> OpFn {
        return
            [fn](const std::vector<Tensor>& in) { return std::vector<Tensor>{fn(in[0], in[1])}; };
      };
      compare_backends("swiglu" + suffix, wrap(ref::swiglu), wrap(comp::swiglu), {gate, up},
                       {true, true}, {"gate", "up"}, kFp32, kBf16, kBf16);
      compare_backends("geglu" + suffix, wrap(ref::geglu), wrap(comp::geglu), {gate, up},
                       {true, true}, {"gate", "up"}, kFp32, kBf16, kBf16);
    }
    for (Reduction reduction : kReductions) {
      const CeCase& c = kCeCases[6];  // everything at once
      const int64_t n = 37, hidden = 64, vocab = 1003;
      const Tensor labels = make_labels(n, vocab, c.ignore_every).to(cuda);
      const CrossEntropyOptions ce = ce_options(c, reduction);
      const Tensor logits = (torch::randn({n, vocab}, cuda) * 3).to(dtype);
      auto wrap = [labels, ce](auto fn) -> OpFn {
        return [fn, labels, ce](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{fn(in[0], labels, ce)};
        };
      };
      compare_backends(std::string("cross_entropy ") + reduction_name(reduction) + suffix,
                       wrap(ref::cross_entropy), wrap(comp::cross_entropy), {logits}, {true},
                       {"logits"}, {1e-6, 1e-5}, {1e-5, 1e-5}, kBf16);

      const Tensor h = torch::randn({n, hidden}, cuda).to(dtype);
      const Tensor w = (torch::randn({vocab, hidden}, cuda) * 0.3).to(dtype);
      const Tensor b = torch::randn({vocab}, cuda).to(dtype);
      FusedLinearCrossEntropyOptions o;
      o.ce = ce;
      o.chunk_mb = 4.0 * vocab * 5 / (1024.0 * 1024.0);  // 5-row chunks
      auto wrap_flce = [labels, o](auto fn) -> OpFn {
        return [fn, labels, o](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{fn(in[0], in[1], in[2], labels, o)};
        };
      };
      compare_backends(std::string("flce ") + reduction_name(reduction) + suffix,
                       wrap_flce(ref::fused_linear_cross_entropy),
                       wrap_flce(comp::fused_linear_cross_entropy), {h, w, b}, {true, true, true},
                       {"hidden", "weight", "bias"}, kFp32, kBf16, kBf16Sum);
    }
  }
}
