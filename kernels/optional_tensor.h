// A Tensor that may be undefined as an optional: an undefined Tensor cannot be
// an argument of torch::autograd::Function::apply, an empty optional can (and
// says "none" plainly to an ATen op). Internal to kernels/.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace liger::kernels {

inline c10::optional<at::Tensor> optional_tensor(const at::Tensor& t) {
  return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt;
}

}  // namespace liger::kernels
