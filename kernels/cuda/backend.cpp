// The cuda backend's entry in the registry (CUDA builds): the norms, RoPE and
// GLUs of kernels/cuda/cuda_ops.h, the losses of kernels/cuda/losses.h and the
// tuned GEMM of kernels/cuda/tuned_gemm_op.h.
// Attention is the composite's until there is a kernel of our own: SDPA
// (cuDNN / flash) where SDPA serves, exact query chunks for windows, softcaps
// and documents (kernels/composite/attention.cpp).
#include "kernels/backend.h"
#include "kernels/composite/composite.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/losses.h"
#include "kernels/cuda/tuned_gemm_op.h"

#include <c10/util/Exception.h>

namespace liger::kernels {
namespace {

std::string unavailable(Op, c10::Device device, c10::ScalarType dtype) {
  if (!device.is_cuda()) return "cuda kernels need a CUDA device";
  if (dtype != c10::kFloat && dtype != c10::kBFloat16 && dtype != c10::kHalf) {
    return c10::str("no cuda kernel for dtype ", dtype);
  }
  return "";
}

}  // namespace

const BackendProvider* cuda_backend() {
  static const BackendProvider provider = [] {
    BackendProvider p{Backend::cuda, {}, &unavailable};
    p.ops.rms_norm = &cuda::rms_norm;
    p.ops.add_rms_norm = &cuda::fused_add_rms_norm;
    p.ops.layer_norm = &cuda::layer_norm;
    p.ops.rope = &cuda::rope;
    p.ops.rope_qkv = &cuda::rope_qkv;
    p.ops.swiglu = &cuda::swiglu;
    p.ops.geglu = &cuda::geglu;
    p.ops.swiglu_recompute = &cuda::swiglu_recompute;
    p.ops.geglu_recompute = &cuda::geglu_recompute;
    p.ops.cross_entropy = &cuda::cross_entropy;
    p.ops.fused_linear_cross_entropy = &cuda::fused_linear_cross_entropy;
    p.ops.attention = &composite::attention;
    p.ops.tuned_gemm = &cuda::tuned_gemm;
    p.take_notes = &cuda::take_tuned_gemm_notes;
    return p;
  }();
  return &provider;
}

}  // namespace liger::kernels
