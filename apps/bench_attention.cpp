// liger-bench --op attention. At 8192 tokens (--tokens sets another length),
// for Llama-3-8B's attention (32 query heads over 8 key/value heads of 128) and the 1B bench shape
// (32 over 8 of 64), each mask variant (plain causal; a window of 4096; softcap 50 + a window of
// 4096; 8 packed documents) on each implementation that computes it:
//   liger      kernels/cuda/attention.cu (cuda::flash_attention) as the trainer runs it,
//              its default settings (on an sm_90 device: warpgroup MMA at head_dim 64
//              and 128 with TMA copies, the products' order chosen per pass and
//              variant, the warp-specialized forward and dk/dv where no document mask
//              applies)
//   liger cp.async, liger cp.async one-at-a-time, liger cp.async overlap  the
//              one-warpgroup passes on warpgroup MMA with every thread's cp.async
//              copies, the products' order per pass and variant, one at a time, or
//              overlapped (head_dim <= 128)
//   liger mma.sync  the passes on their mma.sync kernels (head_dim <= 128)
//   liger tma, liger tma one-at-a-time, liger tma overlap  the same three with the
//              copies on the tensor memory accelerator, no warp-specialized pass
//   liger ws   the warp-specialized forward and dk/dv (a TMA producer warpgroup, two
//              consumer warpgroups: 128 queries over 128-key tiles, 128 keys over
//              64-query tiles), dq fused into dk/dv; the forward's consumers take turns
//   liger ws one-at-a-time, liger ws overlap  the same with the forward consumers'
//              products one at a time, or overlapped without taking turns
//   liger ws ping-pong  "liger ws" with every pass's products overlapped
//   liger ws dq-pass  "liger ws" with dq as its own pass (as "liger tma"), not fused
//              into the dk/dv pass
//   liger ws q64  "liger ws" with the fused dq's query tiles of 64 rows at head_dim 64
//              (the default there: 128)
//   cudnn      ATen SDPA with only the cuDNN backend enabled (plain causal)
//   flash      ATen SDPA with only its flash backend enabled (plain causal)
//   composite  the exact query chunks (the variants SDPA cannot mask)
// Median forward and forward+backward times (CUDA events), TFLOP/s over the
// visible (query, key) pairs only: forward 4 D flops per pair and head (q k^T
// and p v), backward 2.5x forward (the usual count of its five products),
// and the peak extra memory of forward+backward.
#include "apps/bench_attention.h"
#include "apps/name_filter.h"

#include "kernels/composite/composite.h"
#include "kernels/document_length.h"
#ifdef LIGER_WITH_CUDA
#include "kernels/cuda/cuda_ops.h"

