// The composite attention against the reference's explicit path: values and
// the gradients of q, k and v in fp32, for every variant that leaves SDPA
// (windows shorter and longer than the sequence, softcaps, documents down to
// length 1, GQA, a KV cache) at lengths that are not multiples of the chunk,
// with chunks small enough that every case runs several. Then bf16, the
// routing between SDPA and the chunks, the chunk size, and the memory: what
// the chunked path keeps for backward and holds at its peak, counted at the
// CPU allocator.
#include "kernels/attention_chunks.h"
#include "kernels/composite/composite.h"
#include "kernels/reference/reference.h"
#include "tests/catch.h"
#include "tests/kernels/test_utils.h"
#include "tests/trainer/cpu_memory_counter.h"

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace ref = liger::kernels::reference;
namespace comp = liger::kernels::composite;
using liger::kernels::AttentionOptions;
using liger::kernels::test::check_runs;
using liger::kernels::test::OpFn;
using liger::kernels::test::Run;
using liger::kernels::test::run_op;
using liger::kernels::test::Tolerance;
using torch::Tensor;

namespace {

// fp32: the same math in another order (chunks, lse instead of max + sum,
// fp32 sums of dk and dv over chunks and heads instead of one matmul each).
constexpr Tolerance kFp32{2e-5, 1e-5};

// q [B, Tq, Hq, D], k and v [B, Tk, Hk, D], drawn in fp32.
struct Inputs {
  Tensor q, k, v;
};

Inputs draw(int64_t b, int64_t tq, int64_t tk, int64_t hq, int64_t hk, int64_t d,
            double q_scale = 1.0) {
  return {torch::randn({b, tq, hq, d}) * q_scale, torch::randn({b, tk, hk, d}),
          torch::randn({b, tk, hk, d})};
}

// Document ids [B, T] from per-row document lengths (each row's lengths sum to T).
Tensor documents_of(const std::vector<std::vector<int64_t>>& lengths) {
  std::vector<Tensor> rows;
  for (const auto& row : lengths) {
    std::vector<int64_t> ids;
    for (size_t doc = 0; doc < row.size(); ++doc)
      ids.insert(ids.end(), row[doc], static_cast<int64_t>(doc));
    rows.push_back(torch::tensor(ids, torch::kLong));
  }
  return torch::stack(rows);
}

OpFn chunked(const AttentionOptions& o, int64_t chunk_rows) {
  return [o, chunk_rows](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{comp::attention_in_chunks(in[0], in[1], in[2], o, chunk_rows)};
  };
}

OpFn explicit_path(const AttentionOptions& o) {
  return [o](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{ref::attention_explicit(in[0], in[1], in[2], o)};
  };
}

// Values and every gradient of the chunked path against the explicit path,
// for each chunk size. The gradients compared are not zero (but for dq and
// dk with a window of 1, where each query sees only itself: p = 1 everywhere).
void check_against_explicit(const std::string& what, const Inputs& in, const AttentionOptions& o,
                            const std::vector<int64_t>& chunk_sizes, bool grads = true) {
  const std::vector<Tensor> inputs = {in.q, in.k, in.v};
  const std::vector<bool> wants = {grads, grads, grads};
  const Run expected = run_op(explicit_path(o), inputs, wants);
  for (const int64_t rows : chunk_sizes) {
    const std::string where = what + ", chunks of " + std::to_string(rows) + " rows";
    INFO(where);
    const Run actual = run_op(chunked(o, rows), inputs, wants);
    check_runs(where, actual, expected, kFp32, kFp32, {"q", "k", "v"});
    if (grads) {
      const size_t first = o.sliding_window == 1 ? 2 : 0;
      for (size_t i = first; i < 3; ++i) CHECK(expected.grads[i].abs().max().item<double>() > 0.0);
    }
  }
}

}  // namespace

