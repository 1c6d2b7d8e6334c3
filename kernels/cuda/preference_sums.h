// Launchers of the per-sequence pieces of the cuda fused_linear_preference
// (preference_sums.cu): plain C++ over raw device pointers, sizes and a
// stream; nothing here knows about torch.
//
// Token t is kept when its label is not ignore_index, lies in [0, vocab) and
// its sequence lies in [0, sequences); a kept token belongs to sequence
// sequence[t]. Everything else is skipped (its sequence id is never read as
// an index).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace liger::cuda_kernels {

struct PreferenceTokens {
  const int64_t* labels = nullptr;    // [rows]
  const int64_t* sequence = nullptr;  // [rows]
  int64_t rows = 0;
  int64_t sequences = 0;  // 2P
  int64_t vocab = 0;
  int64_t ignore_index = -100;
};

// Per sequence s: logps[s] = -sum of nll[t] and counts[s] = the number of
// kept tokens t of s (both [sequences] fp32), where nll [rows] fp32 is
// lse - z_label per token (cross_entropy_rows' per-row loss). Deterministic:
// one block per sequence visits the rows in a fixed pattern and adds its
// threads' sums by a fixed tree, no atomics. Cost: sequences x rows reads of
// (label, sequence, nll), a few MB for a micro-batch.
cudaError_t preference_sequence_sums(const PreferenceTokens& tokens, const float* nll, float* logps,
                                     float* counts, cudaStream_t stream);

// Per token t: row_scale[t] = -d_logps[sequence[t]] when t is kept, else 0
// ([rows] fp32). With it cross_entropy_rows writes
//   (softmax - onehot) * (-c) = c (onehot - softmax) = d loss / d logits_t
// for c = d loss / d logp of t's sequence.
cudaError_t preference_row_scale(const PreferenceTokens& tokens, const float* d_logps,
                                 float* row_scale, cudaStream_t stream);

}  // namespace liger::cuda_kernels
