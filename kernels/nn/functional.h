// The kernel ops as plain functions for a LibTorch user: each call takes the
// kernel the registry (kernels/registry.h) chooses for its input's device and
// dtype. fused = true asks for the best fused backend (cuda on a CUDA device
// in a CUDA build, else composite); fused = false asks for the reference
// (plain ATen, what HF computes). Shapes, dtypes and options are those of
// kernels/ops.h. The liger::nn modules call these.
#pragma once

#include "kernels/ops.h"
#include "kernels/registry.h"

#include <ATen/core/Tensor.h>

#include <utility>

namespace liger::nn::functional {

// The registry's choice for `op` on `input`'s device and dtype, resolved once
// per (device, dtype) and kept for the life of the process.
const kernels::KernelSet& kernels_for(kernels::Op op, const at::Tensor& input, bool fused = true);
// Which backend serves `op` for `input` ("composite" on the CPU when fused).
kernels::Backend backend_for(kernels::Op op, const at::Tensor& input, bool fused = true);

// x / sqrt(mean(x^2) + eps) * (offset + weight) over the last dim.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight,
                    const kernels::RmsNormOptions& options = {}, bool fused = true);
// (x - mean) / sqrt(var + eps) * weight + bias over the last dim (bias may be undefined).
at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                      double eps = 1e-5, bool fused = true);
// silu(gate) * up.
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up, bool fused = true);
// gelu_tanh(gate) * up.
at::Tensor geglu(const at::Tensor& gate, const at::Tensor& up, bool fused = true);
// {rope(q), rope(k)}: q [B, T, Hq, D], k [B, T, Hk, D], cos/sin [B or 1, T, D] fp32.
std::pair<at::Tensor, at::Tensor> rope(const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& cos, const at::Tensor& sin,
                                       bool fused = true);
// Cross entropy of logits [N, V] against labels [N] (int64); the loss is fp32.
at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                         const kernels::CrossEntropyOptions& options = {}, bool fused = true);
// cross_entropy(hidden @ weight^T + bias, labels) without the [N, V] logits:
// hidden [N, H], weight [V, H] (hidden's dtype), bias [V] or undefined.
at::Tensor fused_linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                      const at::Tensor& bias, const at::Tensor& labels,
                                      const kernels::FusedLinearCrossEntropyOptions& options = {},
                                      bool fused = true);

}  // namespace liger::nn::functional