TEST_CASE("chunked attention matches the explicit path, values and gradients, fp32",
          "[composite][attention]") {
  torch::manual_seed(21);
  // 37 positions: chunks of 8 leave a last chunk of 5; 1 row per chunk and
  // one chunk for everything are the extremes.
  const std::vector<int64_t> chunks = {8, 1, 64};
  const int64_t t = 37;

  SECTION("causal and non-causal, GQA 4 over 2, head_dim 16") {
    const Inputs in = draw(2, t, t, 4, 2, 16);
    AttentionOptions o;
    check_against_explicit("causal", in, o, chunks);
    o.causal = false;
    check_against_explicit("non-causal", in, o, chunks);
    o.causal = true;
    o.scale = 0.3;
    check_against_explicit("causal, scale 0.3", in, o, {8});
  }

  SECTION("sliding windows shorter and longer than the sequence, head_dim 8") {
    const Inputs in = draw(2, t, t, 4, 2, 8);
    for (const int64_t window : {1, 5, 8, 13, 36, 37, 100}) {
      AttentionOptions o;
      o.sliding_window = window;
      check_against_explicit("window " + std::to_string(window), in, o, {8, 3});
    }
  }

  SECTION("softcap, alone and with a window (scores large enough to saturate tanh)") {
    const Inputs in = draw(2, t, t, 4, 2, 16, 3.0);
    AttentionOptions o;
    o.softcap = 2.0;
    check_against_explicit("softcap 2", in, o, chunks);
    o.sliding_window = 6;
    check_against_explicit("softcap 2, window 6", in, o, {8, 5});
    o.causal = false;
    o.sliding_window = 0;
    check_against_explicit("softcap 2, non-causal", in, o, {8});
  }

  SECTION("documents, down to length 1, alone and with a window and a softcap") {
    const Inputs in = draw(2, t, t, 4, 2, 16);
    AttentionOptions o;
    o.document_ids = documents_of({{1, 5, 1, 1, 12, 17}, {30, 1, 6}});
    check_against_explicit("documents", in, o, chunks);
    o.sliding_window = 4;
    o.softcap = 5.0;
    check_against_explicit("documents, window 4, softcap 5", in, o, {8, 3});
    // Non-decreasing ids are not required: a query sees the keys that share its id.
    o = AttentionOptions();
    o.document_ids = torch::randint(3, {2, t}, torch::kLong);
    check_against_explicit("scattered document ids", in, o, {8});
    o.causal = false;
    check_against_explicit("scattered document ids, non-causal", in, o, {8});
  }

  SECTION("grouped-query layouts: 4 over 1, 2 over 2 (no grouping), 6 over 3") {
    AttentionOptions o;
    o.sliding_window = 7;
    check_against_explicit("4 over 1", draw(1, t, t, 4, 1, 16), o, {8});
    check_against_explicit("2 over 2", draw(2, t, t, 2, 2, 16), o, {8});
    check_against_explicit("6 over 3", draw(1, t, t, 6, 3, 8), o, {8});
  }

  SECTION("a query block at the end of a KV cache (Tq < Tk): the mask aligned to the end") {
    for (const int64_t tq : {1, 5, 11}) {
      const Inputs in = draw(2, tq, t, 4, 2, 16);
      AttentionOptions o;
      check_against_explicit("cache, causal, Tq " + std::to_string(tq), in, o, {4, 64}, false);
      o.sliding_window = 9;
      o.softcap = 3.0;
      check_against_explicit("cache, window 9, softcap 3, Tq " + std::to_string(tq), in, o, {4},
                             false);
    }
    // And under no_grad, as generation calls it: the same values.
    const Inputs in = draw(2, 5, t, 4, 2, 16);
    AttentionOptions o;
    o.sliding_window = 9;
    torch::NoGradGuard no_grad;
    LIGER_CHECK_CLOSE("no_grad cache", comp::attention_in_chunks(in.q, in.k, in.v, o, 2),
                      ref::attention_explicit(in.q, in.k, in.v, o), kFp32.atol, kFp32.rtol);
  }
}

