// The cuda flash attention kernel (kernels/cuda/attention.cu) against the
// reference's explicit fp32 path: values and the gradients of q, k and v, in
// bf16 and fp16, for every mask it takes and their combinations (causal,
// sliding window, softcap, documents, GQA, a KV cache's Tq < Tk), at head_dim
// 64, 128 and 256, with odd lengths, documents of length 1 and a window wider
// than the sequence; forward and dq with one and with two 16-row tiles per warp;
// the warpgroup-MMA passes with cp.async and with TMA copies.
// Skips without a CUDA device.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/document_bounds.h"
#include "kernels/cuda/launchers.h"
#include "kernels/reference/reference.h"
#include "kernels/registry.h"
#include "tests/catch.h"
#include "tests/kernels/test_utils.h"

#include <ATen/cuda/CUDAContext.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace ref = liger::kernels::reference;
namespace cuda = liger::kernels::cuda;
using liger::kernels::AttentionOptions;
using liger::kernels::PlainAttention;
using liger::kernels::test::compare_backends;
using liger::kernels::test::OpFn;
using liger::kernels::test::Tolerance;
using torch::Tensor;

namespace {

// Against the fp32 truth, the absolute part relative to the largest
// magnitude (check_runs_bf16): p and ds are rounded to the dtype before their
// products, as the reference rounds p before p v.
constexpr Tolerance kFp32{2e-5, 2e-5};  // unused: the kernel takes no fp32
constexpr Tolerance kOut{1e-2, 1e-2};
constexpr Tolerance kGrad{2e-2, 2e-2};

struct Shape {
  int64_t batch, tq, tk, heads_q, heads_k, head_dim;
};

// Packed document ids [B, T]: row 0 has documents of the given lengths, row 1
// one document of length 1, then the rest split in two.
Tensor documents_for(int64_t batch, int64_t t, const std::vector<int64_t>& lengths) {
  Tensor ids = torch::zeros({batch, t}, torch::kLong);
  int64_t pos = 0, id = 0;
  for (int64_t len : lengths) {
    for (int64_t i = 0; i < len && pos < t; ++i) ids[0][pos++] = id;
    ++id;
  }
  while (pos < t) ids[0][pos++] = id;  // the remainder: one last document
  for (int64_t b = 1; b < batch; ++b) {
    ids[b][0] = 7;
    for (int64_t p = 1; p < t; ++p) ids[b][p] = p < 1 + (t - 1) / 2 ? 8 : 9;
  }
  return ids.cuda();
}

// Sets the forward's row tiles per warp for a scope.
class RowTiles {
 public:
  explicit RowTiles(int tiles) : previous_(cuda::set_attention_row_tiles(tiles)) {}
  ~RowTiles() {
    try {
      cuda::set_attention_row_tiles(previous_);
    } catch (...) {  // previous_ is 0, 1 or 2: nothing to throw
    }
  }
  RowTiles(const RowTiles&) = delete;
  RowTiles& operator=(const RowTiles&) = delete;

 private:
  int previous_;
};

// Runs both passes on the mma.sync kernels for a scope (the warpgroup-MMA
// ones are the default at head_dim 64 and 128 on an sm_90 device).
class MmaSyncOnly {
 public:
  MmaSyncOnly()
      : forward_(cuda::set_attention_forward_wgmma(false)),
        backward_(cuda::set_attention_backward_wgmma(false)) {}
  ~MmaSyncOnly() {
    cuda::set_attention_forward_wgmma(forward_);
    cuda::set_attention_backward_wgmma(backward_);
  }
  MmaSyncOnly(const MmaSyncOnly&) = delete;
  MmaSyncOnly& operator=(const MmaSyncOnly&) = delete;

 private:
  bool forward_, backward_;
};

// A process-wide attention setting (set through a function that returns the
// previous value) held for a scope.
template <typename Value, Value (*Set)(Value)>
class ScopedSetting {
 public:
  explicit ScopedSetting(Value value) : previous_(Set(value)) {}
  ~ScopedSetting() { Set(previous_); }
  ScopedSetting(const ScopedSetting&) = delete;
  ScopedSetting& operator=(const ScopedSetting&) = delete;

