// The reference backend against plain math written out here: rope against a
// hand-written rotate_half on [B, H, T, D] and the rotation by an angle,
// attention (SDPA path vs the explicit masked softmax path, and both against
// a per-query loop), cross entropy against the formula, and the residual
// add + RMSNorm against the add and rms_norm written out.
#include "kernels/reference/reference.h"
#include "tests/catch.h"
#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

namespace ref = liger::kernels::reference;
using liger::kernels::AttentionOptions;
using liger::kernels::CrossEntropyOptions;
using liger::kernels::Reduction;
using liger::kernels::RmsNormCasting;
using liger::kernels::RmsNormOptions;
using torch::Tensor;

TEST_CASE("reference rope_qkv is the split, then rope: values and the packed gradient",
          "[reference][rope]") {
  const int64_t b = 2, t = 5, hq = 4, hk = 2, d = 16;
  torch::manual_seed(11);
  const Tensor qkv0 = torch::randn({b, t, hq + 2 * hk, d});
  const Tensor theta = torch::arange(t, torch::kFloat).unsqueeze(-1) *
                       torch::rand({d / 2});                       // [T, D/2] arbitrary frequencies
  const Tensor emb = torch::cat({theta, theta}, -1).unsqueeze(0);  // [1, T, D]
  const Tensor cos = emb.cos(), sin = emb.sin();

  const Tensor qkv = qkv0.clone().requires_grad_(true);
  const auto out = ref::rope_qkv(qkv, hq, hk, cos, sin);
  // Written out on separate leaves.
  const Tensor q = qkv0.narrow(2, 0, hq).clone().requires_grad_(true);
  const Tensor k = qkv0.narrow(2, hq, hk).clone().requires_grad_(true);
  const Tensor v = qkv0.narrow(2, hq + hk, hk).clone().requires_grad_(true);
  const auto [q_rot, k_rot] = ref::rope(q, k, cos, sin);
  CHECK(torch::equal(out.q, q_rot));
  CHECK(torch::equal(out.k, k_rot));
  CHECK(torch::equal(out.v, v));

  const Tensor dq = torch::randn(q_rot.sizes()), dk = torch::randn(k_rot.sizes()),
               dv = torch::randn(v.sizes());
  torch::autograd::backward({out.q, out.k, out.v}, {dq, dk, dv});
  torch::autograd::backward({q_rot, k_rot, v}, {dq, dk, dv});
  CHECK(torch::equal(qkv.grad(), torch::cat({q.grad(), k.grad(), v.grad()}, 2)));

  SECTION("a head count that does not add up is refused, naming the shape") {
    const std::string message =
        liger::kernels::test::thrown_message([&] { ref::rope_qkv(qkv0, hq, hk + 1, cos, sin); });
    INFO(message);
    CHECK(message.find("rope_qkv: qkv must be [B, T, heads_q + 2 heads_k, D] = [B, T, 10, D], "
                       "got [2, 5, 8, 16]") != std::string::npos);
  }
}

TEST_CASE("reference rope is HF's rotate_half", "[reference][rope]") {
  const int64_t b = 2, t = 5, hq = 4, hk = 2, d = 92;
  torch::manual_seed(10);
  const Tensor q = torch::randn({b, t, hq, d}, torch::kDouble);
  const Tensor k = torch::randn({b, t, hk, d}, torch::kDouble);
  // Per-sequence positions: sequence 1 starts at position 3.
  const Tensor inv_freq = 1.0 / torch::pow(10000.0, torch::arange(0, d, 2, torch::kDouble) / d);
  const Tensor pos = torch::stack(
      {torch::arange(t, torch::kDouble), torch::arange(3, 3 + t, torch::kDouble)});  // [B, T]
  const Tensor theta = pos.unsqueeze(-1) * inv_freq;                                 // [B, T, D/2]
  const Tensor emb = torch::cat({theta, theta}, -1);                                 // [B, T, D]
  const Tensor cos = emb.cos().to(torch::kFloat), sin = emb.sin().to(torch::kFloat);

  // HF on [B, H, T, D]: x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1).
  auto hf = [&](const Tensor& x_bthd) {
    const Tensor x = x_bthd.transpose(1, 2);  // [B, H, T, D]
    const Tensor x1 = x.narrow(-1, 0, d / 2), x2 = x.narrow(-1, d / 2, d / 2);
    const Tensor rotated = torch::cat({-x2, x1}, -1);
    const Tensor c = cos.to(torch::kDouble).unsqueeze(1), s = sin.to(torch::kDouble).unsqueeze(1);
    return (x * c + rotated * s).transpose(1, 2);
  };
  // The same as a rotation of the pairs (x_i, x_{i+D/2}) by theta_i.
  auto rotation = [&](const Tensor& x_bthd) {
    const Tensor x1 = x_bthd.narrow(-1, 0, d / 2), x2 = x_bthd.narrow(-1, d / 2, d / 2);
    const Tensor c = theta.cos().unsqueeze(2), s = theta.sin().unsqueeze(2);  // [B, T, 1, D/2]
    return torch::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1);
  };

  const auto [q_out, k_out] = ref::rope(q, k, cos, sin);
  LIGER_CHECK_CLOSE("q vs HF", q_out, hf(q), 1e-12, 1e-12);
  LIGER_CHECK_CLOSE("k vs HF", k_out, hf(k), 1e-12, 1e-12);
  // cos/sin went through fp32, so the angle form agrees to fp32 precision.
  LIGER_CHECK_CLOSE("q vs rotation", q_out, rotation(q), 1e-6, 1e-6);
  LIGER_CHECK_CLOSE("k vs rotation", k_out, rotation(k), 1e-6, 1e-6);

  SECTION("cos/sin are cast to the input dtype") {
    const auto out = ref::rope(q.to(torch::kBFloat16), k.to(torch::kBFloat16), cos, sin);
    CHECK(out.first.scalar_type() == torch::kBFloat16);
    CHECK(out.second.scalar_type() == torch::kBFloat16);
  }
}

