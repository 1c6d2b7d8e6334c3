// Small helpers shared by the model tests.
#pragma once

#include <ATen/ATen.h>

namespace liger::models::test {

// max |a - b| / max |b|, in fp32: one number per tensor comparison.
inline double max_rel(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor af = a.to(at::kFloat), bf = b.to(at::kFloat);
  return ((af - bf).abs().max() / bf.abs().max().clamp_min(1e-30)).item<double>();
}

}  // namespace liger::models::test
