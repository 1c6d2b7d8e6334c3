// Evaluation: validation loss and perplexity over held-out windows
// (data.eval or data.eval_fraction), every training.eval_every steps.
//
// The logits are materialised (model.logits, which applies a final softcap
// the way HF does) and go through the reference cross entropy, without
// gradients; one sequence's [seq_len, vocab] logits at a time bound memory.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>

namespace liger::data {
class PackedDataset;
}
namespace liger::models {
class TransformerImpl;
}

namespace liger::trainer {

struct EvalResult {
  double loss = 0.0;        // mean cross entropy per target token (NaN when there is none)
  double perplexity = 0.0;  // exp(loss)
  int64_t target_tokens = 0;
  int64_t windows = 0;
};

// Evaluates the first min(num_windows, max_batches * micro_batch_size)
// windows of `data` in order (all of them when max_batches is 0), in
// micro-batches of `micro_batch_size`. Position ids go to the model when the
// data is packed isolated. The model's train/eval mode is restored.
EvalResult evaluate(models::TransformerImpl& model, const data::PackedDataset& data,
                    int64_t micro_batch_size, int64_t max_batches, c10::Device device);

}  // namespace liger::trainer
