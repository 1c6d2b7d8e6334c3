// Helpers of the thin ATen binding (kernels/cuda/*.cpp): dtype mapping,
// device checks, the current stream and launch errors. Internal to kernels/cuda.
#pragma once

#include "kernels/cuda/launchers.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/Exception.h>

namespace liger::kernels::cuda {

namespace launch = ::liger::cuda_kernels;

inline bool is_kernel_dtype(const at::Tensor& t) {
  const auto s = t.scalar_type();
  return s == at::kFloat || s == at::kBFloat16 || s == at::kHalf;
}

inline launch::DType dtype_of(const char* op, at::ScalarType type) {
  switch (type) {
    case at::kFloat: return launch::DType::f32;
    case at::kHalf: return launch::DType::f16;
    case at::kBFloat16: return launch::DType::bf16;
    default: break;
  }
  TORCH_CHECK(false, op, " (cuda): tensors must be float32, bfloat16 or float16, got ", type);
}

inline launch::DType dtype_of(const char* op, const at::Tensor& t) {
  return dtype_of(op, t.scalar_type());
}

// `t` (named `name` in messages) must be a CUDA tensor on `x`'s device.
inline void check_device(const char* op, const char* name, const at::Tensor& t,
                         const at::Tensor& x) {
  TORCH_CHECK(t.is_cuda(), op, " (cuda): ", name, " must be on a CUDA device, got ", t.device());
  TORCH_CHECK(t.device() == x.device(), op, " (cuda): ", name, " is on ", t.device(),
              " but the input is on ", x.device(), "; move both to one device");
}

// Contiguous and 16-byte aligned (the kernels' vector accesses): `t` itself
// when it already is, else a copy. Undefined stays undefined.
inline at::Tensor dense(const at::Tensor& t) {
  if (!t.defined()) return t;
  at::Tensor c = t.contiguous();
  if (!launch::aligned16(c.data_ptr())) c = c.clone();
  return c;
}

inline const void* ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr() : nullptr;
}
inline void* mutable_ptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr() : nullptr;
}

inline cudaStream_t current_stream() {
  return at::cuda::getCurrentCUDAStream().stream();
}

inline void check_launch(const char* op, cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, op, " (cuda): kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace liger::kernels::cuda
