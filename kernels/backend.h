// How a backend plugs into the registry (internal to kernels/): a table of its
// kernels and a predicate saying where it can run. The registry walks a list
// of candidate backends per op; adding a backend means adding a file that
// defines its provider, not editing if-chains.
#pragma once

#include "kernels/registry.h"

#include <string>
#include <vector>

namespace liger::kernels {

struct BackendProvider {
  Backend backend;
  OpTable ops;  // its kernels (kernels/op_table.h); nullptr where it has none
  // Why this backend cannot serve `op` on `device` with compute `dtype`, or ""
  // when it can. Only inspects the arguments: must not touch the device.
  std::string (*unavailable)(Op op, c10::Device device, c10::ScalarType dtype);
  // Run-time decisions since the last call, one line each (nullptr: none).
  std::vector<std::string> (*take_notes)() = nullptr;
};

// kernels/reference/backend.cpp
const BackendProvider& reference_backend();
// kernels/composite/backend.cpp
const BackendProvider& composite_backend();
// The CUDA backend, or nullptr when this build has none: defined by
// kernels/cuda/backend.cpp in CUDA builds and kernels/cuda/no_backend.cpp
// otherwise (kernels/CMakeLists.txt picks one).
const BackendProvider* cuda_backend();
// The provider of `backend`, or nullptr when this build has none.
const BackendProvider* backend_provider(Backend backend);

}  // namespace liger::kernels
