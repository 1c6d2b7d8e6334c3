// The CUDA launchers: plain C++ over raw device pointers, sizes and a stream.
// Nothing here (nor in the .cu files behind it) knows about torch; the ATen
// binding (kernels/cuda/*.cpp) allocates the tensors and calls these on the
// current stream. Every launcher returns the launch's cudaError_t.
//
// Tensors are dense row-major. "T" below is the activation dtype (x_dtype),
// "W" the weight dtype: x_dtype itself or f32. All math is fp32 in registers;
// each kernel's comment says where it rounds to T.
#pragma once

#include "kernels/adamw_step_values.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace liger::cuda_kernels {

enum class DType { f32, f16, bf16 };

inline size_t dtype_size(DType t) {
  return t == DType::f32 ? 4 : 2;
}

// Whether p is aligned for 16-byte vector accesses.
inline bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// ---------------------------------------------------------------------------
// Row norms (rms_norm.cu, layer_norm.cu)
// ---------------------------------------------------------------------------

// Whether the norm kernels take rows of `cols` elements of `dtype`: a row is
// held in registers, at most 2048 accesses of 16 bytes (16384 bf16/fp16,
// 8192 fp32 elements) when `aligned` (every pointer 16-byte aligned and cols
// a multiple of 16 bytes), at most 2048 elements otherwise.
bool norm_cols_supported(int64_t cols, DType dtype, bool aligned);

// fp32 workspace (in floats) a norm backward needs for its weight/bias
// gradients: per-block partial sums, `n_sums` arrays of them (1: RMSNorm's
// dw, 2: LayerNorm's dw and db).
size_t norm_backward_workspace_floats(int64_t rows, int64_t cols, int n_sums);

// Mirrors kernels::RmsNormCasting (see kernels/ops.h).
enum class RmsCasting { llama, gemma, none };

struct RmsNormForward {
  const void* x = nullptr;  // [rows, cols] T
  const void* residual =
      nullptr;  // [rows, cols] T, or nullptr; fused add: s = x + residual is normalised
  const void* weight = nullptr;  // [cols] W
  void* y = nullptr;             // [rows, cols] T
  void* sum = nullptr;           // [rows, cols] T: s (only with residual)
  float* rstd = nullptr;         // [rows]
  int64_t rows = 0, cols = 0;
  DType x_dtype = DType::f32, w_dtype = DType::f32;
  float eps = 1e-6f, offset = 0.f;
  RmsCasting casting = RmsCasting::llama;
};
cudaError_t rms_norm_forward(const RmsNormForward& a, cudaStream_t stream);

struct RmsNormBackward {
  const void* dy = nullptr;  // [rows, cols] T
  const void* dsum =
      nullptr;              // [rows, cols] T or nullptr: gradient of the fused add's s, added to dx
  const void* x = nullptr;  // [rows, cols] T: what forward normalised (s for the fused add)
  const void* weight = nullptr;  // [cols] W
  const float* rstd = nullptr;   // [rows], from forward
  void* dx = nullptr;            // [rows, cols] T, or nullptr (not wanted)
  void* dweight = nullptr;       // [cols] W, or nullptr (not wanted)
  float* workspace = nullptr;  // norm_backward_workspace_floats(rows, cols, 1) floats, with dweight
  int64_t rows = 0, cols = 0;
  DType x_dtype = DType::f32, w_dtype = DType::f32;
  float offset = 0.f;
};
cudaError_t rms_norm_backward(const RmsNormBackward& a, cudaStream_t stream);

struct LayerNormForward {
  const void* x = nullptr;       // [rows, cols] T
  const void* weight = nullptr;  // [cols] W or nullptr (1)
  const void* bias = nullptr;    // [cols] W or nullptr (0)
  void* y = nullptr;             // [rows, cols] T
  float* mean = nullptr;         // [rows]
  float* rstd = nullptr;         // [rows]
  int64_t rows = 0, cols = 0;
  DType x_dtype = DType::f32, w_dtype = DType::f32;
  float eps = 1e-5f;
};
cudaError_t layer_norm_forward(const LayerNormForward& a, cudaStream_t stream);

