// How the memory-lean attention (kernels/composite/attention.cpp, which the
// cuda backend serves too) cuts the queries into chunks: the rows of a chunk
// and the size of its fp32 scores. Public for the memory estimate and tests.
#pragma once

#include <cstdint>

namespace liger::kernels {

// Budget of one chunk's fp32 scores [batch, heads_q, rows, keys].
constexpr double kAttentionChunkBytes = 128.0 * 1024 * 1024;

// Query rows per chunk: the largest count whose fp32 scores stay within
// kAttentionChunkBytes, keys being tk, or with a window at most
// window + rows - 1. At least 1, at most tq; a multiple of 64 above 64.
int64_t attention_chunk_rows(int64_t batch, int64_t heads_q, int64_t tq, int64_t tk,
                             int64_t window);

// Bytes of the largest chunk's fp32 scores with those rows:
// 4 * batch * heads_q * rows * keys (the last chunk of causal attention sees
// every key up to the end, or window + rows - 1 of them).
double attention_chunk_score_bytes(int64_t batch, int64_t heads_q, int64_t tq, int64_t tk,
                                   int64_t window);

}  // namespace liger::kernels