#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace liger::bench {
namespace {

using kernels::AttentionOptions;
using torch::Tensor;

struct Shape {
  std::string name;
  int64_t t, heads_q, heads_k, head_dim;
};

struct Variant {
  std::string key;  // what --variant names: causal, window, softcap or documents
  std::string name;
  int64_t window = 0;
  double softcap = 0.0;
  int64_t documents = 0;  // > 0: that many equal documents packed in the row
};

// Visible (query, key) pairs of one head: the FLOP count's unit.
double visible_pairs(int64_t t, const Variant& v) {
  const int64_t doc_len = v.documents > 0 ? (t + v.documents - 1) / v.documents : t;
  double pairs = 0;
  for (int64_t i = 0; i < t; ++i) {
    int64_t first = 0;
    if (v.window > 0) first = std::max<int64_t>(first, i - v.window + 1);
    if (v.documents > 0) first = std::max<int64_t>(first, (i / doc_len) * doc_len);
    pairs += static_cast<double>(i - first + 1);
  }
  return pairs;
}

// Throws, naming the flag and the known names, for a name not among them.
void check_names(const char* flag, const std::vector<std::string>& filter,
                 const std::vector<std::string>& known) {
  for (const std::string& name : filter) {
    if (std::find(known.begin(), known.end(), name) != known.end()) continue;
    std::string list;
    for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
    throw std::invalid_argument(std::string(flag) + ": unknown name '" + name +
                                "' (known: " + list + ")");
  }
}

const std::vector<Shape>& all_shapes() {
  static const std::vector<Shape> shapes = {{"llama3-8b", 8192, 32, 8, 128},
                                            {"llama3-1b", 8192, 32, 8, 64}};
  return shapes;
}

std::vector<Variant> all_variants(int documents) {
  return {{"causal", "causal"},
          {"window", "window 4096", 4096},
          {"softcap", "softcap 50 + window 4096", 4096, 50.0},
          {"documents", std::to_string(documents) + " documents", 0, 0.0, documents}};
}

const std::vector<std::string> kImpls = {"liger",
                                         "liger cp.async",
                                         "liger cp.async one-at-a-time",
                                         "liger cp.async overlap",
                                         "liger mma.sync",
                                         "liger tma",
                                         "liger tma one-at-a-time",
                                         "liger tma overlap",
                                         "liger ws",
                                         "liger ws one-at-a-time",
                                         "liger ws overlap",
                                         "liger ws ping-pong",
                                         "liger ws dq-pass",
                                         "liger ws q64",
                                         "cudnn",
                                         "flash",
                                         "composite"};

void check_filters(const AttentionBenchOptions& o) {
  if (o.tokens < 64 || o.tokens > 65536) {
    throw std::invalid_argument("--tokens: 64 to 65536 tokens per sequence, got " +
                                std::to_string(o.tokens));
  }
  if (o.batch < 1 || o.batch > 64) {
    throw std::invalid_argument("--batch: 1 to 64 sequences, got " + std::to_string(o.batch));
  }
  if (o.documents < 1 || o.documents > o.tokens) {
    throw std::invalid_argument("--documents: 1 to --tokens (" + std::to_string(o.tokens) +
                                ") documents per sequence, got " + std::to_string(o.documents));
  }
  std::vector<std::string> shapes, variants;
  for (const Shape& s : all_shapes()) shapes.push_back(s.name);
  for (const Variant& v : all_variants(o.documents)) variants.push_back(v.key);
  check_names("--shape", o.shapes, shapes);
  check_names("--variant", o.variants, variants);
  check_names("--impl", o.impls, kImpls);
}

std::vector<Shape> chosen_shapes(const AttentionBenchOptions& o) {
  std::vector<Shape> out;
  for (Shape s : all_shapes()) {
    s.t = o.tokens;
    if (wanted(o.shapes, s.name)) out.push_back(s);
  }
  return out;
}

std::vector<Variant> chosen_variants(const AttentionBenchOptions& o) {
  std::vector<Variant> out;
  for (const Variant& v : all_variants(o.documents)) {
    if (wanted(o.variants, v.key)) out.push_back(v);
  }
  return out;
}

struct Row {
  std::string shape, variant, impl;
  double fwd_ms = 0, full_ms = 0, fwd_tflops = 0, full_tflops = 0, peak_mib = 0;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

#ifdef LIGER_WITH_CUDA
using AttentionFn = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>;

// SDPA restricted to one backend ([B, T, H, D] in and out, GQA by enable_gqa).
AttentionFn sdpa_only(bool cudnn) {
  return [cudnn](const Tensor& q, const Tensor& k, const Tensor& v) {
    auto& ctx = at::globalContext();
    ctx.setSDPUseCuDNN(cudnn);
    ctx.setSDPUseFlash(!cudnn);
    ctx.setSDPUseMemEfficient(false);
    ctx.setSDPUseMath(false);
    const Tensor out = at::scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), {}, 0.0, /*is_causal=*/true,
        c10::nullopt, /*enable_gqa=*/q.size(2) != k.size(2));
    ctx.setSDPUseCuDNN(true);
    ctx.setSDPUseFlash(true);
    ctx.setSDPUseMemEfficient(true);
    ctx.setSDPUseMath(true);
    return out.transpose(1, 2);
  };
}

// The process-wide settings of the cuda attention (kernels/cuda/cuda_ops.h),
// set for one measurement and restored after it.
class ScopedAttentionSettings {
 public:
  ScopedAttentionSettings(bool wgmma, bool tma, int schedule, int warp_specialized, bool fused_dq,
                          int fused_dq_query_rows)
      : forward_wgmma_(kernels::cuda::set_attention_forward_wgmma(wgmma)),
        backward_wgmma_(kernels::cuda::set_attention_backward_wgmma(wgmma)),
        tma_(kernels::cuda::set_attention_tma(tma)),
        schedule_(kernels::cuda::set_attention_wgmma_schedule(schedule)),
        warp_specialized_(kernels::cuda::set_attention_warp_specialized(warp_specialized)),
        fused_dq_(kernels::cuda::set_attention_fused_dq(fused_dq)),
        fused_dq_query_rows_(
            kernels::cuda::set_attention_fused_dq_query_rows(fused_dq_query_rows)) {}
  ~ScopedAttentionSettings() {
    kernels::cuda::set_attention_fused_dq_query_rows(fused_dq_query_rows_);
    kernels::cuda::set_attention_fused_dq(fused_dq_);
    kernels::cuda::set_attention_warp_specialized(warp_specialized_);
    kernels::cuda::set_attention_wgmma_schedule(schedule_);
    kernels::cuda::set_attention_tma(tma_);
    kernels::cuda::set_attention_backward_wgmma(backward_wgmma_);
    kernels::cuda::set_attention_forward_wgmma(forward_wgmma_);
  }
  ScopedAttentionSettings(const ScopedAttentionSettings&) = delete;
  ScopedAttentionSettings& operator=(const ScopedAttentionSettings&) = delete;