struct LayerNormBackward {
  const void* dy = nullptr;      // [rows, cols] T
  const void* x = nullptr;       // [rows, cols] T
  const void* weight = nullptr;  // [cols] W or nullptr
  const float* mean = nullptr;   // [rows]
  const float* rstd = nullptr;   // [rows]
  void* dx = nullptr;            // [rows, cols] T, or nullptr
  void* dweight = nullptr;       // [cols] W, or nullptr
  void* dbias = nullptr;         // [cols] W, or nullptr
  float* workspace =
      nullptr;  // norm_backward_workspace_floats(rows, cols, 2) floats, with dweight/dbias
  int64_t rows = 0, cols = 0;
  DType x_dtype = DType::f32, w_dtype = DType::f32;
};
cudaError_t layer_norm_backward(const LayerNormBackward& a, cudaStream_t stream);

// ---------------------------------------------------------------------------
// Rotary position embedding (rope.cu): q and k in one launch
// ---------------------------------------------------------------------------

// q: [batch, seq, heads_q, head_dim], k: [batch, seq, heads_k, head_dim],
// cos/sin: [batch or 1, seq, head_dim] fp32 (cos_batch_stride = seq * head_dim,
// or 0 when shared by the batch). Forward writes q_out/k_out; backward takes
// the output gradients as q_in/k_in and writes the input gradients to
// q_out/k_out. A nullptr q_in (k_in) skips q (k).
struct Rope {
  const void* q_in = nullptr;
  void* q_out = nullptr;
  const void* k_in = nullptr;
  void* k_out = nullptr;
  const float* cos = nullptr;
  const float* sin = nullptr;
  int64_t batch = 0, seq = 0, heads_q = 0, heads_k = 0, head_dim = 0;
  int64_t cos_batch_stride = 0;
  DType dtype = DType::f32;
};
// Whether the kernel takes this head_dim (even, at most 2048).
bool rope_head_dim_supported(int64_t head_dim);
cudaError_t rope_forward(const Rope& a, cudaStream_t stream);
cudaError_t rope_backward(const Rope& a, cudaStream_t stream);

// The packed form: one projection GEMM's output qkv [batch, seq, heads_q +
// 2 heads_k, head_dim] holds q's heads, then k's, then v's. Each group is read
// from in + token * in_token_stride and written to out + token *
// out_token_stride (strides in elements; token = b * seq + t). q and k are
// rotated (forward) or rotated back (backward), v is copied. Forward: in =
// the packed qkv (stride (heads_q + 2 heads_k) * head_dim), out = dense q, k,
// v; backward: in = dense dq, dk, dv, out = the packed gradient. A group with
// in == nullptr is skipped (its output is left as it is).
struct RopeHeads {
  const void* in = nullptr;
  void* out = nullptr;
  int64_t heads = 0, in_token_stride = 0, out_token_stride = 0;
};
struct RopeQkv {
  RopeHeads q, k, v;
  const float* cos = nullptr;
  const float* sin = nullptr;
  int64_t batch = 0, seq = 0, head_dim = 0;
  int64_t cos_batch_stride = 0;
  DType dtype = DType::f32;
};
cudaError_t rope_qkv_forward(const RopeQkv& a, cudaStream_t stream);
cudaError_t rope_qkv_backward(const RopeQkv& a, cudaStream_t stream);

// ---------------------------------------------------------------------------
// Per-head q/k RMSNorm + RoPE of a packed projection (rope_norm.cu)
// ---------------------------------------------------------------------------

