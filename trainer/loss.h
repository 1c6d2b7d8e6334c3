// The training loss of one micro-batch, as a SUM over its non-ignored target
// tokens. The loop divides by the target-token count of the whole
// accumulated batch, which makes gradient accumulation exact.
#pragma once

#include "models/transformer.h"

namespace liger::trainer {

// hidden: [B, T, H] final-norm states, labels: [B, T] (-100 = ignored).
// Uses the fused linear cross entropy when the kernel set says so (the logits
// are never materialised), else lm_head + cross entropy. fp32 scalar.
at::Tensor token_loss_sum(const models::TransformerImpl& model, const at::Tensor& hidden,
                          const at::Tensor& labels, double flce_chunk_mb);

}  // namespace liger::trainer
