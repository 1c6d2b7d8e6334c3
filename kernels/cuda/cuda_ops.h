// The cuda backend: ATen-facing ops (torch::autograd::Function wrappers)
// around the torch-free launchers of kernels/cuda/launchers.h, run on the
// current CUDA stream. Signatures and semantics are the ones of
// kernels/ops.h; the notes below say what differs from the composite backend.
//
// Every op takes float32, bfloat16 or float16 tensors on one CUDA device.
// Non-contiguous (or not 16-byte aligned) inputs are copied once to
// contiguous ones. Shapes the kernels do not take (norm rows wider than
// 16384 bf16/fp16 or 8192 fp32 elements, head_dim over 2048, q and k of
// different dtypes) are served by the composite backend, with a warning once.
#pragma once

#include "kernels/ops.h"

#include <string>
#include <utility>
#include <vector>

namespace liger::kernels::cuda {

// Saves x, w and rstd (fp32 [rows]). Backward: one persistent kernel (dx, and
// dw as per-block fp32 partial sums), then a column-sum kernel for dw.
Tensor rms_norm(const Tensor& x, const Tensor& weight, const RmsNormOptions& options);

// Residual add + RMSNorm in one pass: s = x + residual (rounded to x's
// dtype, as HF's `hidden_states + residual`), y = rms_norm(s). Returns
// (y, s): s is the new residual stream. Gradients: d_x = d_residual =
// rms_norm backward of dy + ds. The cuda backend's add_rms_norm (switched by
// the rms_norm toggle); rows the kernel does not take get the add, then the
// composite rms_norm. An undefined residual: (rms_norm(x), x), x's gradient
// = rms_norm backward of dy + d(x out) in the same kernel.
std::pair<Tensor, Tensor> fused_add_rms_norm(const Tensor& x, const Tensor& residual,
                                             const Tensor& weight, const RmsNormOptions& options);

// Saves x, w, mean and rstd (fp32 [rows]); dw and db like rms_norm's dw.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

// q and k rotated by one launch; saves only cos and sin (fp32).
std::pair<Tensor, Tensor> rope(const Tensor& q, const Tensor& k, const Tensor& cos,
                               const Tensor& sin);

// The packed projection: one launch reads qkv once and writes dense rotated
// q, k and a dense copy of v; backward writes the packed gradient in one
// launch (no split-and-concatenate). Saves only cos and sin.
QkvHeads rope_qkv(const Tensor& qkv, int64_t heads_q, int64_t heads_k, const Tensor& cos,
                  const Tensor& sin);

// Qwen3's q/k norm in the packed pass: one launch reads qkv once, normalises
// every query and key head in fp32 (Llama casting), rotates it and writes
// dense q, k and a copy of v; backward writes the packed d_qkv and both
// weight gradients (deterministic) in one launch plus the column sum. Saves
// qkv, the weights, rstd (fp32, one per head and token) and cos/sin. Other
// castings and head_dims the kernel does not take: composite, with a warning.
QkvHeads rope_qkv_norm(const Tensor& qkv, int64_t heads_q, int64_t heads_k, const Tensor& q_weight,
                       const Tensor& k_weight, const RmsNormOptions& norm, const Tensor& cos,
                       const Tensor& sin);

// Save only gate and up; backward recomputes the activation. Memory: when
// gate (up) is an intermediate the graph owns (not a leaf, not a view, e.g.
// the output of the gate/up projection) or a copy this op made, backward
// writes d_gate (d_up) into its buffer instead of allocating, as
// Liger-Kernel does: the values of gate/up are gone after backward (their
// version counter is bumped, so any other user of them fails loudly), and a
// second backward through the same graph (retain_graph) is refused. Leaves
// and views are never overwritten.
Tensor swiglu(const Tensor& gate, const Tensor& up);
Tensor geglu(const Tensor& gate, const Tensor& up);

// The recomputing backward in one launch: reads gate, up and dh once, writes
// h (bitwise what forward computes), d_gate and d_up (into gate's and up's
// buffers with overwrite_inputs).
GluRecomputed swiglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh,
                               bool overwrite_inputs);
GluRecomputed geglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh,
                              bool overwrite_inputs);

// Attention: SDPA (cuDNN / flash) where SDPA masks the variant itself, unless
// options.plain asks for our kernel or it was measured faster at the shape;
// kernels/cuda/attention.cu for sliding windows, softcaps, document ids and
// the KV cache's end-aligned causal mask (bf16/fp16, head_dim 64, 128, 256);
// the composite's exact query chunks for anything else. Saves q, k, v, out
// and an fp32 lse [B, Hq, Tq]: O(T) memory for every variant.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v,
                 const AttentionOptions& options);