// qkv [batch, seq, heads_q + 2 heads_k, head_dim] (dense, packed as for
// RopeQkv): every query and key head is RMS-normalised over head_dim (Llama
// casting, weight q_weight or k_weight) and rotated; v is copied. One block
// reads each token's heads once. Every pointer 16-byte aligned.
struct RopeQkvNormForward {
  const void* qkv = nullptr;       // [tokens, heads_q + 2 heads_k, head_dim] T
  void* q = nullptr;               // [tokens, heads_q, head_dim] T
  void* k = nullptr;               // [tokens, heads_k, head_dim] T
  void* v = nullptr;               // [tokens, heads_k, head_dim] T
  const void* q_weight = nullptr;  // [head_dim] W
  const void* k_weight = nullptr;  // [head_dim] W
  float* rstd = nullptr;           // [tokens, heads_q + heads_k]: q's heads, then k's
  const float* cos = nullptr;      // as RopeQkv
  const float* sin = nullptr;
  int64_t batch = 0, seq = 0, heads_q = 0, heads_k = 0, head_dim = 0;
  int64_t cos_batch_stride = 0;
  DType x_dtype = DType::f32, w_dtype = DType::f32;
  float eps = 1e-6f, offset = 0.f;
};

// From the output gradients dq, dk, dv (dense) and forward's qkv and rstd:
// the packed d_qkv in one pass, and d_weights = [d q_weight | d k_weight]
// ([2, head_dim] W) summed over every token and head as per-block fp32
// partial rows plus a fixed-order column sum (deterministic).
struct RopeQkvNormBackward {
  const void* dq = nullptr;  // [tokens, heads_q, head_dim] T
  const void* dk = nullptr;  // [tokens, heads_k, head_dim] T
  const void* dv = nullptr;  // [tokens, heads_k, head_dim] T
  const void* qkv = nullptr;
  const void* q_weight = nullptr;
  const void* k_weight = nullptr;
  const float* rstd = nullptr;
  const float* cos = nullptr;
  const float* sin = nullptr;
  void* d_qkv = nullptr;       // [tokens, heads_q + 2 heads_k, head_dim] T
  void* d_weights = nullptr;   // [2, head_dim] W, or nullptr (not wanted)
  float* workspace = nullptr;  // rope_qkv_norm_workspace_floats(...) floats, with d_weights
  int64_t batch = 0, seq = 0, heads_q = 0, heads_k = 0, head_dim = 0;
  int64_t cos_batch_stride = 0;
  DType x_dtype = DType::f32, w_dtype = DType::f32;
  float offset = 0.f;
};

// Whether the kernel takes this head_dim in this dtype: a head is split over
// a power of two of threads (at most 32, within a warp) holding 8- or 16-byte
// vectors of each half: bf16/fp16 head_dim 8, 16, ..., 512; fp32 4, 8, ..., 256.
bool rope_qkv_norm_supported(int64_t head_dim, DType dtype);
size_t rope_qkv_norm_workspace_floats(int64_t tokens, int64_t head_dim);
cudaError_t rope_qkv_norm_forward(const RopeQkvNormForward& a, cudaStream_t stream);
cudaError_t rope_qkv_norm_backward(const RopeQkvNormBackward& a, cudaStream_t stream);

// ---------------------------------------------------------------------------
// Gated activations (glu.cu): swiglu = silu(gate) * up, geglu = gelu_tanh(gate) * up
// ---------------------------------------------------------------------------

enum class GluActivation { silu, gelu_tanh };

struct GluForward {
  const void* gate = nullptr;  // [n] T
  const void* up = nullptr;    // [n] T
  void* y = nullptr;           // [n] T
  int64_t n = 0;
  DType dtype = DType::f32;
  GluActivation activation = GluActivation::silu;
};
cudaError_t glu_forward(const GluForward& a, cudaStream_t stream);