 private:
  Value previous_;
};
// The warpgroup-MMA passes' products in one order: 1 one at a time, 2
// overlapped, 3 overlapped with the warp-specialized forward's consumers
// taking turns (the default, 0, picks per pass and variant).
using WgmmaSchedule = ScopedSetting<int, cuda::set_attention_wgmma_schedule>;
// The warpgroup-MMA passes' copies on the tensor memory accelerator.
using TmaCopies = ScopedSetting<bool, cuda::set_attention_tma>;
// The warp-specialized forward and dk/dv (a TMA producer warpgroup and two
// consumer warpgroups per block): 0 neither, 1 both, 2 the default's choice.
using WarpSpecializedPasses = ScopedSetting<int, cuda::set_attention_warp_specialized>;
constexpr int kNoWarpSpecialized = 0, kBothWarpSpecialized = 1;
// dq inside the warp-specialized dk/dv pass, and its query tiles' rows at
// head_dim 64 (0: the default's choice, 64 or 128).
using FusedDq = ScopedSetting<bool, cuda::set_attention_fused_dq>;
using FusedDqQueryRows = ScopedSetting<int, cuda::set_attention_fused_dq_query_rows>;

// Whether the current device runs the warpgroup-MMA kernels (compute capability 9.0).
bool hopper_device() {
  const cudaDeviceProp* props = at::cuda::getCurrentDeviceProperties();
  return props->major == 9 && props->minor == 0;
}

void check_case(const std::string& what, const Shape& s, const AttentionOptions& options,
                torch::ScalarType dtype) {
  torch::manual_seed(17 + s.tq + s.head_dim);
  const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  // q scaled up so that the softmax is peaked and the softcap bites.
  const Tensor q = (torch::randn({s.batch, s.tq, s.heads_q, s.head_dim}, opts) * 1.5).to(dtype);
  const Tensor k = torch::randn({s.batch, s.tk, s.heads_k, s.head_dim}, opts).to(dtype);
  const Tensor v = torch::randn({s.batch, s.tk, s.heads_k, s.head_dim}, opts).to(dtype);
  const OpFn reference = [options](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{ref::attention_explicit(in[0], in[1], in[2], options)};
  };
  const OpFn kernel = [options](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{cuda::flash_attention(in[0], in[1], in[2], options)};
  };
  const std::string name =
      what + " " + c10::toString(dtype) + " D=" + std::to_string(s.head_dim) + ", ";
  // The default path (warpgroup MMA at head_dim 64 and 128 on an sm_90 device,
  // the products' order chosen per pass and variant; TMA copies; the
  // warp-specialized forward and dk/dv where no document mask applies).
  const int64_t tma_before = cuda::attention_tma_launches();
  const int64_t ws_before = cuda::attention_warp_specialized_launches();
  compare_backends(name + "default kernels", reference, kernel, {q, k, v}, {true, true, true},
                   {"q", "k", "v"}, kFp32, kOut, kGrad);
  // head_dim 256 has one path: mma.sync with 16 query rows per warp.
  if (s.head_dim > 128) return;
  if (hopper_device()) {
    INFO(name << "default kernels");
    // Without documents the warp-specialized forward and dk/dv with dq fused
    // in (no one-warpgroup pass, so no count of TMA launches); with documents
    // the one-warpgroup passes, all three on TMA copies.
    const int64_t ws_launches = cuda::attention_warp_specialized_launches() - ws_before;
    if (options.document_ids.defined()) {
      CHECK(ws_launches == 0);
      CHECK(cuda::attention_tma_launches() - tma_before >= 3);
    } else {
      CHECK(ws_launches >= 2);
      CHECK(cuda::attention_tma_launches() - tma_before == 0);
    }
  }
  for (const int schedule : {1, 2}) {
    const WgmmaSchedule order(schedule);
    compare_backends(name + (schedule == 1 ? "warpgroup MMA, one product at a time"
                                           : "warpgroup MMA, overlapped products"),
                     reference, kernel, {q, k, v}, {true, true, true}, {"q", "k", "v"}, kFp32, kOut,
                     kGrad);
    // The same with the passes' tiles copied by the tensor memory accelerator:
    // on a Hopper device each of the three passes takes them (a tensor map the
    // driver refused would fall back to cp.async and leave the count short).
    const TmaCopies tma(true);
    const WarpSpecializedPasses one_warpgroup(kNoWarpSpecialized);
    const int64_t launches_before = cuda::attention_tma_launches();
    compare_backends(name + (schedule == 1 ? "TMA copies, one product at a time"
                                           : "TMA copies, overlapped products"),
                     reference, kernel, {q, k, v}, {true, true, true}, {"q", "k", "v"}, kFp32, kOut,
                     kGrad);
    if (hopper_device()) {
      INFO(name << (schedule == 1 ? "TMA, one at a time" : "TMA, overlapped"));
      CHECK(cuda::attention_tma_launches() - launches_before >= 3);
    }
  }
  // The warp-specialized forward and dk/dv, dq as its own pass on TMA copies;
  // the forward's consumers' products one at a time, overlapped, and
  // overlapped taking turns (dq in the same order): on a Hopper device both
  // warp-specialized passes and the dq pass must really have run.
  for (const int schedule : {1, 2, 3}) {
    const WgmmaSchedule order(schedule);
    const WarpSpecializedPasses ws(kBothWarpSpecialized);
    const FusedDq dq_pass(false);
    const std::string what = schedule == 1   ? "warp-specialized passes, one product at a time"
                             : schedule == 2 ? "warp-specialized passes, overlapped products"
                                             : "warp-specialized passes, consumers taking turns";
    const int64_t launches_before = cuda::attention_warp_specialized_launches();
    const int64_t tma_launches_before = cuda::attention_tma_launches();
    compare_backends(name + what, reference, kernel, {q, k, v}, {true, true, true}, {"q", "k", "v"},
                     kFp32, kOut, kGrad);
    if (hopper_device()) {
      INFO(name << what);
      CHECK(cuda::attention_warp_specialized_launches() - launches_before >= 2);
      CHECK(cuda::attention_tma_launches() - tma_launches_before >= 1);
    }
  }
  for (const int query_rows : {64, 128}) {
    // dq fused into the warp-specialized dk/dv pass (fp32 sums by bulk
    // reductions), here also where documents apply; at head_dim 64 with
    // query tiles of 64 and of 128 rows (head_dim 128 takes 64 either way).
    if (query_rows == 128 && s.head_dim != 64) continue;
    const WarpSpecializedPasses ws(kBothWarpSpecialized);
    const FusedDq fused(true);
    const FusedDqQueryRows rows(query_rows);
    const std::string what =
        "warp-specialized passes, fused dq, query tiles " + std::to_string(query_rows);
    const int64_t launches_before = cuda::attention_warp_specialized_launches();
    const int64_t tma_launches_before = cuda::attention_tma_launches();
    compare_backends(name + what, reference, kernel, {q, k, v}, {true, true, true}, {"q", "k", "v"},
                     kFp32, kOut, kGrad);
    if (hopper_device()) {
      INFO(name << what);
      CHECK(cuda::attention_warp_specialized_launches() - launches_before >= 2);
      CHECK(cuda::attention_tma_launches() - tma_launches_before == 0);
    }
  }
  // The mma.sync kernels, the forward and dq with 16 and with 32 query rows per warp.
  const MmaSyncOnly mma_sync;
  for (const int tiles : {1, 2}) {
    const RowTiles use(tiles);
    compare_backends(name + "mma.sync, row tiles " + std::to_string(tiles), reference, kernel,
                     {q, k, v}, {true, true, true}, {"q", "k", "v"}, kFp32, kOut, kGrad);
  }
}

bool have_cuda() {
  return liger::kernels::test::have_cuda_device("cuda attention tests");
}

const torch::ScalarType kDtypes[] = {torch::kBFloat16, torch::kHalf};
const int64_t kHeadDims[] = {64, 128, 256};

}  // namespace