 private:
  bool forward_wgmma_, backward_wgmma_, tma_;
  int schedule_, warp_specialized_;
  bool fused_dq_;
  int fused_dq_query_rows_;
};

int64_t allocated(bool peak) {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
  const auto& s =
      stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
  return peak ? s.peak : s.current;
}

// Median times of forward and forward+backward, and the peak extra memory.
Row measure(const AttentionFn& fn, const Tensor& q, const Tensor& k, const Tensor& v, int warmup,
            int reps) {
  const Tensor up = torch::randn_like(q);
  at::cuda::CUDAEvent start(cudaEventDefault), end(cudaEventDefault);
  std::vector<double> fwd, full;
  for (int i = 0; i < warmup + reps; ++i) {
    const Tensor ql = q.detach().requires_grad_(true), kl = k.detach().requires_grad_(true),
                 vl = v.detach().requires_grad_(true);
    torch::cuda::synchronize();
    start.record();
    Tensor out = fn(ql, kl, vl);
    end.record();
    end.synchronize();
    const double f = start.elapsed_time(end);
    torch::cuda::synchronize();
    start.record();
    out = fn(ql, kl, vl);
    out.backward(up);
    end.record();
    end.synchronize();
    if (i >= warmup) {
      fwd.push_back(f);
      full.push_back(start.elapsed_time(end));
    }
  }
  Row r;
  r.fwd_ms = median(fwd);
  r.full_ms = median(full);
  torch::cuda::synchronize();
  const int64_t base = allocated(false);
  c10::cuda::CUDACachingAllocator::resetPeakStats(c10::cuda::current_device());
  {
    const Tensor ql = q.detach().requires_grad_(true), kl = k.detach().requires_grad_(true),
                 vl = v.detach().requires_grad_(true);
    fn(ql, kl, vl).backward(up);
    torch::cuda::synchronize();
  }
  r.peak_mib = static_cast<double>(allocated(true) - base) / (1024.0 * 1024.0);
  return r;
}
#endif

}  // namespace

