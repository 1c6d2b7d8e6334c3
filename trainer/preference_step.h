// Preference training (training.objective: dpo, orpo, simpo): the pairs and
// their loader, DPO's reference log-probs, and one optimizer step.
//
// A step draws gradient_accumulation_steps micro-batches of whole pairs
// first; every micro-batch's pair terms divide by the pairs of the whole
// step and its NLL term by the step's chosen response tokens, so
// accumulation is exact. Per micro-batch the policy runs once over the
// packed chosen and rejected sequences (isolated packing), and
// fused_linear_preference turns its final hidden states into the loss.
//
// The reference (DPO only, preference.reference):
//   model        with LoRA, the same model with its adapters removed for the
//                reference forward (no second copy of the weights); without
//                LoRA, a frozen copy of the starting weights in the compute
//                dtype (one more model's worth of memory). Each micro-batch
//                runs a reference forward under no_grad.
//   precomputed  one pass over every pair at start with the starting
//                weights, its summed log-probs (two floats per pair) saved
//                as checkpoint.output_dir/reference_logps.bin and read back
//                on resume; no reference forward during training.
#pragma once

#include "data/preference.h"
#include "data/tokenizer.h"
#include "kernels/ops.h"
#include "trainer/config.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace liger::models {
class TransformerImpl;
}

namespace liger::trainer {

class AdamW;
namespace distributed {
class Communicator;
}

// The op's options from the preference: section (normalisers unset).
kernels::PreferenceOptions preference_options(const config::TrainConfig& config);

// Every pair of data.train, in file order. DataError naming file:line.
std::vector<data::PreferencePair> read_training_pairs(const config::TrainConfig& config,
                                                      const data::Tokenizer& tokenizer);

// One step's results: device scalars, plus the reported numbers on the host
// (TRL's names: rewards/chosen, rewards/rejected, rewards/accuracies,
// rewards/margins, logps/chosen, logps/rejected; means over the step's pairs).
struct PreferenceStepOutputs {
  at::Tensor loss_total;
  at::Tensor grad_norm;
  int64_t input_tokens = 0;
  std::vector<std::pair<std::string, double>> metrics;
};

class PreferenceTraining {
 public:
  PreferenceTraining(const config::TrainConfig& config,
                     std::shared_ptr<const std::vector<data::PreferencePair>> pairs,
                     c10::Device device);
  ~PreferenceTraining();

  // Sets the reference up from `model`'s starting weights: call before a
  // checkpoint is loaded into it. `resuming`: a precomputed file from the
  // run being resumed is read instead of computed.
  void prepare_reference(models::TransformerImpl& model, bool resuming);

  // Summed log-probs [2P] of a micro-batch's sequences under `model` (no
  // gradient): what the reference provides. Public for tests.
  at::Tensor sequence_logps(models::TransformerImpl& model, const data::PreferenceBatch& batch);

  // One optimizer step: accumulate() over the next gradient_accumulation_steps
  // micro-batches of the loader, clipping, AdamW, zero_grad.
  PreferenceStepOutputs step(models::TransformerImpl& model, AdamW& optimizer,
                             distributed::Communicator& comm, double lr);

  // Forward and backward of `batches` as one step's accumulated batch: the
  // gradients are left in the parameters' .grad (with compute copies and
  // several micro-batches, folded into the fp32 ones when `optimizer` is
  // given). loss_total and metrics are set, grad_norm is not.
  PreferenceStepOutputs accumulate(models::TransformerImpl& model,
                                   const std::vector<data::PreferenceBatch>& batches,
                                   AdamW* optimizer);

  data::PreferenceLoader& loader() { return loader_; }
  // Where the precomputed reference log-probs live.
  std::string reference_file() const;

 private:
  at::Tensor reference_logps(const data::PreferenceBatch& batch);
  void precompute(models::TransformerImpl& model);

  const config::TrainConfig& config_;
  c10::Device device_;
  kernels::PreferenceOptions options_;
  data::PreferenceLoader loader_;
  std::shared_ptr<const std::vector<data::PreferencePair>> pairs_;
  models::TransformerImpl* policy_ =
      nullptr;  // the trained model (LoRA: adapters off for reference)
  std::shared_ptr<models::TransformerImpl> frozen_copy_;  // reference: model without LoRA
  std::vector<float>
      precomputed_;  // reference: precomputed; pair i: [2i] chosen, [2i + 1] rejected
};

}  // namespace liger::trainer