TEST_CASE("flash attention: causal, GQA, odd lengths") {
  if (!have_cuda()) return;
  for (auto dtype : kDtypes) {
    for (int64_t d : kHeadDims) {
      check_case("causal", {2, 197, 197, 4, 2, d}, AttentionOptions{}, dtype);
      AttentionOptions full;
      full.causal = false;
      check_case("not causal", {1, 77, 77, 2, 2, d}, full, dtype);
    }
  }
}

TEST_CASE("flash attention: sliding window, softcap and both") {
  if (!have_cuda()) return;
  for (auto dtype : kDtypes) {
    for (int64_t d : kHeadDims) {
      AttentionOptions window;
      window.sliding_window = 64;
      check_case("window 64", {2, 300, 300, 4, 1, d}, window, dtype);
      AttentionOptions wide;
      wide.sliding_window = 1000;  // wider than the sequence: plain causal
      check_case("window 1000", {1, 130, 130, 2, 1, d}, wide, dtype);
      AttentionOptions cap;
      cap.softcap = 2.0;  // small, so that tanh bends the scores
      check_case("softcap 2", {1, 150, 150, 4, 2, d}, cap, dtype);
      AttentionOptions gemma2;
      gemma2.softcap = 50.0;
      gemma2.sliding_window = 32;
      check_case("softcap 50 + window 32", {2, 150, 150, 2, 1, d}, gemma2, dtype);
    }
  }
}

