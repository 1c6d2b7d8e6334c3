// The composite backend's entry in the registry: every op but the tuned GEMM,
// any device.
#include "kernels/backend.h"
#include "kernels/composite/composite.h"

namespace liger::kernels {
namespace {

std::string always_available(Op, c10::Device, c10::ScalarType) {
  return "";
}

}  // namespace

const BackendProvider& composite_backend() {
  static const BackendProvider provider = [] {
    BackendProvider p{Backend::composite, {}, &always_available};
    p.ops.rms_norm = &composite::rms_norm;
    p.ops.add_rms_norm = &composite::add_rms_norm;
    p.ops.layer_norm = &composite::layer_norm;
    p.ops.rope = &composite::rope;
    p.ops.rope_qkv = &composite::rope_qkv;
    p.ops.swiglu = &composite::swiglu;
    p.ops.geglu = &composite::geglu;
    p.ops.swiglu_recompute = &composite::swiglu_recompute;
    p.ops.geglu_recompute = &composite::geglu_recompute;
    p.ops.cross_entropy = &composite::cross_entropy;
    p.ops.fused_linear_cross_entropy = &composite::fused_linear_cross_entropy;
    p.ops.attention = &composite::attention;
    return p;
  }();
  return provider;
}

}  // namespace liger::kernels
