// The tuned GEMM as an op (kernels/ops.h TunedGemmFn) on CUDA tensors:
// operands as they are when each is row-major or the transpose of a
// row-major buffer (no copy), cuBLASLt or cublasGemmEx as the shape's plan
// says (kernels/cuda/tuned_gemm.h). Served by the reference (ATen's mm)
// instead: empty products, a c that needs broadcasting, out not row-major, a
// shape first met while a CUDA graph is being captured (no timing there).
#pragma once

#include "kernels/ops.h"

#include <string>
#include <vector>

namespace liger::kernels::cuda {

Tensor tuned_gemm(const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& out);

// The shapes tuned since the last call, one line each (for the log).
std::vector<std::string> take_tuned_gemm_notes();

}  // namespace liger::kernels::cuda
