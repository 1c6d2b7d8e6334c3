// liger-bench: for each fused op and each backend (reference, composite,
// cuda), the median forward, backward and forward+backward time, the
// achieved bandwidth (the fewest bytes each pass must move, over its time)
// and the peak extra memory of forward+backward.
//
//   liger-bench [--op rms_norm,rope] [--dtype bf16] [--backend cuda] [--reps 30] [--json FILE]
//   liger-bench --op attention [--dtype bf16]   (variants beside cuDNN and flash SDPA:
//                                                apps/bench_attention.cpp; --shape,
//                                                --variant, --impl and --documents pick rows;
//                                                --tokens sets the sequence length, --batch
//                                                the sequences)
//
// On a CUDA device: Llama-3-8B shapes at 8192 tokens, CUDA events around
// each pass after warm-up, the GPU kept busy while the host enqueues (so host
// overhead is not counted), memory from the CUDA caching allocator (peak
// minus what was allocated before the pass). Without one: small shapes,
// host wall-clock times, no memory column; those numbers are not the ones
// the targets are about.
//
// Every op reads its inputs as intermediates (clones of leaf tensors made
// before the timed region), as in a model, where they are activations.
#include "apps/bench_attention.h"
#include "apps/name_filter.h"
#include "kernels/backend.h"
#include "kernels/registry.h"
#ifdef LIGER_WITH_CUDA
#include "kernels/cuda/cuda_ops.h"

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/Sleep.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace kernels = liger::kernels;
using kernels::Backend;
using liger::bench::wanted;
using torch::Tensor;