// d_gate/d_up may be the gate/up buffers themselves (each element is read
// before it is written, by the same thread), or nullptr when not wanted.
// y: nullptr, or [n] T (not aliasing the others) that receives the forward's
// product act(gate) * up, bitwise as glu_forward writes it (the backward of
// an MLP whose product was not kept recomputes it here, in the same pass).
struct GluBackward {
  const void* dy = nullptr;  // [n] T
  const void* gate = nullptr;
  const void* up = nullptr;
  void* d_gate = nullptr;
  void* d_up = nullptr;
  void* y = nullptr;
  int64_t n = 0;
  DType dtype = DType::f32;
  GluActivation activation = GluActivation::silu;
};
cudaError_t glu_backward(const GluBackward& a, cudaStream_t stream);

// ---------------------------------------------------------------------------
// AdamW step (adamw.cu): one launch per tensor, or one per table of tensors,
// every buffer updated in place
// ---------------------------------------------------------------------------

// P is the parameter dtype (f32, bf16 or f16; exp_avg and exp_avg_sq are P
// too), G the gradient's: P or f32. The scalars are the host's, in double
// (the kernel gets each, and 1 - beta1, 1 - beta2, cast to fp32 once):
// decay = 1 - lr * weight_decay, step_size = lr / (1 - beta1^step),
// bias_correction2_sqrt = sqrt(1 - beta2^step). With
// stochastic_rounding and a bf16 parameter the new value is rounded to bf16
// stochastically with 16 random bits of element i, hashed from (i, key);
// otherwise (and for exp_avg, exp_avg_sq) to nearest. The caller derives the
// key from (seed, tensor, step); kernels/optim.cpp reproduces the same bits
// with ATen ops.
struct AdamWStep {
  void* param = nullptr;       // [n] P
  const void* grad = nullptr;  // [n] G: P, f32, or (P = f32) bf16/f16
  void* exp_avg = nullptr;     // [n] P
  void* exp_avg_sq = nullptr;  // [n] P
  // [n] bf16/f16 beside an fp32 P, receiving the new value cast to nearest
  // (the compute weights of mixed precision), or nullptr.
  void* compute_copy = nullptr;
  DType copy_dtype = DType::bf16;
  int64_t n = 0;
  DType param_dtype = DType::f32, grad_dtype = DType::f32;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double decay = 1.0, step_size = 0.0, bias_correction2_sqrt = 1.0;
  bool stochastic_rounding = false;
  uint32_t key_lo = 0, key_hi = 0;
  const float* grad_scale =
      nullptr;  // device fp32 scalar multiplying every gradient (clipping), or nullptr
  // Device memory holding this step's decay, step_size, 1 / bias_correction2_sqrt
  // and key, which then replace the fields above (CUDA graph replays), or nullptr.
  const liger::kernels::AdamWStepValues* step_values = nullptr;
};
cudaError_t adamw_step(const AdamWStep& a, cudaStream_t stream);

// ---- AdamW over many tensors in one launch (adamw.cu) ----
// The update of adamw_step, the same bits per element, over up to
// kAdamWTableTensors tensors passed by value. One table holds tensors of one
// (P, G, compute copy dtype or none, stochastic rounding) combination and
// shares beta1, beta2, eps and grad_scale; lr, weight decay, step and key
// are per tensor, already in fp32 (adamw_step_values() of kernels/optim.h:
// the same casts the per-tensor launcher makes), or read from the tensor's
// step_values in device memory when set. Every pointer of every tensor is
// 16-byte aligned (else cudaErrorInvalidValue: such a tensor takes
// adamw_step, which has a single-element path); the tensors do not overlap.
// 96 entries of 80 bytes: about 8.5 KB of kernel arguments, well under the
// 32 KB that CUDA 12.1+ allows on sm_70 and later.
constexpr int kAdamWTableTensors = 96;
struct AdamWTableTensor {
  void* param = nullptr;                   // [n] P
  const void* grad = nullptr;              // [n] G
  void* exp_avg = nullptr;                 // [n] P
  void* exp_avg_sq = nullptr;              // [n] P
  void* compute_copy = nullptr;            // [n] copy_dtype when the table has copies, else nullptr
  int64_t n = 0;                           // may be 0 (the tensor is skipped)
  liger::kernels::AdamWStepValues values;  // decay, step_size, 1 / sqrt(1 - beta2^t), key (fp32)
  const liger::kernels::AdamWStepValues* step_values =
      nullptr;  // device: replaces `values`, or nullptr
};
static_assert(sizeof(AdamWTableTensor) == 80,
              "AdamWTableTensor: 80 bytes a tensor in the kernel arguments");
