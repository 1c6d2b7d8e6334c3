// The tuned GEMM's launcher (tuned_gemm.cpp): a matrix product through
// cuBLASLt with the algorithm chosen per shape by timing, torch-free like the
// other launchers (raw pointers, sizes, handles and a stream).
//
// Row-major D[m, n] = A' B' (+ C), fp32 accumulation:
//   A' = A [m, k] with row stride lda, or A^T of a [k, m] buffer (a_transposed);
//   B' = B [k, n] with row stride ldb, or B^T of an [n, k] buffer (b_transposed);
//   C  = [m, n] with row stride ldc, or absent (c == nullptr); c may equal d.
// A and B are f32, f16 or bf16; C and D are A's dtype, or f32 with 16-bit A/B.
//
// The first product of a shape (sizes, layouts, strides, dtypes, whether C is
// there, pointer alignment) times the candidates and keeps the fastest as the
// shape's plan: cublasGemmEx with its default algorithm (what ATen's mm runs)
// and cuBLASLt's heuristic algorithms whose split-K partial sums, if any, are
// kept in fp32 (no reduction in a 16-bit output type). Timing is under
// sustained load, as in a training step that holds the GPU at its power cap:
// 0.2 s of cublasGemmEx first, then each candidate as a ~30 ms burst of
// back-to-back products (about 0.5 s per shape, once). The timed runs write D,
// which the product then overwrites, and only read A, B and C; when C is D
// (accumulation in place) they write `scratch` instead, a buffer the size of
// D (m rows of ldd elements), so nothing the caller owns changes. Tuning
// synchronizes the stream: never while a CUDA graph is being captured. Later
// products of the shape run the plan directly (no timing, capture-safe). The choice depends on
// timing, so two runs may pick different algorithms (results then differ in the last bits).
#pragma once

#include "kernels/cuda/launchers.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace liger::cuda_kernels {

struct TunedGemm {
  const void* a = nullptr;
  const void* b = nullptr;
  const void* c = nullptr;  // nullptr: D = A' B'
  void* d = nullptr;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0, ldd = 0;  // row strides in elements
  bool a_transposed = false, b_transposed = false;
  DType ab_dtype = DType::bf16, out_dtype = DType::bf16;
  void* blas_handle =
      nullptr;  // cublasHandle_t (with its workspace set), for the cublasGemmEx candidate
  void* blas_lt_handle = nullptr;  // cublasLtHandle_t
  void* workspace = nullptr;       // for cuBLASLt algorithms
  size_t workspace_bytes = 0;
  void* scratch = nullptr;  // m * ldd elements of out_dtype: only to tune a shape with c == d
};

enum class TunedGemmStatus {
  ok,
  needs_scratch,  // no plan for this shape yet and c == d: call again with scratch
  unsupported,  // dtypes or sizes this launcher does not take, or cuBLAS missing: use another GEMM
  failed,       // a cuBLAS or CUDA call failed; `error` says which
};

struct TunedGemmResult {
  TunedGemmStatus status = TunedGemmStatus::ok;
  std::string error;
};

// Whether a plan for this product's shape exists (then scratch is not needed).
bool tuned_gemm_has_plan(const TunedGemm& g);

// D = A' B' (+ C) on `stream`, tuning the shape first when it has no plan.
TunedGemmResult tuned_gemm(const TunedGemm& g, cudaStream_t stream);

// One line per shape tuned since the last call ("8192x8192x2048 bf16 NT:
// cublasLt #6 0.350 ms, cublasGemmEx 0.379 ms"), for the log; clears them.
std::vector<std::string> take_tuned_gemm_notes();

}  // namespace liger::cuda_kernels