// The flash kernel itself, whatever the variant (plain causal included):
// for tests and liger-bench. flash_attention_serves says whether it takes
// these tensors (CUDA, one dtype of bf16/fp16, head_dim 64, 128 or 256).
bool flash_attention_serves(const Tensor& q, const Tensor& k, const Tensor& v);
Tensor flash_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                       const AttentionOptions& options);
// The segment bounds the flash kernels walk with document ids [B, T] (int64,
// CUDA): [B, ceil(T / 16), 2] int64, the first and last segment of 16
// positions that each segment shares an id with (launch::attention_document_bounds).
Tensor attention_document_bounds(const Tensor& document_ids);
// Query rows per warp of the flash forward and dq kernels: 1 or 2 tiles of
// 16, or 0 for each kernel's default (launch::set_attention_row_tiles): for
// tests and liger-bench to measure each. Returns the previous value; throws
// for another value.
int set_attention_row_tiles(int tiles);
// The flash forward / backward on warpgroup MMA (the default on an sm_90
// device; launch::set_attention_forward_wgmma): off for tests and liger-bench
// to run the mma.sync path. Return the previous setting.
bool set_attention_forward_wgmma(bool on);
bool set_attention_backward_wgmma(bool on);
// The warpgroup-MMA passes' copies on the tensor memory accelerator
// (launch::set_attention_tma): for tests and liger-bench. Returns the
// previous setting.
bool set_attention_tma(bool on);
// Launches that took the TMA copies so far (launch::attention_tma_launches).
int64_t attention_tma_launches();
// The warp-specialized flash forward and dk/dv (launch::set_attention_warp_specialized):
// 0 neither, 1 both, 2 where measured faster (the default: both where no
// document mask applies), for tests and liger-bench. Returns the previous value;
// throws for another value.
int set_attention_warp_specialized(int mode);
// Launches that took them so far (launch::attention_warp_specialized_launches).
int64_t attention_warp_specialized_launches();
// Forward passes of this kernel so far, on any GPU (launch::attention_forward_launches):
// tests tell by it who served an attention call.
int64_t attention_forward_launches();
// dq inside the warp-specialized dk/dv pass (launch::set_attention_fused_dq):
// for tests and liger-bench. Returns the previous setting.
bool set_attention_fused_dq(bool on);
// Its query tiles at head_dim 64 (launch::set_attention_fused_dq_query_rows):
// 0 the measured choice, 64 or 128 rows. Returns the previous value; throws for
// another value.
int set_attention_fused_dq_query_rows(int rows);
// The order of the warpgroup-MMA products (launch::set_attention_wgmma_schedule):
// 0 where each was measured faster (the default), 1 one product at a time, 2
// overlapped, 3 overlapped with the warp-specialized forward's consumers
// taking turns (ping-pong), for tests and liger-bench to check and time each.
// Returns the previous value; throws for another value.
int set_attention_wgmma_schedule(int schedule);
// One line per attention variant seen since the last call: which path served it.
std::vector<std::string> take_attention_notes();

// Mixtral's MoE block (kernels/ops.h MoeFn): the routing layout, the row
// gather, the SwiGLU, the weighted combine and the SwiGLU's backward (with
// the routing weights' gradient) are kernels/cuda/moe.cu; the grouped GEMMs
// are ATen's (kernels/grouped_mm.h). Deterministic: no atomics, token sums in
// a fixed order. Saves the gate|up GEMM output, not silu(g) * u. Inputs off a
// CUDA device, with no tokens, more than 1024 experts or 2^31 choices: the
// composite's ATen path (the same math, its own sum order).
MoeOutput moe(const Tensor& x, const Tensor& router, const Tensor& gate_up, const Tensor& down,
              int64_t top_k);

// The expert-sorted layout of the choices experts [N, k] (int64, ids in
// [0, num_experts), num_experts <= 1024), all int32 on experts' device: a
// choice is a flat (token, slot) index, a row its place when the choices are
// sorted stably by expert.
struct MoeRows {
  Tensor row_of_choice;  // [N, k]
  Tensor choice_of_row;  // [N k]
  Tensor expert_ends;    // [num_experts]: cumulative counts, the grouped GEMMs' offsets
};
MoeRows moe_rows(const Tensor& experts, int64_t num_experts);

}  // namespace liger::kernels::cuda
