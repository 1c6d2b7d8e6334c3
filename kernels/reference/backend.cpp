// The reference backend's entry in the registry: every op, any device.
#include "kernels/backend.h"
#include "kernels/reference/reference.h"

namespace liger::kernels {
namespace {

std::string always_available(Op, c10::Device, c10::ScalarType) {
  return "";
}

}  // namespace

const BackendProvider& reference_backend() {
  static const BackendProvider provider = [] {
    BackendProvider p{Backend::reference, {}, &always_available};
    p.ops.rms_norm = &reference::rms_norm;
    p.ops.add_rms_norm = &reference::add_rms_norm;
    p.ops.layer_norm = &reference::layer_norm;
    p.ops.rope = &reference::rope;
    p.ops.rope_qkv = &reference::rope_qkv;
    p.ops.rope_qkv_norm = &reference::rope_qkv_norm;
    p.ops.swiglu = &reference::swiglu;
    p.ops.geglu = &reference::geglu;
    p.ops.swiglu_recompute = &reference::swiglu_recompute;
    p.ops.geglu_recompute = &reference::geglu_recompute;
    p.ops.cross_entropy = &reference::cross_entropy;
    p.ops.fused_linear_cross_entropy = &reference::fused_linear_cross_entropy;
    p.ops.fused_linear_preference = &reference::fused_linear_preference;
    p.ops.attention = &reference::attention;
    p.ops.moe = &reference::moe;
    p.ops.tuned_gemm = &reference::matmul;
    return p;
  }();
  return provider;
}

}  // namespace liger::kernels