TEST_CASE("flash attention: document masks of packed batches") {
  if (!have_cuda()) return;
  for (auto dtype : kDtypes) {
    for (int64_t d : kHeadDims) {
      AttentionOptions docs;
      docs.document_ids = documents_for(2, 170, {37, 1, 60, 1, 1});
      check_case("documents", {2, 170, 170, 4, 2, d}, docs, dtype);
      AttentionOptions docs_window = docs;
      docs_window.sliding_window = 24;
      docs_window.softcap = 5.0;
      check_case("documents + window + softcap", {2, 170, 170, 4, 2, d}, docs_window, dtype);
      // Many short documents in a longer row: the document bounds narrow the
      // tiles walked well inside the sequence (forward, dq and dk/dv).
      AttentionOptions many;
      many.document_ids = documents_for(2, 600, {37, 1, 60, 1, 1, 130, 5, 90, 17, 64});
      check_case("many documents, T 600", {2, 600, 600, 4, 2, d}, many, dtype);
      AttentionOptions docs_full = docs;
      docs_full.causal = false;
      check_case("documents, not causal", {2, 170, 170, 2, 2, d}, docs_full, dtype);
      // Ids 2^40 apart: a block's documents span more than 32 bits (the
      // warp-specialized forward cannot code them and reads the ids instead).
      AttentionOptions far = docs;
      far.document_ids = docs.document_ids * (int64_t{1} << 40);
      check_case("documents, ids 2^40 apart", {2, 170, 170, 2, 2, d}, far, dtype);
    }
  }
}

// The segment bounds the kernels compute (one warp per segment) against the
// CPU's one-at-a-time scan (kernels/cuda/document_bounds.h), for rows longer
// than a warp's 32 candidates: packed documents, ids in no order, one
// document, and every position its own document.
TEST_CASE("flash attention: the document bounds match the CPU's") {
  if (!have_cuda()) return;
  const int64_t t = 2061;  // 129 segments, the last one partial
  std::mt19937 rng(5);
  std::vector<std::vector<int64_t> > rows;
  std::vector<int64_t> packed;
  for (int64_t id = 0; static_cast<int64_t>(packed.size()) < t; ++id) {
    const int64_t len = 1 + static_cast<int64_t>(rng() % 300);
    for (int64_t i = 0; i < len && static_cast<int64_t>(packed.size()) < t; ++i) {
      packed.push_back(id);
    }
  }
  rows.push_back(packed);
  std::vector<int64_t> unordered(t);
  for (auto& id : unordered) id = static_cast<int64_t>(rng() % 9) * 1000 - 3000;
  rows.push_back(unordered);
  rows.push_back(std::vector<int64_t>(t, 4));
  std::vector<int64_t> distinct(t);
  for (int64_t p = 0; p < t; ++p) distinct[p] = t - p;
  rows.push_back(distinct);

  const auto batch = static_cast<int64_t>(rows.size());
  const int64_t segments =
      (t + liger::cuda_kernels::kDocumentSegment - 1) / liger::cuda_kernels::kDocumentSegment;
  Tensor ids = torch::empty({batch, t}, torch::kLong);
  for (int64_t b = 0; b < batch; ++b) {
    std::copy(rows[b].begin(), rows[b].end(), ids[b].data_ptr<int64_t>());
  }
  const Tensor bounds = cuda::attention_document_bounds(ids.cuda()).cpu();
  REQUIRE(bounds.sizes() == torch::IntArrayRef({batch, segments, 2}));
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int64_t> ranges(2 * segments);
    for (int64_t s = 0; s < segments; ++s) {
      const auto first = rows[b].begin() + s * liger::cuda_kernels::kDocumentSegment;
      const auto last =
          rows[b].begin() + std::min(t, (s + 1) * liger::cuda_kernels::kDocumentSegment);
      ranges[2 * s] = *std::min_element(first, last);
      ranges[2 * s + 1] = *std::max_element(first, last);
    }
    int64_t wrong = 0;
    for (int64_t s = 0; s < segments; ++s) {
      int64_t first = -1, last = -1;
      liger::cuda_kernels::document_segment_bounds(ranges.data(), segments, s, first, last);
      if (bounds[b][s][0].item<int64_t>() != first || bounds[b][s][1].item<int64_t>() != last) {
        ++wrong;
      }
    }
    INFO("batch row " << b);
    CHECK(wrong == 0);
  }
}