int run_attention_bench(const AttentionBenchOptions& options) {
  check_filters(options);
#ifndef LIGER_WITH_CUDA
  std::cout << "liger-bench --op attention: this build has no CUDA kernels; nothing to time\n";
  return 0;
#else
  if (!torch::cuda::is_available()) {
    std::cout << "liger-bench --op attention: no CUDA device; nothing to time\n";
    return 0;
  }
  if (options.dtype != "bf16" && options.dtype != "fp16") {
    throw std::invalid_argument("--dtype: attention takes bf16 or fp16, got '" + options.dtype +
                                "'");
  }
  const auto dtype = options.dtype == "bf16" ? torch::kBFloat16 : torch::kHalf;
  const auto topts = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
  const std::vector<Shape> shapes = chosen_shapes(options);
  const std::vector<Variant> variants = chosen_variants(options);
  std::cout << "device: " << at::cuda::getCurrentDeviceProperties()->name << ", " << options.dtype
            << ", " << options.batch << " x " << options.tokens << " tokens, median of "
            << options.reps << " after " << options.warmup << " warm-up\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-10s %-26s %-19s %9s %9s %10s %10s %9s\n", "shape", "variant",
                "impl", "fwd ms", "f+b ms", "fwd TF/s", "f+b TF/s", "peak MiB");
  std::cout << line;
  std::vector<Row> rows;
  for (const Shape& s : shapes) {
    torch::manual_seed(0);
    const int64_t batch = options.batch;
    const Tensor q = torch::randn({batch, s.t, s.heads_q, s.head_dim}, topts);
    const Tensor k = torch::randn({batch, s.t, s.heads_k, s.head_dim}, topts);
    const Tensor v = torch::randn({batch, s.t, s.heads_k, s.head_dim}, topts);
    for (const Variant& var : variants) {
      AttentionOptions o;
      o.sliding_window = var.window;
      o.softcap = var.softcap;
      if (var.documents > 0) {
        const int64_t len = (s.t + var.documents - 1) / var.documents;
        o.document_ids =
            torch::arange(s.t, topts.dtype(torch::kLong)).div(len, "floor").repeat({batch, 1});
        // as the trainer passes it: the pair-weighted mean length (equal
        // documents: their length; the last one may be shorter)
        const Tensor host_ids = o.document_ids.cpu();
        o.document_tokens =
            kernels::pair_weighted_document_length(host_ids.data_ptr<int64_t>(), batch, s.t);
      }
      const double flops_fwd =
          4.0 * static_cast<double>(s.head_dim) * s.heads_q * batch * visible_pairs(s.t, var);
      std::vector<std::pair<std::string, AttentionFn> > impls;
      impls.push_back({"liger", [o](const Tensor& a, const Tensor& b, const Tensor& c) {
                         return kernels::cuda::flash_attention(a, b, c, o);
                       }});
      // the overlapped warpgroup-MMA schedules and the mma.sync kernels (set below)
      if (s.head_dim <= 128) {
        for (const char* path :
             {"liger cp.async", "liger cp.async one-at-a-time", "liger cp.async overlap",
              "liger mma.sync", "liger tma", "liger tma one-at-a-time", "liger tma overlap",
              "liger ws", "liger ws one-at-a-time", "liger ws overlap", "liger ws ping-pong",
              "liger ws dq-pass", "liger ws q64"}) {
          impls.push_back({path, [o](const Tensor& a, const Tensor& b, const Tensor& c) {
                             return kernels::cuda::flash_attention(a, b, c, o);
                           }});
        }
      }
      const bool plain = var.window == 0 && var.softcap == 0.0 && var.documents == 0;
      if (plain) {
        impls.push_back({"cudnn", sdpa_only(true)});
        impls.push_back({"flash", sdpa_only(false)});
      } else {
        impls.push_back({"composite", [o](const Tensor& a, const Tensor& b, const Tensor& c) {
                           return kernels::composite::attention(a, b, c, o);
                         }});
      }
      for (const auto& [name, fn] : impls) {
        if (!wanted(options.impls, name)) continue;
        Row r;
        // "liger" keeps the default settings; every other "liger ..." row sets
        // all of them for the whole measurement: "liger mma.sync" both passes
        // on the mma.sync kernels; "liger cp.async ..." the one-warpgroup
        // warpgroup-MMA passes with cp.async copies, "liger tma ..." with TMA
        // copies; "liger ws ..." the warp-specialized forward and dk/dv (TMA
        // copies everywhere); "... one-at-a-time", "... overlap",
        // "... ping-pong" one product order, otherwise the measured choice
        const bool warp_specialized = name.rfind("liger ws", 0) == 0;
        const auto ends_with = [&name](const std::string& tail) {
          return name.size() >= tail.size() &&
                 name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
        };
        const int schedule = ends_with("one-at-a-time") ? 1
                             : ends_with("overlap")     ? 2
                             : ends_with("ping-pong")   ? 3
                                                        : 0;
        std::optional<ScopedAttentionSettings> settings;
        if (name.rfind("liger ", 0) == 0) {
          settings.emplace(/*wgmma=*/name != "liger mma.sync",
                           /*tma=*/name.rfind("liger tma", 0) == 0 || warp_specialized, schedule,
                           warp_specialized ? 1 : 0,
                           /*fused_dq=*/name != "liger ws dq-pass",
                           /*fused_dq_query_rows=*/name == "liger ws q64" ? 64 : 0);
        }
        try {
          r = measure(fn, q, k, v, options.warmup, options.reps);
        } catch (const std::exception& e) {
          std::cout << s.name << " " << var.name << " " << name << ": not run ("
                    << std::string(e.what()).substr(0, 120) << ")\n";
          continue;
        }
        r.shape = s.name;
        r.variant = var.name;
        r.impl = name;
        r.fwd_tflops = flops_fwd / (r.fwd_ms * 1e-3) / 1e12;
        r.full_tflops = 3.5 * flops_fwd / (r.full_ms * 1e-3) / 1e12;
        std::snprintf(line, sizeof line, "%-10s %-26s %-19s %9.3f %9.3f %10.1f %10.1f %9.1f\n",
                      r.shape.c_str(), r.variant.c_str(), r.impl.c_str(), r.fwd_ms, r.full_ms,
                      r.fwd_tflops, r.full_tflops, r.peak_mib);
        std::cout << line << std::flush;
        rows.push_back(r);
      }
    }
  }
  if (!options.json_path.empty()) {
    nlohmann::json j;
    j["device"] = at::cuda::getCurrentDeviceProperties()->name;
    j["dtype"] = options.dtype;
    j["batch"] = options.batch;
    j["tokens"] = options.tokens;
    j["rows"] = nlohmann::json::array();
    for (const Row& r : rows) {
      j["rows"].push_back({{"shape", r.shape},
                           {"variant", r.variant},
                           {"impl", r.impl},
                           {"fwd_ms", r.fwd_ms},
                           {"full_ms", r.full_ms},
                           {"fwd_tflops", r.fwd_tflops},
                           {"full_tflops", r.full_tflops},
                           {"peak_extra_mib", r.peak_mib}});
    }
    std::ofstream out(options.json_path);
    if (!out) throw std::runtime_error("--json: cannot write " + options.json_path);
    out << j.dump(2) << "\n";
  }
  return 0;
#endif
}

}  // namespace liger::bench