namespace {

// Attention written as a loop over queries, in fp64: query i sees keys j with
// (not causal or j <= i) and (no window or i - j < window); GQA maps query
// head h to key/value head h / (Hq / Hk).
Tensor attention_loop(const Tensor& q, const Tensor& k, const Tensor& v,
                      const AttentionOptions& o) {
  const int64_t b = q.size(0), t = q.size(1), hq = q.size(2), hk = k.size(2), d = q.size(3);
  const double scale = o.scale > 0.0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(d));
  const Tensor qd = q.to(torch::kDouble), kd = k.to(torch::kDouble), vd = v.to(torch::kDouble);
  Tensor out = torch::zeros({b, t, hq, d}, torch::kDouble);
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t h = 0; h < hq; ++h) {
      const int64_t kv = h / (hq / hk);
      for (int64_t i = 0; i < t; ++i) {
        std::vector<int64_t> keys;
        for (int64_t j = 0; j < t; ++j) {
          if (o.causal && j > i) continue;
          if (o.sliding_window > 0 && i - j >= o.sliding_window) continue;
          keys.push_back(j);
        }
        const Tensor idx = torch::tensor(keys, torch::kLong);
        const Tensor ks = kd[bi].index_select(0, idx).select(1, kv);  // [n, D]
        const Tensor vs = vd[bi].index_select(0, idx).select(1, kv);
        Tensor s = ks.matmul(qd[bi][i][h]) * scale;  // [n]
        if (o.softcap > 0.0) s = torch::tanh(s / o.softcap) * o.softcap;
        out[bi][i][h] = torch::softmax(s, 0).matmul(vs);
      }
    }
  }
  return out;
}

}  // namespace

