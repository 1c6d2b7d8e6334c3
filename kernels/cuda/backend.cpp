// The cuda backend's entry in the registry (CUDA builds): the norms, RoPE and
// GLUs of kernels/cuda/cuda_ops.h, the losses of kernels/cuda/losses.h and the
// tuned GEMM of kernels/cuda/tuned_gemm_op.h.
// Attention: SDPA (cuDNN / flash) where SDPA serves (or our flash kernel, as
// kernels.plain_attention says), our flash kernel for windows, softcaps,
// documents and KV caches (kernels/cuda/attention.cpp).
// fused_linear_preference: chunks of tokens as the FLCE's speed mode, our
// cross-entropy kernels for the per-token log-probs and the in-place
// gradient, and per-sequence sums on the device (kernels/cuda/preference.cpp).
// The MoE block (kernels/cuda/moe.cpp): the routing layout without a sort,
// the row gather, the SwiGLU, the per-token weighted combine and the fused
// SwiGLU backward are ours; the grouped GEMMs are at::_grouped_mm (one CUTLASS
// grouped GEMM in bf16 on compute capability 9.0, a loop over the experts in
// fp32 and fp16). Inputs the kernels do not take (more than 1024 experts,
// 2^31 choices, no tokens) run the composite inside the op.
#include "kernels/backend.h"
#include "kernels/composite/composite.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/losses.h"
#include "kernels/cuda/tuned_gemm_op.h"

#include <c10/util/Exception.h>

#include <string>
#include <utility>
#include <vector>

namespace liger::kernels {
namespace {

std::string unavailable(Op, c10::Device device, c10::ScalarType dtype) {
  if (!device.is_cuda()) return "cuda kernels need a CUDA device";
  if (dtype != c10::kFloat && dtype != c10::kBFloat16 && dtype != c10::kHalf) {
    return c10::str("no cuda kernel for dtype ", dtype);
  }
  return "";
}

// The tuned GEMM's notes, then attention's.
std::vector<std::string> take_notes() {
  std::vector<std::string> notes = cuda::take_tuned_gemm_notes();
  for (std::string& n : cuda::take_attention_notes()) notes.push_back(std::move(n));
  return notes;
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
    p.ops.rope_qkv_norm = &cuda::rope_qkv_norm;
    p.ops.swiglu = &cuda::swiglu;
    p.ops.geglu = &cuda::geglu;
    p.ops.swiglu_recompute = &cuda::swiglu_recompute;
    p.ops.geglu_recompute = &cuda::geglu_recompute;
    p.ops.cross_entropy = &cuda::cross_entropy;
    p.ops.fused_linear_cross_entropy = &cuda::fused_linear_cross_entropy;
    p.ops.fused_linear_preference = &cuda::fused_linear_preference;
    p.ops.attention = &cuda::attention;
    p.ops.moe = &cuda::moe;
    p.ops.tuned_gemm = &cuda::tuned_gemm;
    p.take_notes = &take_notes;
    return p;
  }();
  return &provider;
}

}  // namespace liger::kernels