TEST_CASE("chunked attention in bf16 is as close to the fp32 truth as the explicit path",
          "[composite][attention]") {
  torch::manual_seed(22);
  const Inputs in = draw(2, 29, 29, 4, 2, 16, 2.0);
  AttentionOptions o;
  o.sliding_window = 9;
  o.softcap = 4.0;
  o.document_ids = documents_of({{3, 1, 25}, {29}});
  liger::kernels::test::compare_backends(
      "chunked vs explicit, bf16", explicit_path(o), chunked(o, 8),
      {in.q.to(torch::kBFloat16), in.k.to(torch::kBFloat16), in.v.to(torch::kBFloat16)},
      {true, true, true}, {"q", "k", "v"}, kFp32, {1e-2, 1e-2}, {2e-2, 2e-2});
}

TEST_CASE("composite attention: SDPA where it serves, chunks elsewhere", "[composite][attention]") {
  torch::manual_seed(23);
  const Inputs in = draw(2, 21, 21, 4, 2, 16);
  AttentionOptions o;
  // Plain causal attention is the reference's SDPA call, bit for bit.
  CHECK(torch::equal(comp::attention(in.q, in.k, in.v, o), ref::attention(in.q, in.k, in.v, o)));
  o.causal = false;
  CHECK(torch::equal(comp::attention(in.q, in.k, in.v, o), ref::attention(in.q, in.k, in.v, o)));
  // The others are the chunks (one chunk at this size), not the explicit path.
  o.causal = true;
  o.sliding_window = 4;
  CHECK_FALSE(ref::sdpa_serves(in.q, in.k, o));
  CHECK(torch::equal(comp::attention(in.q, in.k, in.v, o),
                     comp::attention_in_chunks(in.q, in.k, in.v, o, 21)));
  LIGER_CHECK_CLOSE("window 4", comp::attention(in.q, in.k, in.v, o),
                    ref::attention_explicit(in.q, in.k, in.v, o), kFp32.atol, kFp32.rtol);
  // A shape error is one message naming the op.
  const std::string message = liger::kernels::test::thrown_message(
      [&] { comp::attention(in.q, in.k.narrow(3, 0, 8), in.v.narrow(3, 0, 8), o); });
  CHECK(message.find("attention: q ") != std::string::npos);
}

TEST_CASE("the chunk: fp32 scores within 128 MiB, at least one row, at most the queries",
          "[composite][attention]") {
  const double budget = liger::kernels::kAttentionChunkBytes;
  CHECK(budget == 128.0 * 1024 * 1024);
  // rows * keys * 4 bytes * batch * heads, keys bounded by Tk or window + rows - 1.
  const auto bytes = [](int64_t rows, int64_t b, int64_t h, int64_t tk, int64_t window) {
    const int64_t keys = window > 0 ? std::min(tk, window + rows - 1) : tk;
    return 4.0 * static_cast<double>(rows * keys * b * h);
  };
  struct Shape {
    int64_t b, h, tq, tk, window;
  };
  for (const Shape& s : {Shape{1, 32, 8192, 8192, 4096},       // Mistral-7B
                         Shape{1, 16, 8192, 8192, 4096},       // Gemma-2-9B, sliding layers
                         Shape{1, 16, 8192, 8192, 0},          // Gemma-2-9B, global layers
                         Shape{8, 32, 32768, 32768, 0},        // long and wide: few rows
                         Shape{64, 64, 131072, 131072, 0}}) {  // one row over the budget
    const int64_t rows = liger::kernels::attention_chunk_rows(s.b, s.h, s.tq, s.tk, s.window);
    INFO("b " << s.b << ", heads " << s.h << ", T " << s.tk << ", window " << s.window << ": "
              << rows << " rows");
    CHECK(rows >= 1);
    if (rows > 1) CHECK(bytes(rows, s.b, s.h, s.tk, s.window) <= budget);
    if (rows > 64) CHECK(rows % 64 == 0);
    // Not needlessly small: twice the rows would exceed the budget.
    if (rows < s.tq) CHECK(bytes(2 * rows + 64, s.b, s.h, s.tk, s.window) > budget);
  }
  CHECK(liger::kernels::attention_chunk_rows(1, 32, 8192, 8192, 4096) == 192);
  CHECK(liger::kernels::attention_chunk_rows(1, 16, 8192, 8192, 0) == 256);
  CHECK(liger::kernels::attention_chunk_rows(64, 64, 131072, 131072, 0) == 1);
  CHECK(liger::kernels::attention_chunk_rows(1, 4, 37, 37, 0) == 37);  // short: one chunk
  CHECK(liger::kernels::attention_chunk_rows(1, 4, 1, 4096, 0) == 1);  // a decoding step
}

