// Mixtral's router, shared by every backend of the moe op (kernels/ops.h
// MoeFn): the logits, the top-k experts of each token and their renormalised
// probabilities. Plain ATen with autograd; it runs on the device without
// reading anything back.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace liger::kernels {

struct Routing {
  at::Tensor logits;   // [N, E] x @ router^T in x's dtype
  at::Tensor weights;  // [N, k] fp32: the chosen experts' probabilities, summing to 1 per token
  at::Tensor experts;  // [N, k] int64: the chosen experts, most probable first
};

// x [N, H], router [E, H]. softmax in fp32 over the E logits, top_k of the
// probabilities, those k renormalised (HF MixtralTopKRouter).
Routing route_tokens(const at::Tensor& x, const at::Tensor& router, int64_t top_k);

// Throws std::invalid_argument naming `op` when the shapes of the moe op's
// arguments do not fit together (see kernels/ops.h MoeFn).
void check_moe_args(const char* op, const at::Tensor& x, const at::Tensor& router,
                    const at::Tensor& gate_up, const at::Tensor& down, int64_t top_k);

}  // namespace liger::kernels
