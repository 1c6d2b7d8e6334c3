// The per-sequence pieces of the cuda fused_linear_preference: the sums of
// log p(label) and the kept-token counts per sequence, and the per-token
// gradient scale from d loss / d logp per sequence (preference_sums.h).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/preference_sums.h"

namespace liger::cuda_kernels {
namespace {

constexpr int kSumThreads = 512;
constexpr int kScaleThreads = 256;

__device__ __forceinline__ bool kept_token(const PreferenceTokens& tok, int64_t t) {
  const int64_t label = tok.labels[t];
  if (label == tok.ignore_index || label < 0 || label >= tok.vocab) return false;
  const int64_t s = tok.sequence[t];
  return s >= 0 && s < tok.sequences;
}

// One block per sequence s (blockIdx.x). Thread i adds the rows i, i + 512,
// ... that belong to s, in that order; row_sum then adds the threads' sums by
// a fixed tree. The same inputs give the same bits, run after run.
__global__ void __launch_bounds__(kSumThreads)
    sequence_sums_kernel(PreferenceTokens tok, const float* __restrict__ nll,
                         float* __restrict__ logps, float* __restrict__ counts) {
  __shared__ float smem[32 * 2];
  const int64_t s = blockIdx.x;
  float acc[2] = {0.f, 0.f};  // sum of log p(label), kept tokens
  for (int64_t t = threadIdx.x; t < tok.rows; t += kSumThreads) {
    if (!kept_token(tok, t) || tok.sequence[t] != s) continue;
    acc[0] -= nll[t];  // log p(label) = z_label - lse = -nll
    acc[1] += 1.f;     // exact up to 2^24 tokens
  }
  row_sum<2>(acc, smem);
  if (threadIdx.x == 0) {
    logps[s] = acc[0];
    counts[s] = acc[1];
  }
}

__global__ void __launch_bounds__(kScaleThreads)
    row_scale_kernel(PreferenceTokens tok, const float* __restrict__ d_logps,
                     float* __restrict__ row_scale) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(kScaleThreads) + threadIdx.x;
  if (t >= tok.rows) return;
  row_scale[t] = kept_token(tok, t) ? -d_logps[tok.sequence[t]] : 0.f;
}

}  // namespace

cudaError_t preference_sequence_sums(const PreferenceTokens& tokens, const float* nll, float* logps,
                                     float* counts, cudaStream_t stream) {
  if (tokens.sequences == 0) return cudaSuccess;
  sequence_sums_kernel<<<static_cast<unsigned>(tokens.sequences), kSumThreads, 0, stream>>>(
      tokens, nll, logps, counts);  // one block per sequence (writes zeros when rows == 0)
  return cudaGetLastError();
}

cudaError_t preference_row_scale(const PreferenceTokens& tokens, const float* d_logps,
                                 float* row_scale, cudaStream_t stream) {
  if (tokens.rows == 0) return cudaSuccess;
  const int64_t blocks = (tokens.rows + kScaleThreads - 1) / kScaleThreads;
  row_scale_kernel<<<static_cast<unsigned>(blocks), kScaleThreads, 0, stream>>>(
      tokens, d_logps, row_scale);  // one thread per token
  return cudaGetLastError();
}

}  // namespace liger::cuda_kernels