struct AdamWTable {
  AdamWTableTensor tensors[kAdamWTableTensors];
  int count = 0;  // 1 ... kAdamWTableTensors
  DType param_dtype = DType::f32, grad_dtype = DType::f32;
  // With compute copies every tensor has one (bf16/f16 beside an fp32 P), else none has.
  bool compute_copies = false;
  DType copy_dtype = DType::bf16;
  bool stochastic_rounding = false;  // bf16 P only (ignored otherwise)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  const float* grad_scale = nullptr;  // device fp32 scalar multiplying every gradient, or nullptr
};
cudaError_t adamw_step_table(const AdamWTable& table, cudaStream_t stream);

// ---- sum of squares over many tensors (kernels/cuda/sum_of_squares.cu) ----
// One launch reads up to kSumOfSquaresTensors tensors of one dtype, passed by
// value. Tensor k occupies [start[k], start[k] + numel[k]) of the launch's
// virtual index space: start[0] = 0, each start a multiple of 16 bytes'
// worth of elements, increasing; every data[k] 16-byte aligned.
constexpr int kSumOfSquaresTensors = 128;
struct SumOfSquaresTable {
  const void* data[kSumOfSquaresTensors];
  int64_t start[kSumOfSquaresTensors];
  int64_t numel[kSumOfSquaresTensors];
  int count = 0;
  int first_partial = 0;  // where this launch's partial sums go in `partials`
};
// The partial sums one launch writes (partials[first_partial, + this)).
int sum_of_squares_blocks();
cudaError_t sum_of_squares(const SumOfSquaresTable& table, DType dtype, float* partials,
                           cudaStream_t stream);
// out[0] = partials[0] + ... + partials[count - 1], in a fixed order.
cudaError_t sum_of_squares_total(const float* partials, int count, float* out, cudaStream_t stream);

// ---- the empty groups of a per-group weight gradient (kernels/cuda/empty_groups.cu) ----
// out [groups, block_elems] of dtype: the blocks of the groups with no rows
// (ends [groups] int32, cumulative group ends) set to zero, the others left
// untouched. Reads no more than the ends for a group with rows.
cudaError_t zero_empty_groups(void* out, const int* ends, int64_t groups, int64_t block_elems,
                              DType dtype, cudaStream_t stream);

// ---- embedding backward into an existing gradient (kernels/cuda/embedding_grad.cu) ----
// weight_grad[v] += sum of grad_out[t] over the tokens t with ids[t] = v, the
// sum in fp32 and each touched row rounded once. The caller sorts the ids
// stably: sorted_ids[p] and order[p], the token at sorted position p. Every
// id in [0, vocab); grad_out [tokens, hidden] and weight_grad [vocab, hidden]
// contiguous; partial: fp32 workspace of embedding_grad_partial_floats()
// elements (its contents need no initialisation). Two launches on `stream`;
// deterministic.
struct EmbeddingGradAdd {
  const int64_t* sorted_ids = nullptr;  // [tokens], non-decreasing
  const int64_t* order = nullptr;       // [tokens]: a permutation of 0 .. tokens - 1
  const void* grad_out = nullptr;       // [tokens, hidden] G
  void* weight_grad = nullptr;          // [vocab, hidden] W, updated in place
  float* partial = nullptr;             // workspace
  int64_t tokens = 0, hidden = 0;
  DType grad_dtype = DType::f32, weight_dtype = DType::f32;
};
int64_t embedding_grad_partial_floats(int64_t tokens, int64_t hidden);
cudaError_t embedding_grad_add(const EmbeddingGradAdd& a, cudaStream_t stream);

