// Text generation from a trained Transformer: greedy or temperature + top-p
// sampling. Each new token re-runs the forward over the (windowed) context;
// a KV cache is a later optimisation for long generations.
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
  int64_t eos_id = -1;       // stop when sampled (< 0: never)
};

// Returns prompt + generated token ids.
std::vector<int64_t> generate(TransformerImpl& model, const std::vector<int64_t>& prompt,
                              const GenerationOptions& options);

}  // namespace liger::models
