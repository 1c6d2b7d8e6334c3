#include "kernels/attention_chunks.h"

#include <algorithm>
#include <cmath>

namespace liger::kernels {

int64_t attention_chunk_rows(int64_t batch, int64_t heads_q, int64_t tq, int64_t tk,
                             int64_t window) {
  // rows * keys fp32 scores per (batch, head) within the budget.
  const double budget =
      kAttentionChunkBytes / (4.0 * static_cast<double>(std::max<int64_t>(batch, 1)) *
                              static_cast<double>(std::max<int64_t>(heads_q, 1)));
  double rows = budget / static_cast<double>(std::max<int64_t>(tk, 1));
  if (window > 0) {  // the positive root of rows^2 + (window - 1) rows = budget
    const double w = static_cast<double>(window - 1);
    rows = std::max(rows, (std::sqrt(w * w + 4.0 * budget) - w) / 2.0);
  }
  int64_t n = static_cast<int64_t>(std::floor(rows));
  if (n > 64) n -= n % 64;  // whole tiles for the matmuls
  return std::max<int64_t>(1, std::min(n, std::max<int64_t>(tq, 1)));
}

double attention_chunk_score_bytes(int64_t batch, int64_t heads_q, int64_t tq, int64_t tk,
                                   int64_t window) {
  const int64_t rows = attention_chunk_rows(batch, heads_q, tq, tk, window);
  const int64_t keys = window > 0 ? std::min(tk, window + rows - 1) : tk;
  return 4.0 * static_cast<double>(batch) * static_cast<double>(heads_q) *
         static_cast<double>(rows) * static_cast<double>(keys);
}

}  // namespace liger::kernels
