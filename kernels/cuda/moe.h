// Launchers of the MoE block's kernels (moe.cu): plain C++ over raw device
// pointers, sizes and a stream; nothing here knows about torch. The grouped
// GEMMs between them are ATen's (kernels/grouped_mm.h); kernels/cuda/moe.cpp
// strings them together.
//
// Words used below. A choice is one (token, slot) pair of the router's top k,
// numbered flat: choice = token * top_k + slot. A row is a choice's place in
// the expert-sorted layout: the rows of expert 0 first, then expert 1's, ...;
// within an expert the rows keep the choices' flat order (a stable sort, the
// order the composite's at::sort gives). There are as many rows as choices.
// T is the activation dtype; all math is fp32 in registers, and each launcher
// says where a value is rounded to T.
#pragma once

#include "kernels/cuda/launchers.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace liger::cuda_kernels {

// The routing kernels scan the per-expert counts in one block of one thread per expert.
constexpr int kMoeMaxExperts = 1024;

// ints of workspace moe_routing needs: one count per expert and tile of choices.
size_t moe_routing_workspace_ints(int64_t choices, int num_experts);

// The expert-sorted layout from the chosen experts, without a sort and
// without reading anything back: per-tile histograms of the expert ids, their
// running sums (one block), then each choice's row. Deterministic (integer
// counts, no order-dependent atomics).
struct MoeRouting {
  const int64_t* experts = nullptr;  // [choices]: expert ids in [0, num_experts)
  int64_t choices = 0;               // tokens * top_k, below 2^31
  int num_experts = 0;               // 1 .. kMoeMaxExperts
  int* workspace = nullptr;          // moe_routing_workspace_ints(choices, num_experts)
  int* expert_ends = nullptr;        // [num_experts]: each expert's end row (cumulative counts)
  int* row_of_choice = nullptr;      // [choices]: the row of each choice
  int* choice_of_row = nullptr;      // [choices]: the choice of each row (the inverse)
};
cudaError_t moe_routing(const MoeRouting& a, cudaStream_t stream);

// dst[r] = src[token of row r], token = choice_of_row[r] / top_k: a copy, no
// rounding. src [tokens, cols] and dst [rows, cols] dense.
struct MoeGatherRows {
  const void* src = nullptr;
  const int* choice_of_row = nullptr;  // [rows]
  void* dst = nullptr;
  int64_t rows = 0, cols = 0;
  int top_k = 1;
  DType dtype = DType::f32;
};
cudaError_t moe_gather_rows(const MoeGatherRows& a, cudaStream_t stream);

// h[r, f] = T( T(silu(g)) * u ) with g = gate_up[r, f], u = gate_up[r, ffn + f]:
// the composite's at::silu(g) * u, rounded the same way (silu rounded to T,
// then the product).
struct MoeSwiglu {
  const void* gate_up = nullptr;  // [rows, gate_up_stride] T: gate in columns [0, ffn), up after
  int64_t gate_up_stride = 0;     // elements between rows, >= 2 ffn
  void* h = nullptr;              // [rows, ffn] T, dense
  int64_t rows = 0, ffn = 0;
  DType dtype = DType::f32;
};
cudaError_t moe_swiglu(const MoeSwiglu& a, cudaStream_t stream);

// Per token t, over its top_k rows in ascending row order (that is, by
// expert, as HF's loop and the index_add add them):
//   weights given:  out[t] = sum of T(w * in[r]), the running sum rounded to
//                   T after each addition (an index_add into a T buffer);
//   weights null:   out[t] = T(sum of in[r]), summed in fp32, one cast.
// No atomics: one block per token, the same result every run.
struct MoeCombine {
  const void* in = nullptr;            // [rows, in_stride] T
  int64_t in_stride = 0;               // elements between rows, >= cols
  const int* row_of_choice = nullptr;  // [tokens * top_k]
  const float* weights = nullptr;      // [tokens * top_k] fp32 per choice, or nullptr
  void* out = nullptr;                 // [tokens, cols] T, dense
  int64_t tokens = 0, cols = 0;
  int top_k = 1;
  DType dtype = DType::f32;
};
cudaError_t moe_combine(const MoeCombine& a, cudaStream_t stream);

// The SwiGLU's backward per row r, of choice c = choice_of_row[r] with routing
// weight w = weights[c], in one pass (fp32):
//   h            = T( T(silu(g)) * u )               recomputed, as forward
//   d_weights[c] = sum_f dh[r, f] h[f]               dL/dw = <dy, o> = <dy down[e], h>
//   d_gate_up[r] = T( w dh u s (1 + g (1 - s)) ) | T( w dh g s ),  s = sigmoid(g)
//   dy_rows[r]   = T( w dy_rows[r] )                 in place: the down weights' operand
// with dh = dy_rows @ down[e] before the weight. One block per row.
struct MoeSwigluBackward {
  const void* gate_up = nullptr;  // [rows, gate_up_stride] T, saved by forward
  int64_t gate_up_stride = 0;
  const void* dh = nullptr;  // [rows, dh_stride] T
  int64_t dh_stride = 0;
  const float* weights = nullptr;      // [rows] fp32, indexed by choice
  const int* choice_of_row = nullptr;  // [rows]
  void* d_gate_up = nullptr;           // [rows, 2 ffn] T, dense
  void* h = nullptr;                   // [rows, ffn] T, dense, or nullptr (not wanted)
  float* d_weights = nullptr;          // [rows] fp32, indexed by choice, or nullptr
  void* dy_rows = nullptr;             // [rows, hidden] T, dense, or nullptr (not scaled)
  int64_t rows = 0, ffn = 0, hidden = 0;
  DType dtype = DType::f32;
};
cudaError_t moe_swiglu_backward(const MoeSwigluBackward& a, cudaStream_t stream);

}  // namespace liger::cuda_kernels