TEST_CASE("flash attention: a KV cache's last queries (Tq < Tk)") {
  if (!have_cuda()) return;
  for (auto dtype : kDtypes) {
    for (int64_t d : kHeadDims) {
      check_case("Tq 5 of Tk 133", {2, 5, 133, 4, 2, d}, AttentionOptions{}, dtype);
      check_case("Tq 1 of Tk 70", {1, 1, 70, 4, 1, d}, AttentionOptions{}, dtype);
      AttentionOptions window;
      window.sliding_window = 16;
      check_case("Tq 9 of Tk 100, window 16", {1, 9, 100, 2, 2, d}, window, dtype);
    }
  }
}

TEST_CASE("flash attention: the backend routes each variant") {
  if (!have_cuda()) return;
  const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const Tensor q = torch::randn({1, 40, 2, 64}, opts), k = torch::randn({1, 40, 1, 64}, opts);
  CHECK(cuda::flash_attention_serves(q, k, k));
  CHECK_FALSE(
      cuda::flash_attention_serves(q.to(torch::kFloat), k.to(torch::kFloat), k.to(torch::kFloat)));
  const Tensor q48 = torch::randn({1, 40, 2, 48}, opts), k48 = torch::randn({1, 40, 1, 48}, opts);
  CHECK_FALSE(cuda::flash_attention_serves(q48, k48, k48));
  // head_dim 48 with a window: the composite's chunks, same values as the reference.
  AttentionOptions window;
  window.sliding_window = 8;
  const Tensor got = cuda::attention(q48, k48, k48, window).to(torch::kFloat);
  const Tensor want = ref::attention_explicit(q48, k48, k48, window).to(torch::kFloat);
  CHECK(torch::allclose(got, want, 2e-2, 2e-2));
  // Deterministic: two backward passes give bitwise equal gradients.
  AttentionOptions docs;
  docs.document_ids = documents_for(1, 40, {5, 1, 20});
  auto grads = [&] {
    const Tensor ql = q.detach().clone().requires_grad_(true);
    const Tensor kl = k.detach().clone().requires_grad_(true);
    const Tensor vl = k.detach().clone().requires_grad_(true);
    cuda::flash_attention(ql, kl, vl, docs).pow(2).sum().backward();
    return std::vector<Tensor>{ql.grad(), kl.grad(), vl.grad()};
  };
  const auto a = grads(), b = grads();
  for (size_t i = 0; i < a.size(); ++i) CHECK(torch::equal(a[i], b[i]));
}