namespace {

using OpFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

// One op at one dtype: its inputs, which of them get gradients, and the
// fewest bytes a forward / backward pass must read plus write.
struct Case {
  std::string shape;
  std::vector<Tensor> inputs;
  std::vector<bool> wants_grad;
  double fwd_bytes = 0;
  double bwd_bytes = 0;
  int64_t heads_q = 0, heads_k = 0;  // rope_qkv: how the packed heads split; moe: heads_q = top k
};

// A row of the op table: how to build the case, and the op on a backend
// (an empty OpFn where the backend has none). Issue 4 adds cross_entropy
// and fused_linear_cross_entropy here.
struct OpSpec {
  std::string name;
  std::function<Case(torch::ScalarType, torch::Device, bool small)> make;
  std::function<OpFn(Backend, const Case&)> op;
};

const kernels::BackendProvider* provider(Backend b) {
  switch (b) {
    case Backend::reference: return &kernels::reference_backend();
    case Backend::composite: return &kernels::composite_backend();
    case Backend::cuda: return kernels::cuda_backend();
  }
  return nullptr;
}

double bytes_of(const Tensor& t) {
  return static_cast<double>(t.numel() * t.element_size());
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s = "[";
  for (int64_t v : d) s += (s.size() > 1 ? "," : "") + std::to_string(v);
  return s + "]";
}

torch::TensorOptions opts(torch::ScalarType dtype, torch::Device device) {
  return torch::TensorOptions().dtype(dtype).device(device);
}

// Tokens and widths: Llama-3-8B at 8192 tokens on a GPU, small on the CPU.
struct Sizes {
  int64_t tokens, hidden, mlp, batch, seq, heads_q, heads_k, head_dim;
};
Sizes sizes_for(bool small) {
  if (small) return {256, 4096, 2048, 1, 256, 32, 8, 128};
  return {8192, 4096, 14336, 4, 2048, 32, 8, 128};
}

Case norm_case(torch::ScalarType dtype, torch::Device device, bool small, bool bias,
               bool residual) {
  const Sizes s = sizes_for(small);
  Case c;
  c.shape = dims({s.tokens, s.hidden});
  const Tensor x = torch::randn({s.tokens, s.hidden}, opts(dtype, device));
  const Tensor w = torch::randn({s.hidden}, opts(dtype, device)) * 0.1 + 1.0;
  c.inputs = {x};
  if (residual) c.inputs.push_back(torch::randn({s.tokens, s.hidden}, opts(dtype, device)));
  c.inputs.push_back(w);
  if (bias) c.inputs.push_back(torch::randn({s.hidden}, opts(dtype, device)) * 0.1);
  c.wants_grad.assign(c.inputs.size(), true);
  const double n = bytes_of(x), d = bytes_of(w), params = bias ? 2 * d : d;
  if (residual) {  // fwd: x, r, w -> y, s; bwd: dy, ds, s, w -> d(x = r), dw
    c.fwd_bytes = 4 * n + d;
    c.bwd_bytes = 4 * n + 2 * d;
  } else {  // fwd: x, w(, b) -> y; bwd: dy, x, w -> dx, dw(, db)
    c.fwd_bytes = 2 * n + params;
    c.bwd_bytes = 3 * n + d + params;
  }
  return c;
}

Case rope_case(torch::ScalarType dtype, torch::Device device, bool small) {
  const Sizes s = sizes_for(small);
  Case c;
  c.shape = "q" + dims({s.batch, s.seq, s.heads_q, s.head_dim}) + " k" +
            dims({s.batch, s.seq, s.heads_k, s.head_dim});
  const Tensor q = torch::randn({s.batch, s.seq, s.heads_q, s.head_dim}, opts(dtype, device));
  const Tensor k = torch::randn({s.batch, s.seq, s.heads_k, s.head_dim}, opts(dtype, device));
  const auto f32 = opts(torch::kFloat, device);
  const Tensor inv_freq =
      1.0 / torch::pow(500000.0, torch::arange(0, s.head_dim, 2, f32) / double(s.head_dim));
  const Tensor freqs = torch::arange(s.seq, f32).unsqueeze(1) * inv_freq.unsqueeze(0);
  const Tensor emb = torch::cat({freqs, freqs}, -1).unsqueeze(0);
  c.inputs = {q, k, emb.cos(), emb.sin()};
  c.wants_grad = {true, true, false, false};
  const double pass = 2 * (bytes_of(q) + bytes_of(k)) + 2 * bytes_of(emb);
  c.fwd_bytes = c.bwd_bytes = pass;
  return c;
}

// A packed q|k|v projection [B, T, Hq + 2 Hk, D] and HF-style cos/sin; with
// norm_weights, q_norm and k_norm weights [D] after qkv (rope_qkv_norm).
Case packed_qkv_case(torch::ScalarType dtype, torch::Device device, bool small, int64_t heads_q,
                     int64_t heads_k, int64_t d, bool norm_weights) {
  const Sizes s = sizes_for(small);
  Case c;
  c.shape = "qkv" + dims({s.batch, s.seq, heads_q + 2 * heads_k, d});
  const Tensor qkv = torch::randn({s.batch, s.seq, heads_q + 2 * heads_k, d}, opts(dtype, device));
  const auto f32 = opts(torch::kFloat, device);
  const Tensor inv_freq = 1.0 / torch::pow(500000.0, torch::arange(0, d, 2, f32) / double(d));
  const Tensor freqs = torch::arange(s.seq, f32).unsqueeze(1) * inv_freq.unsqueeze(0);
  const Tensor emb = torch::cat({freqs, freqs}, -1).unsqueeze(0);
  c.inputs = {qkv};
  if (norm_weights) {
    for (int i = 0; i < 2; ++i)
      c.inputs.push_back(torch::randn({d}, opts(dtype, device)) * 0.1 + 1);
  }
  c.inputs.push_back(emb.cos());
  c.inputs.push_back(emb.sin());
  c.wants_grad.assign(c.inputs.size(), false);
  for (size_t i = 0; i < (norm_weights ? 3u : 1u); ++i) c.wants_grad[i] = true;
  c.heads_q = heads_q;
  c.heads_k = heads_k;
  // Each way reads and writes q, k and v once; with the norms, backward also
  // reads forward's qkv (and the tiny weights and rstd).
  c.fwd_bytes = c.bwd_bytes = 2 * bytes_of(qkv) + 2 * bytes_of(emb);
  if (norm_weights) c.bwd_bytes += bytes_of(qkv);
  return c;
}

// The packed q|k|v projection at Llama-3.2-1B's attention shape (32 query,
// 8 key/value heads of 64): each way reads and writes q, k and v once.
Case rope_qkv_case(torch::ScalarType dtype, torch::Device device, bool small) {
  return packed_qkv_case(dtype, device, small, 32, 8, 64, false);
}

// Qwen3-8B's attention shape (32 query, 8 key/value heads of 128): rope_qkv
// there (rope_qkv_d128), the baseline of rope_qkv_norm (the per-head q/k
// RMSNorm in the same pass) at the same shape.
Case rope_qkv_d128_case(torch::ScalarType dtype, torch::Device device, bool small) {
  return packed_qkv_case(dtype, device, small, 32, 8, 128, false);
}
Case rope_qkv_norm_case(torch::ScalarType dtype, torch::Device device, bool small) {
  return packed_qkv_case(dtype, device, small, 32, 8, 128, true);
}

Case glu_case(torch::ScalarType dtype, torch::Device device, bool small) {
  const Sizes s = sizes_for(small);
  Case c;
  c.shape = dims({s.tokens, s.mlp});
  c.inputs = {torch::randn({s.tokens, s.mlp}, opts(dtype, device)),
              torch::randn({s.tokens, s.mlp}, opts(dtype, device))};
  c.wants_grad = {true, true};
  const double n = bytes_of(c.inputs[0]);
  c.fwd_bytes = 3 * n;  // gate, up -> y
  c.bwd_bytes = 5 * n;  // dy, gate, up -> d_gate, d_up
  return c;
}

// Cross entropy on logits [tokens, vocab] (Llama 3's 128256).
Case ce_case(torch::ScalarType dtype, torch::Device device, bool small) {
  const int64_t n = small ? 256 : 8192, v = small ? 1000 : 128256;
  Case c;
  c.shape = dims({n, v});
  c.inputs = {torch::randn({n, v}, opts(dtype, device)) * 4,
              torch::randint(0, v, {n}, opts(torch::kLong, device))};
  c.wants_grad = {true, false};
  const double logits = bytes_of(c.inputs[0]);
  c.fwd_bytes = 2 * logits;  // logits -> gradient (computed in forward)
  c.bwd_bytes = 0;           // upstream 1: nothing to scale
  return c;
}

// Fused linear cross entropy: x [tokens, hidden], lm_head W [vocab, hidden].
Case flce_case(torch::ScalarType dtype, torch::Device device, bool small) {
  const int64_t n = small ? 256 : 8192, h = small ? 64 : 4096, v = small ? 1000 : 128256;
  Case c;
  c.shape = "x " + dims({n, h}) + ", W " + dims({v, h});
  c.inputs = {torch::randn({n, h}, opts(dtype, device)),
              torch::randn({v, h}, opts(dtype, device)) * 0.02,
              torch::randint(0, v, {n}, opts(torch::kLong, device))};
  c.wants_grad = {true, true, false};
  // What must move at least: x, W, labels in; grad x, grad W out (the GEMMs
  // dominate: see the TFLOP/s in the notes, 3 GEMMs of 2*N*V*H each).
  c.fwd_bytes = 2 * (bytes_of(c.inputs[0]) + bytes_of(c.inputs[1]));
  c.bwd_bytes = 0;
  return c;
}

// Fused linear preference (DPO sigmoid): 16 sequences of 4096 tokens (8
// pairs; small: 4 of 64), each with a 512-token prompt that is not trained
// (small: 16), x [tokens, hidden], lm_head W [vocab, hidden], the summed
// reference log-probs [16]. Same least traffic as the fused cross entropy;
// the composite runs the logits GEMM twice (4 GEMMs of 2*N*V*H).
Case preference_case(torch::ScalarType dtype, torch::Device device, bool small) {
  const int64_t sequences = small ? 4 : 16, length = small ? 64 : 4096, prompt = small ? 16 : 512;
  const int64_t n = sequences * length, h = small ? 64 : 4096, v = small ? 1000 : 128256;
  Case c;
  c.shape =
      "x " + dims({n, h}) + ", W " + dims({v, h}) + ", " + std::to_string(sequences) + " sequences";
  Tensor labels = torch::randint(0, v, {sequences, length}, opts(torch::kLong, device));
  labels.narrow(1, 0, prompt).fill_(-100);
  const Tensor sequence = torch::arange(sequences, opts(torch::kLong, device))
                              .unsqueeze(1)
                              .expand({sequences, length})
                              .reshape({n});
  c.inputs = {torch::randn({n, h}, opts(dtype, device)),
              torch::randn({v, h}, opts(dtype, device)) * 0.02, labels.reshape({n}), sequence,
              torch::randn({sequences}, opts(torch::kFloat, device)) - 1000.0};
  c.wants_grad = {true, true, false, false, false};
  c.fwd_bytes = 2 * (bytes_of(c.inputs[0]) + bytes_of(c.inputs[1]));
  c.bwd_bytes = 0;
  return c;
}

// Attention of Mistral-7B's sliding layer at its native length: q [1, 8192,
// 32, 128], k and v [1, 8192, 8, 128], a window of 4096 (small: 256 tokens,
// a window of 128). Forward reads q, k, v and writes out; backward reads them,
// out and its gradient, and writes dq, dk, dv. The matmuls dominate: about
// 4 * T * window * 32 * 128 FLOPs forward and twice that backward (the chunks
// recompute the scores).
Case attention_case(torch::ScalarType dtype, torch::Device device, bool small) {
  const int64_t t = small ? 256 : 8192, heads_q = 32, heads_k = 8, d = 128;
  Case c;
  c.shape = "q" + dims({1, t, heads_q, d}) + " k" + dims({1, t, heads_k, d}) + " window " +
            std::to_string(small ? 128 : 4096);
  c.inputs = {torch::randn({1, t, heads_q, d}, opts(dtype, device)),
              torch::randn({1, t, heads_k, d}, opts(dtype, device)),
              torch::randn({1, t, heads_k, d}, opts(dtype, device))};
  c.wants_grad = {true, true, true};
  const double q = bytes_of(c.inputs[0]), kv = bytes_of(c.inputs[1]);
  c.fwd_bytes = 2 * q + 2 * kv;
  c.bwd_bytes = 4 * q + 4 * kv;
  return c;
}

// A linear layer's product: x [tokens, hidden] @ W^T, W [mlp, hidden] (the
// gate projection); no gradients (the op has no autograd). 2 tokens hidden mlp
// FLOPs: TFLOP/s = that / fwd ms / 1e9.
Case gemm_case(torch::ScalarType dtype, torch::Device device, bool small) {
  const Sizes s = sizes_for(small);
  Case c;
  c.shape = "x " + dims({s.tokens, s.hidden}) + " W^T " + dims({s.hidden, s.mlp});
  c.inputs = {torch::randn({s.tokens, s.hidden}, opts(dtype, device)),
              torch::randn({s.mlp, s.hidden}, opts(dtype, device)) * 0.02};
  c.wants_grad = {false, false};
  c.fwd_bytes = bytes_of(c.inputs[0]) + bytes_of(c.inputs[1]) +
                static_cast<double>(s.tokens * s.mlp) * c.inputs[0].element_size();
  c.bwd_bytes = 0;
  return c;
}

// The sparse MoE block (x [N, H], router [E, H], gate_up [E, 2F, H], down
// [E, H, F], top k), fwd + bwd, at two shapes: Liger-Kernel's MoE benchmark
// (E 128, k 8, hidden 2048, expert FFN 768) and Mixtral's (E 8, k 2, hidden
// 2048, FFN 5632), 8192 tokens each (small: 256 tokens, hidden 64). The
// grouped GEMMs dominate: 6 N k H F FLOPs forward, twice that backward. The
// bytes: every weight and x read, y written (forward); again, with the
// weight gradients written (backward).
struct MoeShape {
  int64_t experts, top_k, hidden, ffn;
};

Case moe_case(torch::ScalarType dtype, torch::Device device, bool small, MoeShape m) {
  const int64_t n = small ? 256 : 8192;
  if (small) {
    m.hidden = 64;
    m.ffn = std::max<int64_t>(m.ffn / 64, 8);
  }
  Case c;
  c.shape = "x " + dims({n, m.hidden}) + ", " + std::to_string(m.top_k) + " of " +
            std::to_string(m.experts) + " experts of FFN " + std::to_string(m.ffn);
  c.inputs = {torch::randn({n, m.hidden}, opts(dtype, device)),
              torch::randn({m.experts, m.hidden}, opts(dtype, device)) * 0.1,
              torch::randn({m.experts, 2 * m.ffn, m.hidden}, opts(dtype, device)) * 0.02,
              torch::randn({m.experts, m.hidden, m.ffn}, opts(dtype, device)) * 0.02};
  c.wants_grad = {true, true, true, true};
  const double weights = bytes_of(c.inputs[1]) + bytes_of(c.inputs[2]) + bytes_of(c.inputs[3]);
  c.fwd_bytes = weights + 2 * bytes_of(c.inputs[0]);
  c.bwd_bytes = 2 * weights + 3 * bytes_of(c.inputs[0]);
  c.heads_q = m.top_k;  // the top k travels with the case
  return c;
}

std::vector<OpSpec> op_table() {
  kernels::RmsNormOptions rms;
  rms.eps = 1e-5;
  std::vector<OpSpec> t;
  t.push_back(
      {"rms_norm",
       [](auto dt, auto dev, bool small) { return norm_case(dt, dev, small, false, false); },
       [rms](Backend b, const Case&) -> OpFn {
         const auto* p = provider(b);
         if (p == nullptr || p->ops.rms_norm == nullptr) return {};
         auto fn = p->ops.rms_norm;
         return [fn, rms](const std::vector<Tensor>& in) {
           return std::vector<Tensor>{fn(in[0], in[1], rms)};
         };
       }});
  t.push_back({"layer_norm",
               [](auto dt, auto dev, bool small) { return norm_case(dt, dev, small, true, false); },
               [](Backend b, const Case&) -> OpFn {
                 const auto* p = provider(b);
                 if (p == nullptr || p->ops.layer_norm == nullptr) return {};
                 auto fn = p->ops.layer_norm;
                 return [fn](const std::vector<Tensor>& in) {
                   return std::vector<Tensor>{fn(in[0], in[1], in[2], 1e-5)};
                 };
               }});
  // The registry's add_rms_norm under its kernel's name (the cuda backend's
  // fused pass; the add, then the backend's rms_norm elsewhere).
  t.push_back({"fused_add_rms_norm",
               [](auto dt, auto dev, bool small) { return norm_case(dt, dev, small, false, true); },
               [rms](Backend b, const Case&) -> OpFn {
                 const auto* p = provider(b);
                 if (p == nullptr || p->ops.add_rms_norm == nullptr) return {};
                 auto fn = p->ops.add_rms_norm;
                 return [fn, rms](const std::vector<Tensor>& in) {
                   auto [y, s] = fn(in[0], in[1], in[2], rms);
                   return std::vector<Tensor>{y, s};
                 };
               }});
  t.push_back({"rope", rope_case, [](Backend b, const Case&) -> OpFn {
                 const auto* p = provider(b);
                 if (p == nullptr || p->ops.rope == nullptr) return {};
                 auto fn = p->ops.rope;
                 return [fn](const std::vector<Tensor>& in) {
                   auto [q, k] = fn(in[0], in[1], in[2], in[3]);
                   return std::vector<Tensor>{q, k};
                 };
               }});
  auto rope_qkv_op = [](Backend b, const Case& c) -> OpFn {
    const auto* p = provider(b);
    if (p == nullptr || p->ops.rope_qkv == nullptr) return {};
    auto fn = p->ops.rope_qkv;
    const int64_t heads_q = c.heads_q, heads_k = c.heads_k;
    return [fn, heads_q, heads_k](const std::vector<Tensor>& in) {
      const auto out = fn(in[0], heads_q, heads_k, in[1], in[2]);
      return std::vector<Tensor>{out.q, out.k, out.v};
    };
  };
  t.push_back({"rope_qkv", rope_qkv_case, rope_qkv_op});
  t.push_back({"rope_qkv_d128", rope_qkv_d128_case, rope_qkv_op});
  t.push_back({"rope_qkv_norm", rope_qkv_norm_case, [rms](Backend b, const Case& c) -> OpFn {
                 const auto* p = provider(b);
                 if (p == nullptr || p->ops.rope_qkv_norm == nullptr) return {};
                 auto fn = p->ops.rope_qkv_norm;
                 const int64_t heads_q = c.heads_q, heads_k = c.heads_k;
                 return [fn, heads_q, heads_k, rms](const std::vector<Tensor>& in) {
                   const auto out = fn(in[0], heads_q, heads_k, in[1], in[2], rms, in[3], in[4]);
                   return std::vector<Tensor>{out.q, out.k, out.v};
                 };
               }});
  for (const char* name : {"swiglu", "geglu"}) {
    const bool silu = std::string(name) == "swiglu";
    t.push_back({name, glu_case, [silu](Backend b, const Case&) -> OpFn {
                   const auto* p = provider(b);
                   if (p == nullptr) return {};
                   auto fn = silu ? p->ops.swiglu : p->ops.geglu;
                   if (fn == nullptr) return {};
                   return [fn](const std::vector<Tensor>& in) {
                     return std::vector<Tensor>{fn(in[0], in[1])};
                   };
                 }});
  }
  t.push_back({"cross_entropy", ce_case, [](Backend b, const Case&) -> OpFn {
                 const auto* p = provider(b);
                 if (p == nullptr || p->ops.cross_entropy == nullptr) return {};
                 auto fn = p->ops.cross_entropy;
                 return [fn](const std::vector<Tensor>& in) {
                   return std::vector<Tensor>{fn(in[0], in[1], kernels::CrossEntropyOptions{})};
                 };
               }});
  for (const auto mode : {kernels::FlceMode::speed, kernels::FlceMode::lean}) {
    const std::string name = mode == kernels::FlceMode::speed ? "fused_linear_cross_entropy"
                                                              : "fused_linear_cross_entropy_lean";
    t.push_back({name, flce_case, [mode](Backend b, const Case&) -> OpFn {
                   const auto* p = provider(b);
                   if (p == nullptr || p->ops.fused_linear_cross_entropy == nullptr) return {};
                   // composite has no lean/speed distinction: bench it once
                   if (mode == kernels::FlceMode::lean && b != Backend::cuda) return {};
                   auto fn = p->ops.fused_linear_cross_entropy;
                   kernels::FusedLinearCrossEntropyOptions o;
                   o.mode = mode;
                   o.chunk_mb = mode == kernels::FlceMode::speed ? 1024.0 : 256.0;
                   return [fn, o](const std::vector<Tensor>& in) {
                     return std::vector<Tensor>{fn(in[0], in[1], Tensor(), in[2], o)};
                   };
                 }});
  }
  t.push_back({"fused_linear_preference", preference_case, [](Backend b, const Case& c) -> OpFn {
                 const auto* p = provider(b);
                 if (p == nullptr || p->ops.fused_linear_preference == nullptr) return {};
                 auto fn = p->ops.fused_linear_preference;
                 kernels::PreferenceOptions o;  // DPO sigmoid, beta 0.1
                 o.num_pairs = c.inputs[4].size(0) / 2;
                 o.chunk_mb = 1024.0;
                 return [fn, o](const std::vector<Tensor>& in) {
                   const kernels::PreferenceLossResult r = fn(in[0], in[1], in[2], in[3], in[4], o);
                   return std::vector<Tensor>{r.loss};
                 };
               }});
  t.push_back({"attention_window", attention_case, [](Backend b, const Case& c) -> OpFn {
                 const auto* p = provider(b);
                 if (p == nullptr || p->ops.attention == nullptr) return {};
                 auto fn = p->ops.attention;
                 kernels::AttentionOptions o;
                 o.sliding_window = c.inputs[0].size(1) / 2;
                 return [fn, o](const std::vector<Tensor>& in) {
                   return std::vector<Tensor>{fn(in[0], in[1], in[2], o)};
                 };
               }});
  // --op moe: both shapes, one row each (the shape column tells them apart).
  for (const MoeShape shape : {MoeShape{128, 8, 2048, 768}, MoeShape{8, 2, 2048, 5632}}) {
    t.push_back({"moe",
                 [shape](auto dt, auto dev, bool small) { return moe_case(dt, dev, small, shape); },
                 [](Backend b, const Case& c) -> OpFn {
                   const auto* p = provider(b);
                   if (p == nullptr || p->ops.moe == nullptr) return {};
                   auto fn = p->ops.moe;
                   const int64_t top_k = c.heads_q;
                   return [fn, top_k](const std::vector<Tensor>& in) {
                     return std::vector<Tensor>{fn(in[0], in[1], in[2], in[3], top_k).y};
                   };
                 }});
  }
  t.push_back({"tuned_gemm", gemm_case, [](Backend b, const Case&) -> OpFn {
                 const auto* p = provider(b);
                 if (p == nullptr || p->ops.tuned_gemm == nullptr) return {};
                 auto fn = p->ops.tuned_gemm;
                 return [fn](const std::vector<Tensor>& in) {
                   return std::vector<Tensor>{fn(in[0], in[1].t(), Tensor(), Tensor())};
                 };
               }});
  return t;
}

// ---------------------------------------------------------------------------
// Timing and memory
// ---------------------------------------------------------------------------

class Timer {
 public:
  explicit Timer(bool cuda) : cuda_(cuda) {}

