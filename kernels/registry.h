// The kernel registry: for each op, which backend serves it and why.
//
// A toggle that is on asks for the best fused backend for the device and
// dtype (cuda on a CUDA device when built with CUDA, else composite); off asks
// for reference (plain ATen, what HF computes). When the wanted backend cannot
// serve the op the registry falls back and marks the selection as a fallback;
// with `strict` a fallback is an error (std::runtime_error naming the op).
#pragma once

#include "kernels/op_list.h"
#include "kernels/op_table.h"
#include "kernels/ops.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <array>
#include <string>
#include <vector>

namespace liger::kernels {

enum class Backend { reference, composite, cuda };
// Every backend, in the enum's order (which one a toggle prefers is the
// registry's business: see registry.cpp).
constexpr std::array<Backend, 3> kAllBackends = {Backend::reference, Backend::composite,
                                                 Backend::cuda};

const char* backend_name(Backend backend);

// The kernels: section of the config, in Liger-Kernel's names. Each op of
// kernels/op_list.h names the member that switches it.
struct KernelToggles {
  bool rms_norm = true;  // also switches add_rms_norm (the residual add + RMSNorm)
  bool layer_norm = true;
  // Also switches rope_qkv (the packed q|k|v projection) and rope_qkv_norm
  // (with the per-head q/k RMSNorm; taken only when rms_norm is on too).
  bool rope = true;
  bool swiglu = true;
  bool geglu = true;
  bool cross_entropy = false;
  bool fused_linear_cross_entropy = true;
  // Attention that SDPA cannot mask (sliding windows, softcaps, documents) in
  // exact query chunks that keep the log-sum-exp; off: the reference's
  // explicit path, which keeps fp32 [heads, T, T] probabilities.
  bool attention = true;
  // The sparse MoE block: routing on the device (tokens sorted by expert),
  // grouped GEMMs, the SwiGLU recomputed in backward; off: HF's loop over
  // the experts.
  bool moe = true;
  // Matrix products through cuBLASLt with the algorithm chosen per shape by
  // timing at first use (cuda); off: ATen's mm. Results may differ in the
  // last bits from run to run (the choice depends on timing).
  bool tuned_gemm = false;
  // On cuda, who serves attention that SDPA can mask (AttentionOptions::plain).
  PlainAttention plain_attention = PlainAttention::measured;
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

// The implementation chosen for each op. Models call ops through this: one
// call per op of kernels/op_list.h (matmul for tuned_gemm), plus the
// companions (swiglu_recompute, geglu_recompute).
class KernelSet {
 public:
  Tensor rms_norm(const Tensor& x, const Tensor& weight, const RmsNormOptions& options) const {
    return kernels_.rms_norm(x, weight, options);
  }
  // {rms_norm(s), s} with s = x + residual in x's dtype (see ops.h); an
  // undefined residual gives {rms_norm(x), x}: x passed through, so that on
  // cuda x's two gradients (the norm's and the stream's) sum in the norm's
  // backward kernel instead of a separate add.
  std::pair<Tensor, Tensor> add_rms_norm(const Tensor& x, const Tensor& residual,
                                         const Tensor& weight,
                                         const RmsNormOptions& options) const {
    return kernels_.add_rms_norm(x, residual, weight, options);
  }
  Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) const {
    return kernels_.layer_norm(x, weight, bias, eps);
  }
  std::pair<Tensor, Tensor> rope(const Tensor& q, const Tensor& k, const Tensor& cos,
                                 const Tensor& sin) const {
    return kernels_.rope(q, k, cos, sin);
  }
  // {rope(q), rope(k), v} of a packed qkv [B, T, Hq + 2 Hk, D] (see ops.h).
  QkvHeads rope_qkv(const Tensor& qkv, int64_t heads_q, int64_t heads_k, const Tensor& cos,
                    const Tensor& sin) const {
    return kernels_.rope_qkv(qkv, heads_q, heads_k, cos, sin);
  }
  // {rope(norm(q)), rope(norm(k)), v}: Qwen3's per-head q/k RMSNorm and the
  // rotation of a packed qkv in one op (see ops.h). Callers take it only
  // where fuses_qk_norm() says so, else rms_norm on the heads then rope.
  QkvHeads rope_qkv_norm(const Tensor& qkv, int64_t heads_q, int64_t heads_k,
                         const Tensor& q_weight, const Tensor& k_weight, const RmsNormOptions& norm,
                         const Tensor& cos, const Tensor& sin) const {
    return kernels_.rope_qkv_norm(qkv, heads_q, heads_k, q_weight, k_weight, norm, cos, sin);
  }
  Tensor swiglu(const Tensor& gate, const Tensor& up) const { return kernels_.swiglu(gate, up); }
  Tensor geglu(const Tensor& gate, const Tensor& up) const { return kernels_.geglu(gate, up); }
  // The recomputing backward of swiglu / geglu (see ops.h), from the same backend.
  GluRecomputed swiglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh,
                                 bool overwrite_inputs) const {
    return kernels_.swiglu_recompute(gate, up, dh, overwrite_inputs);
  }
  GluRecomputed geglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh,
                                bool overwrite_inputs) const {
    return kernels_.geglu_recompute(gate, up, dh, overwrite_inputs);
  }
  Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                       const CrossEntropyOptions& options) const {
    return kernels_.cross_entropy(logits, labels, options);
  }
  Tensor fused_linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                                    const Tensor& labels,
                                    const FusedLinearCrossEntropyOptions& options) const {
    if (!tuned_head_gemm_) {
      return kernels_.fused_linear_cross_entropy(hidden, weight, bias, labels, options);
    }
    FusedLinearCrossEntropyOptions tuned = options;  // the head's GEMMs follow kernels.tuned_gemm
    tuned.tuned_gemm = true;
    return kernels_.fused_linear_cross_entropy(hidden, weight, bias, labels, tuned);
  }
  // DPO / ORPO / SimPO on per-sequence log-probs from hidden @ weight^T (see ops.h).
  PreferenceLossResult fused_linear_preference(const Tensor& hidden, const Tensor& weight,
                                               const Tensor& labels, const Tensor& sequence,
                                               const Tensor& reference_logps,
                                               const PreferenceOptions& options) const {
    return kernels_.fused_linear_preference(hidden, weight, labels, sequence, reference_logps,
                                            options);
  }
  // options.plain follows kernels.plain_attention (the caller leaves it unset).
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v,
                   const AttentionOptions& options) const {
    if (options.plain == plain_attention_) return kernels_.attention(q, k, v, options);
    AttentionOptions chosen = options;
    chosen.plain = plain_attention_;
    return kernels_.attention(q, k, v, chosen);
  }
  // The sparse MoE block (see ops.h MoeFn).
  MoeOutput moe(const Tensor& x, const Tensor& router, const Tensor& gate_up, const Tensor& down,
                int64_t top_k) const {
    return kernels_.moe(x, router, gate_up, down, top_k);
  }
  // a @ b (+ c), into out when defined (see ops.h TunedGemmFn).
  Tensor matmul(const Tensor& a, const Tensor& b, const Tensor& c = Tensor(),
                const Tensor& out = Tensor()) const {
    return kernels_.tuned_gemm(a, b, c, out);
  }

  Backend backend(Op op) const { return backends_[static_cast<int>(op)]; }
  const std::vector<Selection>& selections() const { return selections_; }
  // Whether the loss should go through the fused linear cross entropy op.
  bool use_fused_linear_cross_entropy() const { return use_flce_; }
  // Whether a per-head q/k norm should go through rope_qkv_norm. The op
  // follows one toggle (rope, in op_list.h) like every op; it fuses two, so
  // the registry also asks for kernels.rms_norm here: with either toggle off
  // the caller keeps the separate rms_norm and rope ops, each following its
  // own toggle, and switching one toggle switches only its own math.
  bool fuses_qk_norm() const { return fuse_qk_norm_; }

  // Every op on the reference backend.
  static KernelSet reference();

 private:
  friend KernelSet resolve_kernels(const KernelToggles&, c10::Device, c10::ScalarType);
  OpTable kernels_;  // the kernel of each op (and its companions), from the backend chosen
  std::array<Backend, kNumOps> backends_{};
  std::vector<Selection> selections_;
  bool use_flce_ = false;
  bool fuse_qk_norm_ = false;
  bool tuned_head_gemm_ = false;  // tuned_gemm served by cuda: the fused loss's GEMMs too
  PlainAttention plain_attention_ = PlainAttention::measured;
};

// Resolves every op for the device and compute dtype. Throws
// std::invalid_argument for contradictory toggles (cross_entropy and
// fused_linear_cross_entropy both on) and std::runtime_error for a fallback
// under `strict`.
KernelSet resolve_kernels(const KernelToggles& toggles, c10::Device device, c10::ScalarType dtype);

// The start-up table, one line per op.
std::string format_selection_table(const KernelSet& kernels);

// What the backends decided at run time since the last call, one line each
// (the tuned GEMM's choice per shape), for the log.
std::vector<std::string> take_kernel_notes();

}  // namespace liger::kernels