TEST_CASE("reference attention: SDPA, explicit path and a plain loop agree",
          "[reference][attention]") {
  const int64_t b = 2, t = 9, hq = 4, hk = 2, d = 12;
  torch::manual_seed(11);
  const Tensor q = torch::randn({b, t, hq, d});
  const Tensor k = torch::randn({b, t, hk, d});
  const Tensor v = torch::randn({b, t, hk, d});

  for (bool causal : {true, false}) {
    AttentionOptions o;
    o.causal = causal;
    INFO("causal " << causal);
    const Tensor sdpa = ref::attention(q, k, v, o);
    CHECK(sdpa.sizes() == q.sizes());
    LIGER_CHECK_CLOSE("sdpa vs explicit", sdpa, ref::attention_explicit(q, k, v, o), 1e-5, 1e-5);
    LIGER_CHECK_CLOSE("sdpa vs loop", sdpa, attention_loop(q, k, v, o).to(torch::kFloat), 1e-5,
                      1e-5);
    o.scale = 0.3;
    LIGER_CHECK_CLOSE("sdpa vs explicit, scale 0.3", ref::attention(q, k, v, o),
                      ref::attention_explicit(q, k, v, o), 1e-5, 1e-5);
  }

  SECTION("a window as long as the sequence changes nothing") {
    AttentionOptions causal;
    AttentionOptions window = causal;
    window.sliding_window = t;
    LIGER_CHECK_CLOSE("window T vs SDPA", ref::attention(q, k, v, window),
                      ref::attention(q, k, v, causal), 1e-5, 1e-5);
  }

  SECTION("a sliding window masks the keys it should") {
    AttentionOptions o;
    o.sliding_window = 3;
    const Tensor out = ref::attention(q, k, v, o);
    LIGER_CHECK_CLOSE("window 3 vs loop", out, attention_loop(q, k, v, o).to(torch::kFloat), 1e-5,
                      1e-5);
    // Changing key/value 0 changes queries 0..2 only; query 3 no longer sees it.
    Tensor k2 = k.clone(), v2 = v.clone();
    k2.select(1, 0).add_(5.0);
    v2.select(1, 0).add_(5.0);
    const Tensor out2 = ref::attention(q, k2, v2, o);
    const Tensor changed = (out2 - out).abs().amax({0, 2, 3});  // per query position
    INFO("max change per query position: " << changed);
    CHECK(changed.narrow(0, 0, 3).min().item<double>() > 1e-3);
    CHECK(changed.narrow(0, 3, t - 3).max().item<double>() == 0.0);
  }

  SECTION("softcap") {
    AttentionOptions o;
    o.softcap = 2.0;
    o.sliding_window = 4;
    LIGER_CHECK_CLOSE("softcap + window vs loop", ref::attention(q * 3, k, v, o),
                      attention_loop(q * 3, k, v, o).to(torch::kFloat), 1e-5, 1e-5);
  }

  SECTION("bf16 keeps the dtype and stays close") {
    AttentionOptions o;
    const Tensor expected = ref::attention(q, k, v, o);
    const Tensor sdpa =
        ref::attention(q.to(torch::kBFloat16), k.to(torch::kBFloat16), v.to(torch::kBFloat16), o);
    CHECK(sdpa.scalar_type() == torch::kBFloat16);
    LIGER_CHECK_CLOSE("bf16 sdpa", sdpa.to(torch::kFloat), expected, 3e-2, 3e-2);
    o.sliding_window = 5;
    const Tensor explicit_path =
        ref::attention(q.to(torch::kBFloat16), k.to(torch::kBFloat16), v.to(torch::kBFloat16), o);
    CHECK(explicit_path.scalar_type() == torch::kBFloat16);
  }

  SECTION("gradients flow through both paths alike") {
    AttentionOptions sdpa_opts, explicit_opts;
    explicit_opts.sliding_window = t;
    auto grads = [&](const AttentionOptions& o) {
      const Tensor qq = q.clone().requires_grad_(true), kk = k.clone().requires_grad_(true),
                   vv = v.clone().requires_grad_(true);
      (ref::attention(qq, kk, vv, o) * torch::arange(d, torch::kFloat)).sum().backward();
      return std::vector<Tensor>{qq.grad(), kk.grad(), vv.grad()};
    };
    const auto a = grads(sdpa_opts), e = grads(explicit_opts);
    LIGER_CHECK_CLOSE("dq", a[0], e[0], 1e-4, 1e-4);
    LIGER_CHECK_CLOSE("dk", a[1], e[1], 1e-4, 1e-4);
    LIGER_CHECK_CLOSE("dv", a[2], e[2], 1e-4, 1e-4);
  }
}

TEST_CASE("reference attention on CUDA: SDPA (GQA) vs explicit path", "[reference][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("no CUDA device: skipped");
    return;
  }
  const auto cuda = torch::Device(torch::kCUDA);
  torch::manual_seed(15);
  const Tensor q = torch::randn({2, 33, 8, 64}, cuda);
  const Tensor k = torch::randn({2, 33, 2, 64}, cuda);
  const Tensor v = torch::randn({2, 33, 2, 64}, cuda);
  AttentionOptions o;
  AttentionOptions window = o;
  window.sliding_window = 33;
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    INFO(c10::toString(dtype));
    const Tensor sdpa = ref::attention(q.to(dtype), k.to(dtype), v.to(dtype), o);
    const Tensor explicit_path = ref::attention(q.to(dtype), k.to(dtype), v.to(dtype), window);
    const double tol = dtype == torch::kFloat ? 2e-3 : 3e-2;  // TF32/bf16 kernels
    LIGER_CHECK_CLOSE("cuda sdpa vs explicit", sdpa.to(torch::kFloat),
                      explicit_path.to(torch::kFloat), tol, tol);
  }
}

