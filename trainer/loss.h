// The training loss of one micro-batch: the SUM over its non-ignored target
// tokens divided by `normalizer`, the target-token count of the whole
// accumulated batch (all micro-batches, all ranks). That makes gradient
// accumulation exact, and the op does the division itself, so its upstream
// gradient is 1 (a fused backward skips the scaling pass).
#pragma once

#include "models/transformer.h"

namespace liger::trainer {

// hidden: [B, T, H] final-norm states, labels: [B, T] (-100 = ignored).
// Uses the fused linear cross entropy when the kernel set says so (the logits
// are never materialised), else lm_head + cross entropy. fp32 scalar.
// inverse_normalizer: when defined, an fp32 device scalar holding 1 / normalizer
// that the loss reads instead (a CUDA graph's step: the count changes per step,
// the captured launches do not).
at::Tensor token_loss(const models::TransformerImpl& model, const at::Tensor& hidden,
                      const at::Tensor& labels, double normalizer, double flce_chunk_mb,
                      kernels::FlceMode flce_mode = kernels::FlceMode::speed,
                      const at::Tensor& inverse_normalizer = at::Tensor());

}  // namespace liger::trainer
