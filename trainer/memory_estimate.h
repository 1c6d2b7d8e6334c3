// An analytic estimate of the memory one GPU needs for a training step, from
// the model's shapes and the config: what --dry-run prints, and what the log
// prints beside the measured peak after the first step.
#pragma once

#include "models/model_config.h"
#include "trainer/config.h"

#include <cstdint>
#include <string>

namespace liger::trainer {

struct MemoryEstimate {
  double parameters = 0, gradients = 0, optimizer = 0;  // this rank's share (sharded over world_size)
  double gathered = 0;      // sharded: full weights of the units gathered at once (compute dtype)
  double activations = 0;   // kept for backward, all layers (checkpointing: the layer inputs + one layer)
  double per_layer = 0;     // one layer's activations without checkpointing
  double loss = 0;          // logits and their gradient, or the fused loss's working memory
  double total() const { return parameters + gradients + optimizer + gathered + activations + loss; }
  std::string describe() const;  // one line per item, GiB
};

// `world_size` ranks shard parameters, gradients and optimizer state (1: none).
MemoryEstimate estimate_memory(const models::ModelConfig& model, const config::TrainConfig& config,
                               int64_t world_size);

}  // namespace liger::trainer