TEST_CASE("reference cross_entropy follows the formula", "[reference][cross_entropy]") {
  torch::manual_seed(12);
  const int64_t n = 6, vocab = 11;
  const Tensor logits = torch::randn({n, vocab}, torch::kDouble) * 2;
  const Tensor labels = torch::tensor({3, -100, 0, 10, -100, 5}, torch::kLong);
  CrossEntropyOptions o;
  o.label_smoothing = 0.1;
  o.z_loss_scale = 0.01;
  o.softcap = 1.5;
  o.reduction = Reduction::none;

  // Row by row, in fp64.
  std::vector<double> expected(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = labels[i].item<int64_t>();
    if (y == -100) continue;
    const Tensor z = torch::tanh(logits[i] / 1.5) * 1.5;
    const double lse = torch::logsumexp(z, 0).item<double>();
    const double nll = lse - z[y].item<double>();
    const double smooth = lse - z.mean().item<double>();
    expected[i] = 0.9 * nll + 0.1 * smooth + 0.01 * lse * lse;
  }
  const Tensor per_token = ref::cross_entropy(logits, labels, o);
  CHECK(per_token.scalar_type() == torch::kFloat);
  const Tensor want = torch::tensor(expected, torch::kDouble).to(torch::kFloat);
  LIGER_CHECK_CLOSE("per token", per_token, want, 1e-5, 1e-5);

  o.reduction = Reduction::sum;
  LIGER_CHECK_CLOSE("sum", ref::cross_entropy(logits, labels, o), want.sum(), 1e-5, 1e-5);
  o.reduction = Reduction::mean;
  LIGER_CHECK_CLOSE("mean", ref::cross_entropy(logits, labels, o), want.sum() / 4, 1e-5, 1e-5);

  SECTION("mean over zero tokens is 0, not NaN") {
    const Tensor all_ignored = torch::full({n}, -100, torch::kLong);
    const Tensor x = logits.clone().requires_grad_(true);
    const Tensor loss = ref::cross_entropy(x, all_ignored, o);
    CHECK(loss.item<double>() == 0.0);
    loss.backward();
    CHECK(x.grad().abs().max().item<double>() == 0.0);
  }
}

TEST_CASE("reference add_rms_norm is the add, then rms_norm: values and gradients exactly",
          "[reference][add_rms_norm]") {
  struct Mode {
    const char* name;
    RmsNormCasting casting;
    double offset;
  };
  const Mode modes[] = {{"llama", RmsNormCasting::llama, 0.0},
                        {"gemma", RmsNormCasting::gemma, 1.0},
                        {"none", RmsNormCasting::none, 0.0}};
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    // The weight in x's dtype (the model casts it) and in fp32 (master weights).
    for (const auto w_dtype : {dtype, torch::kFloat}) {
      for (const Mode& mode : modes) {
        INFO(mode.name << ", x " << dtype << ", weight " << w_dtype);
        RmsNormOptions o;
        o.eps = 1e-5;
        o.offset = mode.offset;
        o.casting = mode.casting;
        torch::manual_seed(21);
        const Tensor x0 = torch::randn({2, 7, 48}).to(dtype);
        const Tensor r0 = (3 * torch::randn({2, 7, 48})).to(dtype);
        const Tensor w0 = (1 - mode.offset + 0.1 * torch::randn({48})).to(w_dtype);
        const Tensor dy = torch::randn({2, 7, 48}).to(dtype);
        const Tensor ds = torch::randn({2, 7, 48}).to(dtype);

        const Tensor x = x0.clone().requires_grad_(true), r = r0.clone().requires_grad_(true);
        const Tensor w = w0.clone().requires_grad_(true);
        const auto [y, s] = ref::add_rms_norm(x, r, w, o);

        // Written out: the residual stream h + attn_out in x's dtype, then its norm.
        const Tensor xe = x0.clone().requires_grad_(true), re = r0.clone().requires_grad_(true);
        const Tensor we = w0.clone().requires_grad_(true);
        const Tensor se = re + xe;
        const Tensor ye = ref::rms_norm(se, we, o);

        CHECK(s.scalar_type() == dtype);
        CHECK(y.scalar_type() == dtype);
        CHECK(torch::equal(s, se));
        CHECK(torch::equal(y, ye));
        // Both outputs get an upstream gradient: the norm's and the residual stream's.
        torch::autograd::backward({y, s}, {dy, ds});
        torch::autograd::backward({ye, se}, {dy, ds});
        CHECK(torch::equal(x.grad(), xe.grad()));
        CHECK(torch::equal(r.grad(), re.grad()));
        CHECK(torch::equal(w.grad(), we.grad()));
        CHECK(w.grad().scalar_type() == w_dtype);
      }
    }
  }
}

