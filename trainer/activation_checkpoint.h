// Activation checkpointing: run a decoder layer without keeping its
// activations, and run it again in backward to get them back. Memory per layer
// falls to its input; compute rises by one extra forward of the layer.
#pragma once

#include "models/transformer.h"

namespace liger::trainer {

// y = layer(x), keeping only x. In backward the layer runs again on a
// detached copy of x with gradients on, and backward goes through that graph:
// the layer's parameters receive their gradients there (directly, or through
// whatever produced them, e.g. a sharded gather), x receives its own.
// The layer must be deterministic: LoRA dropout draws its masks again in
// the recompute, so full checkpointing with lora.dropout > 0 is rejected.
// Without grad mode it is simply layer(x).
at::Tensor checkpointed_layer(const models::LayerHooks::LayerFn& layer, const at::Tensor& x);

// Layer hooks that checkpoint every decoder layer (training.activation_checkpointing: full).
class CheckpointEveryLayer : public models::LayerHooks {
 public:
  at::Tensor run_layer(int64_t index, const at::Tensor& x, const LayerFn& layer) override;
};

}  // namespace liger::trainer
