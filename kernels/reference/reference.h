// The reference backend: plain ATen, written to compute what HF transformers
// computes (same casts, same op order where it matters). It is the baseline
// every other backend is tested against and the path of convergence baselines.
// Autograd comes from ATen; nothing here saves memory on purpose.
//
// Signatures are the ones of kernels/ops.h; see there for shapes and options.
#pragma once

#include "kernels/ops.h"

namespace liger::kernels::reference {

Tensor rms_norm(const Tensor& x, const Tensor& weight, const RmsNormOptions& options);
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

std::pair<Tensor, Tensor> rope(const Tensor& q, const Tensor& k, const Tensor& cos,
                               const Tensor& sin);

Tensor swiglu(const Tensor& gate, const Tensor& up);
Tensor geglu(const Tensor& gate, const Tensor& up);

Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options);
// Materialises logits = hidden @ weight^T (+ bias) in hidden's dtype, then
// calls cross_entropy above.
Tensor fused_linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                                  const Tensor& labels,
                                  const FusedLinearCrossEntropyOptions& options);

// Without sliding window and softcap: at::scaled_dot_product_attention. With
// either: an explicit fp32 masked matmul-softmax (see attention_explicit).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v,
                 const AttentionOptions& options);
// The explicit path on its own (also valid without window/softcap), so that
// tests can check it against SDPA.
Tensor attention_explicit(const Tensor& q, const Tensor& k, const Tensor& v,
                          const AttentionOptions& options);

// Reduces per-token losses [N] (already 0 where ignored) as ops.h says:
// mean divides by the number of non-ignored tokens, and gives 0 (not NaN)
// when there are none. Shared with the composite backend.
Tensor reduce_token_losses(const Tensor& per_token, const Tensor& labels,
                           const CrossEntropyOptions& options);

}  // namespace liger::kernels::reference
