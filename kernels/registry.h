// The kernel registry: for each op, which backend serves it and why.
//
// A toggle that is on asks for the best fused backend for the device and
// dtype (cuda on a CUDA device when built with CUDA, else composite); off asks
// for reference (plain ATen, what HF computes). When the wanted backend cannot
// serve the op the registry falls back and marks the selection as a fallback;
// with `strict` a fallback is an error (std::runtime_error naming the op).
#pragma once

#include "kernels/ops.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <array>
#include <string>
#include <vector>

namespace liger::kernels {

enum class Backend { reference, composite, cuda };
enum class Op {
  rms_norm,
  layer_norm,
  rope,
  swiglu,
  geglu,
  cross_entropy,
  fused_linear_cross_entropy,
  attention,
};
constexpr int kNumOps = 8;

const char* backend_name(Backend backend);
const char* op_name(Op op);

// The kernels: section of the config, in Liger-Kernel's names.
struct KernelToggles {
  bool rms_norm = true;
  bool layer_norm = true;
  bool rope = true;
  bool swiglu = true;
  bool geglu = true;
  bool cross_entropy = false;
  bool fused_linear_cross_entropy = true;
  bool strict = false;

  // Everything off: the reference path (the baseline of convergence runs).
  static KernelToggles all_off();
};

// One row of the start-up table: "rope: composite (no cuda build)".
struct Selection {
  Op op;
  Backend backend;
  std::string reason;
  bool fallback = false;  // the toggle asked for something better than what serves
  std::string describe() const;
};

// The implementation chosen for each op. Models call ops through this.
class KernelSet {
 public:
  Tensor rms_norm(const Tensor& x, const Tensor& weight, const RmsNormOptions& options) const {
    return rms_norm_(x, weight, options);
  }
  // {rms_norm(s), s} with s = x + residual (in x's dtype): the fused kernel
  // where the rms_norm backend has one, else the add and the backend's rms_norm.
  std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& residual, const Tensor& weight,
                                         const RmsNormOptions& options) const {
    if (add_rms_norm_ != nullptr) return add_rms_norm_(x, residual, weight, options);
    Tensor sum = x + residual;
    return {rms_norm_(sum, weight, options), sum};
  }
  Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) const {
    return layer_norm_(x, weight, bias, eps);
  }
  std::pair<Tensor, Tensor> rope(const Tensor& q, const Tensor& k, const Tensor& cos,
                                 const Tensor& sin) const {
    return rope_(q, k, cos, sin);
  }
  Tensor swiglu(const Tensor& gate, const Tensor& up) const { return swiglu_(gate, up); }
  Tensor geglu(const Tensor& gate, const Tensor& up) const { return geglu_(gate, up); }
  Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                       const CrossEntropyOptions& options) const {
    return cross_entropy_(logits, labels, options);
  }
  Tensor fused_linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                                    const Tensor& labels,
                                    const FusedLinearCrossEntropyOptions& options) const {
    return fused_linear_cross_entropy_(hidden, weight, bias, labels, options);
  }
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v,
                   const AttentionOptions& options) const {
    return attention_(q, k, v, options);
  }

  Backend backend(Op op) const { return backends_[static_cast<int>(op)]; }
  const std::vector<Selection>& selections() const { return selections_; }
  // Whether the loss should go through the fused linear cross entropy op.
  bool use_fused_linear_cross_entropy() const { return use_flce_; }

  // Every op on the reference backend.
  static KernelSet reference();

 private:
  friend KernelSet resolve_kernels(const KernelToggles&, c10::Device, c10::ScalarType);
  RmsNormFn rms_norm_ = nullptr;
  AddRmsNormFn add_rms_norm_ = nullptr;
  LayerNormFn layer_norm_ = nullptr;
  RopeFn rope_ = nullptr;
  GluFn swiglu_ = nullptr;
  GluFn geglu_ = nullptr;
  CrossEntropyFn cross_entropy_ = nullptr;
  FusedLinearCrossEntropyFn fused_linear_cross_entropy_ = nullptr;
  AttentionFn attention_ = nullptr;
  std::array<Backend, kNumOps> backends_{};
  std::vector<Selection> selections_;
  bool use_flce_ = false;
};

// Resolves every op for the device and compute dtype. Throws
// std::invalid_argument for contradictory toggles (cross_entropy and
// fused_linear_cross_entropy both on) and std::runtime_error for a fallback
// under `strict`.
KernelSet resolve_kernels(const KernelToggles& toggles, c10::Device device, c10::ScalarType dtype);

// The start-up table, one line per op.
std::string format_selection_table(const KernelSet& kernels);

}  // namespace liger::kernels
