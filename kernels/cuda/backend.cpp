// The cuda backend's entry in the registry (CUDA builds). It has no kernels
// yet: every op falls back to composite with "no cuda kernel for this op yet".
// A kernel lands by adding its ATen binding here (p.ops.rms_norm = &cuda::rms_norm)
// and its dtypes to `unavailable`.
#include "kernels/backend.h"

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
  static const BackendProvider provider{Backend::cuda, {}, &unavailable};
  return &provider;
}

}  // namespace liger::kernels
