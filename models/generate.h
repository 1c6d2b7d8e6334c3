// Text generation from a Transformer: greedy or temperature + top-p sampling,
// with a KV cache. The prompt is run once (prefill); each new token then runs
// the layers over that one token, reading earlier keys/values from the cache.
#pragma once

#include "models/transformer.h"

#include <cstdint>
#include <vector>

namespace liger::models {

struct GenerationOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.8;  // 0: greedy
  double top_p = 0.95;       // nucleus threshold (1: off)
  uint64_t seed = 0;
  int64_t eos_id = -1;            // stop when sampled (< 0: never)
  std::vector<int64_t> stop_ids;  // more ids that stop (HF configs list several eos ids)
  // false: re-run the whole context for every token (no cache; the reference
  // the cached path is tested against).
  bool use_cache = true;
};

// Returns prompt + generated token ids (batch of one). The context is the
// last model.max_seq_len tokens: the prompt is cut to fit; when the cache
// fills up it is rebuilt from the last half of the context. Throws
// std::invalid_argument for an empty prompt.
std::vector<int64_t> generate(TransformerImpl& model, const std::vector<int64_t>& prompt,
                              const GenerationOptions& options);

}  // namespace liger::models
