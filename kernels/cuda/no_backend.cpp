// Builds without CUDA have no cuda backend: the registry falls back to
// composite on a CUDA device and says "built without CUDA".
#include "kernels/backend.h"

namespace liger::kernels {

const BackendProvider* cuda_backend() {
  return nullptr;
}

}  // namespace liger::kernels
