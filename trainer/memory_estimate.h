// An analytic estimate of the memory one GPU needs for a training step, from
// the model's shapes and the config: what --dry-run prints, what the memory
// plan compares with its budget (trainer/memory_plan.h), and what the log
// prints beside the measured peak after the first step.
//
// The peak is taken at the larger of two moments of a micro-batch:
//   the loss: every activation kept for backward, the loss's working memory
//     (or, if larger, one layer's backward), and the gradients that live
//     through a forward (accumulating: the running sums; otherwise none,
//     since the optimizer step frees them);
//   the end of backward: every gradient, the first layer's activations and
//     one layer's backward working memory.
// Parameters, AdamW state and gathered weights are there at both.
#pragma once

#include "models/model_config.h"
#include "trainer/config.h"

#include <cstdint>
#include <string>

namespace liger::trainer {

struct MemoryEstimate {
  double parameters = 0, gradients = 0,
         optimizer = 0;  // this rank's share (sharded over world_size)
  double gathered = 0;   // sharded: full weights of the units gathered at once (compute dtype)
  double activations =
      0;  // kept for backward, all layers (checkpointing: the layer inputs + one layer)
  double per_layer = 0;  // one layer's activations without checkpointing
  double loss = 0;  // the loss's working memory (its chunk or logits, buffers, the head's gradient)
  double backward =
      0;  // one layer's backward working memory (sharded: + a unit's reduce-scatter staging)
  double gradients_in_forward =
      0;                   // the part of `gradients` alive through a forward (accumulation)
  double first_layer = 0;  // the first layer's activations while its backward runs
  double reference = 0;    // DPO's frozen copy of the weights (compute dtype, every rank)

  double at_loss() const {
    return gradients_in_forward + activations + (loss > backward ? loss : backward);
  }
  double at_backward_end() const { return gradients + first_layer + backward; }
  double total() const {
    const double varying = at_loss() > at_backward_end() ? at_loss() : at_backward_end();
    return parameters + optimizer + gathered + reference + varying;
  }
  std::string describe() const;  // one line: each item and the total, GiB
};

// Rows of seq_len tokens in one micro-batch: micro_batch_size, or for the
// preference objectives (micro_batch_size pairs) at most two per pair, one
// per sequence (first-fit packing may need fewer).
int64_t rows_per_micro_batch(const config::TrainConfig& config);

// `world_size` ranks shard parameters, gradients and optimizer state (1: none).
MemoryEstimate estimate_memory(const models::ModelConfig& model, const config::TrainConfig& config,
                               int64_t world_size);

}  // namespace liger::trainer
