// Small helpers shared by the model tests.
#pragma once

#include "models/model_config.h"

#include <ATen/ATen.h>

#include <cstdint>

namespace liger::models::test {

// max |a - b| / max |b|, in fp32: one number per tensor comparison.
inline double max_rel(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor af = a.to(at::kFloat), bf = b.to(at::kFloat);
  return ((af - bf).abs().max() / bf.abs().max().clamp_min(1e-30)).item<double>();
}

// The tiny preset shrunk to a two-layer model of the given widths (4 query
// heads over 2 key/value heads, 64 positions): fast CPU model tests.
inline ModelConfig small_config(int64_t vocab, int64_t hidden, int64_t intermediate, bool tied) {
  ModelConfig c = preset("tiny");
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.max_seq_len = 64;
  c.tie_embeddings = tied;
  return c;
}

}  // namespace liger::models::test