// ---- flash attention (kernels/cuda/attention.cu) ----
// out = softmax(mask(softcap(q k^T * scale))) v per query head, in tiles with
// an online softmax in fp32: no [Tq, Tk] buffer exists at any time. q
// [B, Tq, Hq, D], k and v [B, Tk, Hk, D], out [B, Tq, Hq, D], all contiguous
// and 16-byte aligned, T = bf16 or f16; query head h reads key/value head
// h / (Hq / Hk) (GQA without repeating k and v). Query row r sits at position
// r + Tk - Tq (a KV cache: the queries are the last Tq positions). Query
// position i sees key j iff (not causal or j <= i) and (window == 0 or
// i - j < window) and (no documents or both have the same document id).
// Key tiles a mask empties for a whole query tile are skipped.
struct AttentionShape {
  const void* q = nullptr;                // [B, Tq, Hq, D] T
  const void* k = nullptr;                // [B, Tk, Hk, D] T
  const void* v = nullptr;                // [B, Tk, Hk, D] T
  const void* out = nullptr;              // [B, Tq, Hq, D] T (forward writes it)
  float* lse = nullptr;                   // [B, Hq, Tq]: natural log-sum-exp of each row
  const int64_t* document_ids = nullptr;  // [B, T] (Tq == Tk) or nullptr
  // With document ids: their pair-weighted mean length in tokens
  // (kernels/document_length.h), which picks the kernels; 0 = unknown.
  int64_t document_tokens = 0;
  // Workspace with document ids: attention_document_ranges_elems(B, T)
  // int64, filled by the launch itself (min and max id of each 16 positions,
  // then the first and last group of 16 each one shares an id with).
  int64_t* document_ranges = nullptr;
  int64_t batch = 0, tq = 0, tk = 0, heads_q = 0, heads_k = 0, head_dim = 0;
  bool causal = true;
  int64_t window = 0;   // > 0: sliding window (keys in (i - window, i])
  float scale = 1.f;    // applied to q k^T (never 0 here: the binding resolves it)
  float softcap = 0.f;  // > 0: scores <- softcap * tanh(scores / softcap)
  DType dtype = DType::bf16;
};
// Whether the kernels take this head_dim and dtype (64, 128 or 256; bf16 or f16).
bool attention_supported(int64_t head_dim, DType dtype);
// Whether our passes, as set now on this device, were measured faster than
// cuDNN's SDPA for attention without a window, softcap or documents (forward
// + backward, liger-bench --op attention on an H100; docs/kernels.md): causal
// self-attention at head_dim 64 from kFasterThanSdpaTokens tokens per sequence,
// with the warp-specialized passes and the fused dq (query tiles of 128) on a
// compute-capability 9.0 device, and a dk/dv grid of at least
// kFasterThanSdpaKeyBlocks blocks of 128 keys (Llama-3.2-1B's 8 key/value
// heads at 4096 tokens: fewer blocks leave SMs idle): 1.12x cuDNN at 4096
// tokens, 1.05x at 8192; at 4 x 2048 even. At head_dim 128 cuDNN stays
// faster (0.96x at 4096 tokens, 0.88-1.0x at 8192).
constexpr int64_t kFasterThanSdpaTokens = 4096;
constexpr int64_t kFasterThanSdpaKeyBlocks = 256;
bool attention_faster_than_sdpa(int64_t head_dim, int64_t tq, int64_t tk, bool causal,
                                int64_t heads_k, int64_t batch);