  // Called right before the timed region.
  void start() {
#ifdef LIGER_WITH_CUDA
    if (cuda_) {
      // Keep the GPU busy (~0.1 ms) while the host enqueues the pass, so the
      // events time the kernels rather than the host's launch overhead.
      at::cuda::sleep(200000);
      start_.record();
      return;
    }
#endif
    host_start_ = std::chrono::steady_clock::now();
  }

  // Milliseconds since start().
  double stop() {
#ifdef LIGER_WITH_CUDA
    if (cuda_) {
      end_.record();
      end_.synchronize();
      return start_.elapsed_time(end_);
    }
#endif
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - host_start_)
        .count();
  }

 private:
  bool cuda_;
#ifdef LIGER_WITH_CUDA
  at::cuda::CUDAEvent start_{cudaEventDefault}, end_{cudaEventDefault};
#endif
  std::chrono::steady_clock::time_point host_start_;
};

void sync(bool cuda) {
  if (cuda) torch::cuda::synchronize();
}

#ifdef LIGER_WITH_CUDA
int64_t allocated_bytes(bool peak) {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
  const auto& s =
      stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
  return peak ? s.peak : s.current;
}
#endif

struct Result {
  std::string op, backend, dtype, shape;
  double fwd_ms = 0, bwd_ms = 0, full_ms = 0;
  double fwd_gbps = 0, bwd_gbps = 0, full_gbps = 0;
  double peak_mib = -1;  // < 0: not measured (no CUDA device)
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Fresh inputs for one pass: leaves (the case's tensors, gradients cleared)
// and the intermediates the op reads (clones of the leaves).
struct Feed {
  std::vector<Tensor> leaves, inter;
};

Feed feed(const Case& c) {
  Feed f;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    Tensor leaf = c.inputs[i].detach();
    if (c.wants_grad[i]) leaf.requires_grad_(true);
    f.leaves.push_back(leaf);
    f.inter.push_back(c.wants_grad[i] ? leaf.clone() : leaf);
  }
  return f;
}

void backward(const std::vector<Tensor>& outs, const std::vector<Tensor>& ups) {
  std::vector<Tensor> o, u;
  for (size_t i = 0; i < outs.size(); ++i) {
    if (!outs[i].requires_grad()) continue;
    o.push_back(outs[i]);
    u.push_back(ups[i]);
  }
  if (o.empty()) return;  // an op without gradients (tuned_gemm)
  torch::autograd::backward(o, u);
}

Result measure(const OpFn& fn, const Case& c, bool cuda, int warmup, int reps) {
  Result r;
  // Upstream gradients, one per output, made once.
  std::vector<Tensor> ups;
  {
    Feed f = feed(c);
    // A scalar output is a loss: its upstream gradient is 1, as from loss.backward().
    for (const Tensor& out : fn(f.inter)) {
      ups.push_back(out.dim() == 0 ? torch::ones_like(out) : torch::randn_like(out));
    }
  }
  Timer timer(cuda);
  std::vector<double> fwd, bwd, full;
  for (int i = 0; i < warmup + reps; ++i) {
    const bool keep = i >= warmup;
    {  // forward (in grad mode: what it saves for backward is part of its cost)
      Feed f = feed(c);
      sync(cuda);
      timer.start();
      std::vector<Tensor> outs = fn(f.inter);
      const double ms = timer.stop();
      if (keep) fwd.push_back(ms);
    }
    {  // backward
      Feed f = feed(c);
      std::vector<Tensor> outs = fn(f.inter);
      sync(cuda);
      timer.start();
      backward(outs, ups);
      const double ms = timer.stop();
      if (keep) bwd.push_back(ms);
    }
    {  // forward + backward
      Feed f = feed(c);
      sync(cuda);
      timer.start();
      std::vector<Tensor> outs = fn(f.inter);
      backward(outs, ups);
      const double ms = timer.stop();
      if (keep) full.push_back(ms);
    }
  }
  r.fwd_ms = median(fwd);
  r.bwd_ms = median(bwd);
  r.full_ms = median(full);
  const auto gbps = [](double bytes, double ms) {
    return bytes > 0 && ms > 0 ? bytes / (ms * 1e-3) / 1e9 : 0.0;
  };
  r.fwd_gbps = gbps(c.fwd_bytes, r.fwd_ms);
  r.bwd_gbps = gbps(c.bwd_bytes, r.bwd_ms);
  r.full_gbps = gbps(c.fwd_bytes + c.bwd_bytes, r.full_ms);

#ifdef LIGER_WITH_CUDA
  if (cuda) {  // peak extra memory of forward + backward
    Feed f = feed(c);
    sync(cuda);
    const int64_t base = allocated_bytes(false);
    c10::cuda::CUDACachingAllocator::resetPeakStats(c10::cuda::current_device());
    {
      std::vector<Tensor> outs = fn(f.inter);
      backward(outs, ups);
      sync(cuda);
    }
    r.peak_mib = static_cast<double>(allocated_bytes(true) - base) / (1024.0 * 1024.0);
  }
#endif
  return r;
}

torch::ScalarType parse_dtype(const std::string& s) {
  if (s == "bf16" || s == "bfloat16") return torch::kBFloat16;
  if (s == "fp16" || s == "float16") return torch::kHalf;
  if (s == "fp32" || s == "float32") return torch::kFloat;
  throw std::invalid_argument("--dtype: unknown dtype '" + s + "' (use bf16, fp16, fp32 or all)");
}

std::string short_dtype(torch::ScalarType t) {
  return t == torch::kBFloat16 ? "bf16" : t == torch::kHalf ? "fp16" : "fp32";
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

int run(int argc, char** argv) {
  CLI::App app{"liger-bench: time, bandwidth and peak memory of each fused op on each backend"};
  std::string op_filter, dtype_filter = "all", backend_filter = "all", json_path;
  int reps = 30, warmup = 5;
  app.add_option("--op", op_filter, "ops to run, comma separated (default: all)");
  app.add_option("--dtype", dtype_filter, "bf16, fp16, fp32 or all");
  app.add_option("--backend", backend_filter, "reference, composite, cuda or all");
  app.add_option("--reps", reps, "timed repetitions per pass (median; at least 20)")
      ->check(CLI::Range(20, 100000));
  app.add_option("--warmup", warmup, "untimed repetitions first")->check(CLI::Range(1, 1000));
  app.add_option("--json", json_path, "also write the results to this JSON file");
  std::string shape_filter, variant_filter, impl_filter;
  int documents = 8;
  int64_t tokens = 8192;
  int64_t batch = 1;
  app.add_option("--shape", shape_filter,
                 "--op attention: shapes, comma separated: llama3-8b, llama3-1b (default both)");
  app.add_option("--variant", variant_filter,
                 "--op attention: variants, comma separated: causal, window, softcap, documents "
                 "(default all)");
  app.add_option("--impl", impl_filter,
                 "--op attention: implementations, comma separated, as the table names them "
                 "(default all)");
  app.add_option("--documents", documents,
                 "--op attention: documents per sequence of the documents variant (default 8)");
  app.add_option("--tokens", tokens, "--op attention: tokens per sequence (default 8192)");
  app.add_option("--batch", batch, "--op attention: sequences per measurement (default 1)");
  CLI11_PARSE(app, argc, argv);

  const std::vector<std::string> ops = split(op_filter);
  const bool attention_only = ops.size() == 1 && ops[0] == "attention";
  for (const char* flag :
       {"--shape", "--variant", "--impl", "--documents", "--tokens", "--batch"}) {
    if (app.count(flag) > 0 && !attention_only) {
      throw std::invalid_argument(std::string(flag) + " applies to --op attention alone");
    }
  }
  if (attention_only) {  // its own table: variants and SDPA beside
    liger::bench::AttentionBenchOptions o;
    o.dtype = dtype_filter == "all" ? "bf16" : dtype_filter;
    o.reps = reps;
    o.warmup = warmup;
    o.json_path = json_path;
    o.shapes = split(shape_filter);
    o.variants = split(variant_filter);
    o.impls = split(impl_filter);
    o.documents = documents;
    o.tokens = tokens;
    o.batch = batch;
    return liger::bench::run_attention_bench(o);
  }
  const std::vector<OpSpec> table = op_table();
  for (const std::string& name : ops) {
    const bool known =
        std::any_of(table.begin(), table.end(), [&](const OpSpec& s) { return s.name == name; });
    if (!known) {
      std::string names;
      for (const OpSpec& s : table) names += (names.empty() ? "" : ", ") + s.name;
      throw std::invalid_argument("--op: unknown op '" + name + "' (known: " + names + ")");
    }
  }
  std::vector<torch::ScalarType> dtypes;
  if (dtype_filter == "all") {
    dtypes = {torch::kBFloat16, torch::kHalf, torch::kFloat};
  } else {
    for (const std::string& d : split(dtype_filter)) dtypes.push_back(parse_dtype(d));
  }
  std::vector<Backend> backends;
  for (Backend b : {Backend::reference, Backend::composite, Backend::cuda}) {
    if (backend_filter == "all" || wanted(split(backend_filter), kernels::backend_name(b))) {
      backends.push_back(b);
    }
  }
  if (backends.empty()) {
    throw std::invalid_argument("--backend: unknown backend '" + backend_filter +
                                "' (use reference, composite, cuda or all)");
  }

  const bool cuda = torch::cuda::is_available();
  const torch::Device device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  std::string device_name = "cpu";
#ifdef LIGER_WITH_CUDA
  if (cuda) device_name = at::cuda::getCurrentDeviceProperties()->name;
#endif
  if (!cuda) {
    std::cout << "liger-bench: no CUDA device: timing reference and composite on small CPU "
                 "shapes with the host clock. These are not the GPU numbers the targets are "
                 "about; run on a CUDA device for those.\n";
  }
  std::cout << "device: " << device_name << ", torch " << TORCH_VERSION << ", " << now_utc()
            << ", median of " << reps << " after " << warmup << " warm-up\n";

  std::vector<Result> results;
  char line[512];
  std::snprintf(line, sizeof line, "%-19s %-9s %-5s %-26s %9s %9s %9s %8s %8s %8s %9s\n", "op",
                "backend", "dtype", "shape", "fwd ms", "bwd ms", "f+b ms", "fwd GB/s", "bwd GB/s",
                "f+b GB/s", "peak MiB");
  std::cout << line;
  for (const OpSpec& spec : table) {
    if (!wanted(ops, spec.name)) continue;
    for (torch::ScalarType dtype : dtypes) {
      torch::manual_seed(0);
      const Case c = spec.make(dtype, device, !cuda);
      for (Backend b : backends) {
        if (b == Backend::cuda && !cuda) continue;  // needs a CUDA device
        const OpFn fn = spec.op(b, c);
        if (!fn) continue;  // the backend has no such op
        Result r = measure(fn, c, cuda, warmup, reps);
        r.op = spec.name;
        r.backend = kernels::backend_name(b);
        r.dtype = short_dtype(dtype);
        r.shape = c.shape;
        char peak[32] = "-";
        if (r.peak_mib >= 0) std::snprintf(peak, sizeof peak, "%.1f", r.peak_mib);
        std::snprintf(line, sizeof line,
                      "%-19s %-9s %-5s %-26s %9.4f %9.4f %9.4f %8.0f %8.0f %8.0f %9s\n",
                      r.op.c_str(), r.backend.c_str(), r.dtype.c_str(), r.shape.c_str(), r.fwd_ms,
                      r.bwd_ms, r.full_ms, r.fwd_gbps, r.bwd_gbps, r.full_gbps, peak);
        std::cout << line << std::flush;
        results.push_back(r);
      }
    }
  }

  if (!json_path.empty()) {
    nlohmann::json j;
    j["device"] = device_name;
    j["torch"] = TORCH_VERSION;
    j["date"] = now_utc();
    j["reps"] = reps;
    j["warmup"] = warmup;
    j["timing"] = cuda ? "cuda events, median" : "host clock, median (no CUDA device)";
    j["results"] = nlohmann::json::array();
    for (const Result& r : results) {
      nlohmann::json e = {{"op", r.op},
                          {"backend", r.backend},
                          {"dtype", r.dtype},
                          {"shape", r.shape},
                          {"fwd_ms", r.fwd_ms},
                          {"bwd_ms", r.bwd_ms},
                          {"full_ms", r.full_ms},
                          {"fwd_gbps", r.fwd_gbps},
                          {"bwd_gbps", r.bwd_gbps},
                          {"full_gbps", r.full_gbps}};
      e["peak_extra_mib"] = r.peak_mib >= 0 ? nlohmann::json(r.peak_mib) : nlohmann::json();
      j["results"].push_back(e);
    }
    std::ofstream out(json_path);
    if (!out) throw std::runtime_error("--json: cannot write " + json_path);
    out << j.dump(2) << "\n";
    std::cout << "wrote " << json_path << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "liger-bench: " << e.what() << "\n";
    return 1;
  }
}