TEST_CASE("chunked attention keeps O(T) for backward and peaks at O(chunk x T)",
          "[composite][attention][memory]") {
  // Causal attention over documents at T = 1024: each chunk scores every key
  // up to its last row, so the working memory grows with T, not T^2.
  torch::manual_seed(24);
  const int64_t b = 1, t = 1024, hq = 4, hk = 2, d = 8, rows = 32;
  const Inputs in = draw(b, t, t, hq, hk, d);
  AttentionOptions o;
  o.document_ids = documents_of({{100, 1, 400, 523}});
  const double scores = 4.0 * b * hq * t * t;           // one fp32 [B, Hq, T, T]
  const double chunk_scores = 4.0 * b * hq * rows * t;  // one chunk's, at most
  const double q_bytes = 4.0 * b * t * hq * d;          // q, out, dout, dq; k and v are half
  const double lse_bytes = 4.0 * b * hq * t;
  const Tensor d_out = torch::randn({b, t, hq, d});

  struct Measured {
    double kept = 0;  // live after forward, beyond the output: what backward needs
    double peak = 0;  // the highest during forward and backward, beyond the inputs
  };
  const auto measure =
      [&](const std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>& attention) {
        const Tensor q = in.q.clone().requires_grad_(true), k = in.k.clone().requires_grad_(true),
                     v = in.v.clone().requires_grad_(true);
        liger::testing::CpuMemoryCounter counter;
        const int64_t before = counter.current();
        Measured m;
        {
          Tensor out = attention(q, k, v);
          m.kept = static_cast<double>(counter.current() - before) - 4.0 * out.numel();
          out.backward(d_out);
        }
        m.peak = static_cast<double>(counter.peak() - before);
        return m;
      };

  const Measured chunked = measure([&](const Tensor& q, const Tensor& k, const Tensor& v) {
    return comp::attention_in_chunks(q, k, v, o, rows);
  });
  const Measured reference = measure([&](const Tensor& q, const Tensor& k, const Tensor& v) {
    return ref::attention_explicit(q, k, v, o);
  });
  INFO("kept for backward: chunked "
       << chunked.kept / 1024 << " KiB, explicit " << reference.kept / 1024
       << " KiB; peak: chunked " << chunked.peak / 1024 << " KiB, explicit "
       << reference.peak / 1024 << " KiB; one [B, Hq, T, T] " << scores / 1024 << " KiB");
  // The measure sees what the explicit path keeps: its fp32 probabilities at least.
  CHECK(reference.kept >= scores);
  // The chunked path keeps the fp32 log-sum-exp and nothing else.
  CHECK(chunked.kept == lse_bytes);
  // Its peak: a few chunks of scores and O(T) buffers (fp32 k, v and their
  // gradient sums, dq, the grouped rows of q, out and dout), far below one [T, T].
  CHECK(chunked.peak <= 4 * chunk_scores + 10 * q_bytes);
  CHECK(chunked.peak < scores / 2);
}
