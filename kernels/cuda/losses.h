// The cuda backend's losses (ATen binding over kernels/cuda/cross_entropy.h
// and cuBLAS GEMMs through ATen). Signatures are kernels/ops.h's.
#pragma once

#include "kernels/ops.h"

namespace liger::kernels::cuda {

// Gradient computed in forward into its own buffer (the logits are not
// overwritten); backward multiplies by grad_output on the device, skipping
// the pass when grad_output is 1. Mean divides by a device-side count.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options);

// Never holds [N, V] logits: chunks of tokens (speed) or of the vocabulary
// (lean), sized from options.chunk_mb, GEMMs in the input dtype with fp32
// accumulation. Reduction "none" is served by the composite backend.
Tensor fused_linear_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& bias,
                                  const Tensor& labels,
                                  const FusedLinearCrossEntropyOptions& options);

// DPO / ORPO / SimPO on per-sequence log-probs (kernels/cuda/preference.cpp):
// two passes over chunks of tokens, as fused_linear_cross_entropy's speed
// mode, without [N, V] logits; the gradients of hidden and weight are
// computed in forward, backward scales them by grad_output on the device.
// Inputs of another dtype than fp32, bf16 and fp16 take the composite backend.
PreferenceLossResult fused_linear_preference(const Tensor& hidden, const Tensor& weight,
                                             const Tensor& labels, const Tensor& sequence,
                                             const Tensor& reference_logps,
                                             const PreferenceOptions& options);

}  // namespace liger::kernels::cuda
