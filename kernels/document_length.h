// The length of a packed batch's documents as the attention kernels feel it.
//
// A document of L tokens holds L (L + 1) / 2 of the causal mask's visible
// (query, key) pairs, so the work of a packed batch sits mostly in its long
// documents. The pair-weighted mean length
//   sum_d L_d^2 / sum_d L_d     (over every document of every row)
// is the length of the document an average token's pairs belong to: L for
// equal documents, close to the longest one when a few long documents hold
// most of the tokens. The cuda attention picks its kernels by it
// (AttentionOptions::document_tokens).
//
// A document is a run of equal consecutive ids in a row (packing numbers them
// 0, 1, 2, ...; a row's padding is one more run). Plain C++: the trainer forms
// it from the host copy of the ids, tests/kernels/test_document_length.cpp
// checks it.
#pragma once

#include <cstdint>

namespace liger::kernels {

// ids: [rows, seq_len] row-major. Returns the pair-weighted mean document
// length, rounded to the nearest token; 0 when there are no tokens.
inline int64_t pair_weighted_document_length(const int64_t* ids, int64_t rows, int64_t seq_len) {
  double tokens = 0.0, squares = 0.0;  // double: sums of squares past 2^53 only lose rounding
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t* row = ids + r * seq_len;
    int64_t run = 0;
    for (int64_t t = 0; t < seq_len; ++t) {
      ++run;
      if (t + 1 == seq_len || row[t + 1] != row[t]) {  // the run ends at t
        const auto length = static_cast<double>(run);
        tokens += length;
        squares += length * length;
        run = 0;
      }
    }
  }
  return tokens > 0.0 ? static_cast<int64_t>(squares / tokens + 0.5) : 0;
}

}  // namespace liger::kernels
