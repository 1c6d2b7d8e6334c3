// Rotary position embedding for a LibTorch model: the rope op (HF's
// rotate_half convention, see kernels/ops.h) through the registry, and the
// cos/sin tables it takes.
//   auto [cos, sin] = liger::nn::rope_cos_sin(seq_len, head_dim);
//   auto [q_rot, k_rot] = liger::nn::rope(q, k, cos, sin);  // q, k: [B, T, H, D]
#pragma once

#include "kernels/nn/functional.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <utility>

namespace liger::nn {

using functional::rope;

// {cos, sin}, each [1, seq_len, head_dim] fp32 on `device`, for positions
// 0 .. seq_len - 1: angle(t, i) = t * theta^(-2i / head_dim) for
// i < head_dim / 2, repeated over the two halves (cat(freqs, freqs), as HF).
std::pair<at::Tensor, at::Tensor> rope_cos_sin(int64_t seq_len, int64_t head_dim,
                                               double theta = 10000.0,
                                               c10::Device device = c10::kCPU);

}  // namespace liger::nn
