#include "kernels/nn/rope.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace liger::nn {

std::pair<at::Tensor, at::Tensor> rope_cos_sin(int64_t seq_len, int64_t head_dim, double theta,
                                               c10::Device device) {
  TORCH_CHECK(seq_len > 0, "liger::nn::rope_cos_sin: seq_len must be positive, got ", seq_len);
  TORCH_CHECK(head_dim > 0 && head_dim % 2 == 0,
              "liger::nn::rope_cos_sin: head_dim must be even and positive, got ", head_dim);
  const auto fp32 = at::TensorOptions().dtype(at::kFloat).device(device);
  // inv_freq[i] = theta^(-2i / D), in fp32 as HF computes it.
  const at::Tensor exponents = at::arange(0, head_dim, 2, fp32) / static_cast<double>(head_dim);
  const at::Tensor inv_freq = at::pow(theta, exponents).reciprocal();
  const at::Tensor positions = at::arange(seq_len, fp32);
  const at::Tensor freqs = at::outer(positions, inv_freq);             // [T, D/2]
  const at::Tensor angles = at::cat({freqs, freqs}, -1).unsqueeze(0);  // [1, T, D]
  return {angles.cos(), angles.sin()};
}

}  // namespace liger::nn