// With documents, the measured setting keeps the one-warpgroup forward and
// takes the warp-specialized dk/dv only for documents of
// kWarpSpecializedBackwardDocumentTokens or more (pair-weighted mean length,
// AttentionOptions::document_tokens): the launch counts tell which ran, and
// every choice gives the reference's values and gradients.
TEST_CASE("flash attention: documents take the passes their length asks for") {
  if (!have_cuda()) return;
  using liger::cuda_kernels::kWarpSpecializedBackwardDocumentTokens;
  using liger::cuda_kernels::kWarpSpecializedForwardDocumentTokens;
  const Shape s{2, 170, 170, 4, 2, 64};
  const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat);
  const Tensor q = torch::randn({s.batch, s.tq, s.heads_q, s.head_dim}, opts).to(torch::kBFloat16);
  const Tensor k = torch::randn({s.batch, s.tk, s.heads_k, s.head_dim}, opts).to(torch::kBFloat16);
  const Tensor v = torch::randn({s.batch, s.tk, s.heads_k, s.head_dim}, opts).to(torch::kBFloat16);
  for (const int64_t tokens :
       {int64_t{0}, kWarpSpecializedBackwardDocumentTokens - 1,
        kWarpSpecializedBackwardDocumentTokens, kWarpSpecializedForwardDocumentTokens - 1,
        kWarpSpecializedForwardDocumentTokens, int64_t{1} << 40}) {
    CAPTURE(tokens);
    AttentionOptions docs;
    docs.document_ids = documents_for(s.batch, s.tq, {37, 1, 60, 1, 1});
    docs.document_tokens = tokens;
    const OpFn reference = [docs](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{ref::attention_explicit(in[0], in[1], in[2], docs)};
    };
    const OpFn kernel = [docs](const std::vector<Tensor>& in) {
      return std::vector<Tensor>{cuda::flash_attention(in[0], in[1], in[2], docs)};
    };
    compare_backends("documents, length hint " + std::to_string(tokens), reference, kernel,
                     {q, k, v}, {true, true, true}, {"q", "k", "v"}, kFp32, kOut, kGrad);
    if (!hopper_device()) continue;
    // warp-specialized launches of one forward, then of a forward and its backward
    const auto launches = [&](bool backward) {
      const int64_t before = cuda::attention_warp_specialized_launches();
      const Tensor ql = q.detach().clone().requires_grad_(backward);
      const Tensor out = cuda::flash_attention(ql, k, v, docs);
      if (backward) out.to(torch::kFloat).sum().backward();
      return cuda::attention_warp_specialized_launches() - before;
    };
    const int64_t forward = launches(false), backward = launches(true) - forward;
    CHECK(forward == (tokens >= kWarpSpecializedForwardDocumentTokens ? 1 : 0));
    CHECK(backward == (tokens >= kWarpSpecializedBackwardDocumentTokens ? 1 : 0));
  }
}

TEST_CASE("flash attention: plain causal goes to SDPA or to our kernel as asked") {
  if (!have_cuda()) return;
  const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  // Whether the call ran our kernel's forward (counted on any GPU; SDPA's
  // output can equal ours bit for bit, so the values cannot tell).
  struct Served {
    Tensor out;
    bool ours;
  };
  const auto run = [](PlainAttention plain, const Tensor& q, const Tensor& k) {
    AttentionOptions options;
    options.plain = plain;
    const int64_t before = cuda::attention_forward_launches();
    Tensor out = cuda::attention(q, k, k, options);
    return Served{out, cuda::attention_forward_launches() > before};
  };
  for (int64_t d : {64, 128}) {
    CAPTURE(d);
    const Tensor q = torch::randn({1, 300, 4, d}, opts), k = torch::randn({1, 300, 2, d}, opts);
    const Served by_sdpa = run(PlainAttention::sdpa, q, k);
    const Served by_liger = run(PlainAttention::liger, q, k);
    CHECK_FALSE(by_sdpa.ours);
    CHECK(by_liger.ours);
    CHECK(
        torch::allclose(by_liger.out.to(torch::kFloat), by_sdpa.out.to(torch::kFloat), 2e-2, 2e-2));
    // measured: ours only at head_dim 64 from kFasterThanSdpaTokens tokens
    // with a dk/dv grid of kFasterThanSdpaKeyBlocks (8 key/value heads at
    // 4096 tokens), on a compute-capability 9.0 device
    CHECK_FALSE(run(PlainAttention::measured, q, k).ours);
    const int64_t t = liger::cuda_kernels::kFasterThanSdpaTokens;
    const Tensor q_long = torch::randn({1, t, 32, d}, opts);
    const Tensor k_long = torch::randn({1, t, 8, d}, opts);
    CHECK(run(PlainAttention::measured, q_long, k_long).ours == (hopper_device() && d == 64));
    const Tensor k_few = k_long.narrow(2, 0, 2).contiguous();  // 64 blocks of keys
    const Tensor q_few = q_long.narrow(2, 0, 8).contiguous();
    CHECK_FALSE(run(PlainAttention::measured, q_few, k_few).ours);
  }
  // kernels.plain_attention reaches the op through the registry's kernel set
  liger::kernels::KernelToggles toggles;
  toggles.plain_attention = PlainAttention::liger;
  const liger::kernels::KernelSet set =
      liger::kernels::resolve_kernels(toggles, torch::kCUDA, torch::kBFloat16);
  const Tensor q = torch::randn({1, 100, 2, 64}, opts), k = torch::randn({1, 100, 1, 64}, opts);
  const int64_t before = cuda::attention_forward_launches();
  set.attention(q, k, k, AttentionOptions{});
  CHECK(cuda::attention_forward_launches() > before);
}