int64_t attention_document_ranges_elems(int64_t batch, int64_t t);
// Fills `workspace` (attention_document_ranges_elems(B, T) int64) as the
// passes do before they run: [B, S, 2] ranges, then [B, S, 2] bounds (first
// and last segment of 16 positions each segment shares an id with;
// kernels/cuda/document_bounds.h), S = ceil(T / 16). For tests.
cudaError_t attention_document_bounds(const int64_t* document_ids, int64_t batch, int64_t t,
                                      int64_t* workspace, cudaStream_t stream);
// Writes a.out (through the pointer cast to writable) and a.lse.
cudaError_t attention_forward(const AttentionShape& a, cudaStream_t stream);
// attention_forward calls that launched their pass since the process started.
int64_t attention_forward_launches();
// Query rows each warp of the forward and dq kernels owns: 1 tile of 16, 2
// (every K/V fragment read from shared memory then feeds twice the products;
// the forward up to head_dim 128, dq at 64; else 1 stays), or 0 (the
// default: each kernel's measured best). Process-wide, for tests and
// benchmarks; returns the previous value, or -1 (nothing changed) for another value.
int set_attention_row_tiles(int tiles);
// The forward, and the backward's dq and dk/dv, at head_dim 64 and 128 on
// Hopper's warpgroup MMA (wgmma, sm_90a; tiles of 64 queries and 64 keys)
// instead of mma.sync: on by default (used where the device has compute
// capability 9.0). Process-wide, for tests and benchmarks to measure and
// check the mma.sync path; return the previous setting.
bool set_attention_forward_wgmma(bool on);
bool set_attention_backward_wgmma(bool on);
// The warpgroup-MMA passes' tiles (forward, dq, dk/dv) copied by the tensor
// memory accelerator (thread 0 issues each tile's copies, every thread waits on a
// transaction barrier: kernels/cuda/tma.cuh) instead of every thread's
// cp.async: on by default (on an H100 at 8192 tokens, head_dim 128, causal,
// forward + backward 366 against 265 TFLOP/s). Process-wide, for tests and
// benchmarks; returns the previous setting.
bool set_attention_tma(bool on);
// Launches (forward, dq, dk/dv) that took the TMA copies since the process
// started: where the driver refuses a tensor map they fall back to cp.async
// silently, and tests check that the copies they meant to run did.
int64_t attention_tma_launches();
// The forward and the backward's dk/dv at head_dim 64 and 128 as
// warp-specialized blocks (FlashAttention-3's division: a producer warpgroup
// copies tiles by TMA into a ring of stages, two consumer warpgroups take
// them on warpgroup MMA): the forward in blocks of 128 queries over 128-key
// tiles, dk/dv in blocks of 128 keys over 64-query tiles, instead of
// one-warpgroup blocks of 64. off: neither; on: both passes; measured (the
// default): both where no document mask applies, and with documents where
// they are long (kWarpSpecializedForwardDocumentTokens,
// kWarpSpecializedBackwardDocumentTokens), the forward's consumers taking
// turns unless the schedule says otherwise. On an H100 at 8192 tokens,
// against the one-warpgroup passes with TMA copies, forward + backward:
// causal 1.13x / 1.10x faster (head_dim 128 / 64), window 1.11x / 0.98x,
// softcap 50 + window 1.09x / 1.12x (with documents: below).
// Process-wide, for tests and benchmarks; returns the previous setting.
enum class WarpSpecialized : int { off = 0, on = 1, measured = 2 };
// measured, with document ids: the warp-specialized dk/dv where the
// documents' pair-weighted mean length (AttentionShape::document_tokens,
// kernels/document_length.h) is at least this many tokens. On an H100, 8192
// tokens packed with equal documents
// (docs/benchmarks/attention-documents_h100_2026-12-07.md): the
// warp-specialized dk/dv with the fused dq against the one-warpgroup dk/dv
// and dq passes 1.62x / 1.34x faster (head_dim 128 / 64) with 1 document,
// 1.25x / 1.09x with 8, 1.05x / 0.95x with 16, 0.78x with 64.
constexpr int64_t kWarpSpecializedBackwardDocumentTokens = 1024;
// And the warp-specialized forward from this length: against the
// one-warpgroup forward, same H100 and bench, 1.13-1.16x / 1.13-1.14x faster with
// 1 document, 1.09-1.13x / 1.10-1.13x with 2, 0.98-1.01x with 4 (2,048
// tokens), 0.91-0.93x / 0.90-0.91x with 8, 0.64-0.65x / 0.68-0.70x with 64.
constexpr int64_t kWarpSpecializedForwardDocumentTokens = 4096;
WarpSpecialized set_attention_warp_specialized(WarpSpecialized mode);
// Launches (forward, dk/dv) that took them since the process started (where
// the driver refuses a tensor map a pass falls back to the other kernels
// silently).
int64_t attention_warp_specialized_launches();
// With the warp-specialized dk/dv on, dq inside it (no dq pass
// recomputing s and dp; dq summed in fp32 by bulk reductions into a
// workspace, AttentionGrads::dq_accum): on by default. On an H100 at 8192
// tokens, forward + backward against the dq pass: causal 1.13x / 1.04x
// faster (head_dim 128 / 64), window 1.11x / 1.03x, softcap 50 + window
// 1.09x / 1.02x. dq's fp32 sums then arrive in any order (its last bits
// differ from run to run); off, the dq pass is deterministic. Process-wide,
// for tests and benchmarks; returns the previous setting.
bool set_attention_fused_dq(bool on);
// The fused dq's query tiles at head_dim 64: 64 rows, or 128 (FlashAttention-3's
// tile: twice the products between the consumers' barriers); 0 = the measured
// choice, 128 (on an H100 at 8192 tokens forward + backward 1.11x faster causal,
// 1.08x with a window, 1.06x with softcap 50 + window). Process-wide, for tests
// and benchmarks; returns the previous setting.
int set_attention_fused_dq_query_rows(int rows);
// The order of the products where the passes run on warpgroup MMA. overlapped:
// FlashAttention-3's order in the forward (a tile's scores on the tensor cores
// with the previous tile's o += p v, the softmax between); in dk/dv, dv's
// product beside forming ds; s and dp as one group. one_at_a_time: each
// product waited for before the next. measured (the default): the overlapped
// forward at head_dim 64 and the overlapped backward under a softcap, where
// each was measured faster. ping_pong: overlapped, and in the warp-specialized
// forward the two consumer warpgroups also take turns issuing their products
// (FlashAttention-3's ping-pong: one's softmax under the other's products).
// Process-wide, for tests and benchmarks to check and time each; returns the
// previous setting.
enum class AttentionSchedule : int {
  measured = 0,
  one_at_a_time = 1,
  overlapped = 2,
  ping_pong = 3
};
AttentionSchedule set_attention_wgmma_schedule(AttentionSchedule schedule);

// Gradients from the saved out and lse: delta = rowsum(d_out * out) (fp32
// workspace [B, Hq, Tq]), then one kernel over key tiles for dk and dv
// (each key/value head sums its query heads in a fixed order: deterministic,
// no atomics) and one over query tiles for dq (deterministic), or dq fused
// into the dk/dv pass (set_attention_fused_dq: fp32 sums in arrival order,
// its last bits differ from run to run). dq, dk, dv in T, the shapes of q, k, v.
struct AttentionGrads {
  const void* d_out = nullptr;  // [B, Tq, Hq, D] T, contiguous
  float* delta = nullptr;       // workspace [B, Hq, Tq]
  // workspace of attention_backward_workspace_elems(a) floats where that is
  // not 0 (the fused dq's fp32 sums), else unused
  float* dq_accum = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
};
// The floats of AttentionGrads::dq_accum the backward of `a` needs now (0: none).
int64_t attention_backward_workspace_elems(const AttentionShape& a);
cudaError_t attention_backward(const AttentionShape& a, const AttentionGrads& g,
                               cudaStream_t stream);

}  // namespace liger::cuda_kernels
