// The functional ops: one registry resolution per (toggles, device, dtype),
// cached, then a call through the KernelSet.
#include "kernels/nn/functional.h"

#include <c10/util/Exception.h>

#include <map>
#include <mutex>
#include <tuple>

namespace liger::nn::functional {

namespace {

// The registry serves one loss op per KernelSet (cross_entropy and
// fused_linear_cross_entropy cannot both be on), so the fused choice comes in
// two sets: every fused op with the fused linear loss, and the materialised
// cross entropy on its own.
enum class Variant { fused, fused_cross_entropy, reference };

kernels::KernelToggles toggles_of(Variant variant) {
  kernels::KernelToggles toggles;  // the defaults: every fused op on, tuned_gemm off
  switch (variant) {
    case Variant::fused: break;
    case Variant::fused_cross_entropy:
      toggles.cross_entropy = true;
      toggles.fused_linear_cross_entropy = false;
      break;
    case Variant::reference: toggles = kernels::KernelToggles::all_off(); break;
  }
  return toggles;
}

}  // namespace

const kernels::KernelSet& kernels_for(kernels::Op op, const at::Tensor& input, bool fused) {
  TORCH_CHECK(input.defined(), "liger::nn: ", kernels::op_name(op),
              " got an undefined input tensor");
  const Variant variant = !fused                             ? Variant::reference
                          : op == kernels::Op::cross_entropy ? Variant::fused_cross_entropy
                                                             : Variant::fused;
  using Key = std::tuple<int, int, int, int>;  // variant, device type, device index, dtype
  const Key key{static_cast<int>(variant), static_cast<int>(input.device().type()),
                static_cast<int>(input.device().index()), static_cast<int>(input.scalar_type())};
  static std::mutex mutex;
  static std::map<Key, kernels::KernelSet> cache;  // map nodes never move: references stay valid
  std::lock_guard<std::mutex> lock(mutex);
  auto found = cache.find(key);
  if (found == cache.end()) {
    found = cache
                .emplace(key, kernels::resolve_kernels(toggles_of(variant), input.device(),
                                                       input.scalar_type()))
                .first;
  }
  return found->second;
}

kernels::Backend backend_for(kernels::Op op, const at::Tensor& input, bool fused) {
  return kernels_for(op, input, fused).backend(op);
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight,
                    const kernels::RmsNormOptions& options, bool fused) {
  return kernels_for(kernels::Op::rms_norm, x, fused).rms_norm(x, weight, options);
}

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                      double eps, bool fused) {
  return kernels_for(kernels::Op::layer_norm, x, fused).layer_norm(x, weight, bias, eps);
}

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up, bool fused) {
  return kernels_for(kernels::Op::swiglu, gate, fused).swiglu(gate, up);
}

at::Tensor geglu(const at::Tensor& gate, const at::Tensor& up, bool fused) {
  return kernels_for(kernels::Op::geglu, gate, fused).geglu(gate, up);
}

std::pair<at::Tensor, at::Tensor> rope(const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& cos, const at::Tensor& sin, bool fused) {
  return kernels_for(kernels::Op::rope, q, fused).rope(q, k, cos, sin);
}

at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                         const kernels::CrossEntropyOptions& options, bool fused) {
  return kernels_for(kernels::Op::cross_entropy, logits, fused)
      .cross_entropy(logits, labels, options);
}

at::Tensor fused_linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                      const at::Tensor& bias, const at::Tensor& labels,
                                      const kernels::FusedLinearCrossEntropyOptions& options,
                                      bool fused) {
  return kernels_for(kernels::Op::fused_linear_cross_entropy, hidden, fused)
      .fused_linear_cross_entropy(hidden, weight, bias, labels, options);
}

}  // namespace liger::nn::functional