TEST_CASE("reference add_rms_norm: only the residual stream used", "[reference][add_rms_norm]") {
  // The last layer's sum feeds the next layer; a graph may use s alone.
  torch::manual_seed(22);
  const Tensor x = torch::randn({3, 16}, torch::requires_grad());
  const Tensor r = torch::randn({3, 16}, torch::requires_grad());
  const Tensor w = torch::ones({16}, torch::requires_grad());
  const auto out = ref::add_rms_norm(x, r, w, {});
  out.second.sum().backward();
  CHECK(torch::equal(x.grad(), torch::ones({3, 16})));
  CHECK(torch::equal(r.grad(), torch::ones({3, 16})));
  CHECK_FALSE(w.grad().defined());
}

TEST_CASE("reference add_rms_norm without a residual: {rms_norm(x), x}",
          "[reference][add_rms_norm]") {
  torch::manual_seed(23);
  const Tensor x = torch::randn({3, 16}, torch::requires_grad());
  const Tensor w = (torch::randn({16}) * 0.1 + 1.0).requires_grad_();
  const auto [y, s] = ref::add_rms_norm(x, Tensor(), w, {});
  CHECK(torch::equal(y, ref::rms_norm(x, w, {})));
  CHECK(s.data_ptr() == x.data_ptr());
  // x's gradient: the norm's plus the passed-through stream's.
  const Tensor dy = torch::randn({3, 16}), ds = torch::randn({3, 16});
  torch::autograd::backward({y, s}, {dy, ds});
  const Tensor xe = x.detach().clone().requires_grad_();
  ref::rms_norm(xe, w.detach(), {}).backward(dy);
  CHECK(torch::allclose(x.grad(), xe.grad() + ds, 1e-6, 1e-6));
}

TEST_CASE("reference add_rms_norm rejects mismatched inputs", "[reference][add_rms_norm]") {
  using liger::kernels::test::thrown_message;
  const Tensor x = torch::randn({2, 8});
  const Tensor w = torch::ones({8});
  SECTION("shape") {
    const std::string message = thrown_message([&] {
      ref::add_rms_norm(x, torch::randn({1, 8}), w, {});
    });
    INFO(message);
    CHECK(message.find("add_rms_norm: residual has shape [1, 8] but x has shape [2, 8]") !=
          std::string::npos);
  }
  SECTION("dtype") {
    const std::string message = thrown_message([&] {
      ref::add_rms_norm(x, torch::randn({2, 8}).to(torch::kBFloat16), w, {});
    });
    INFO(message);
    CHECK(message.find("add_rms_norm: residual is BFloat16 but x is Float") != std::string::npos);
  }
}

TEST_CASE("reference matmul: a @ b (+ c), into out, an fp32 out of bf16 operands",
          "[reference][matmul]") {
  torch::manual_seed(19);
  const Tensor a = torch::randn({5, 7}), b = torch::randn({3, 7}).t();  // b: a transposed view
  const Tensor c = torch::randn({5, 3});
  const Tensor exact = torch::mm(a.to(torch::kDouble), b.to(torch::kDouble));
  const auto rel = [](const Tensor& got, const Tensor& want) {
    return (got.to(torch::kDouble) - want).abs().max().item<double>() /
           want.abs().max().item<double>();
  };
  CHECK(rel(ref::matmul(a, b, Tensor(), Tensor()), exact) <= 1e-6);
  CHECK(rel(ref::matmul(a, b, c, Tensor()), exact + c.to(torch::kDouble)) <= 1e-6);
  Tensor acc = c.clone();
  CHECK(ref::matmul(a, b, acc, acc).data_ptr() == acc.data_ptr());  // accumulate in place
  CHECK(rel(acc, exact + c.to(torch::kDouble)) <= 1e-6);
  // bf16 operands, fp32 out: the products of the bf16 values summed in fp32
  const Tensor a16 = a.to(torch::kBFloat16), b16 = b.to(torch::kBFloat16);
  const Tensor exact16 = torch::mm(a16.to(torch::kDouble), b16.to(torch::kDouble));
  Tensor out32 = torch::empty({5, 3});
  ref::matmul(a16, b16, Tensor(), out32);
  CHECK(rel(out32, exact16) <= 1e-6);
  Tensor acc32 = c.clone();
  ref::matmul(a16, b16, acc32, acc32);
  CHECK(rel(acc32, exact16 + c.to(torch::kDouble)) <= 1e-6);
  // shapes that do not chain are refused with both shapes named
  try {
    ref::matmul(a, a, Tensor(), Tensor());
    FAIL("no error for [5, 7] @ [5, 7]");
  } catch (const std::exception& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find("matmul: a [5, 7] and b [5, 7] are not [m, k] and [k, n]") !=
          std::string::npos);
  }
}
