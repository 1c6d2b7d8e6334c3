#include "trainer/preference_step.h"

#include "data/data_error.h"
#include "data/readers.h"
#include "kernels/document_length.h"
#include "kernels/preference_loss.h"
#include "models/lora.h"
#include "models/transformer.h"
#include "trainer/logging/log.h"
#include "trainer/optimizer.h"
#include "trainer/step_runner.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace liger::trainer {
namespace {

// reference_logps.bin: this magic, the pair count (int64), then two fp32 per
// pair (chosen, rejected), little-endian as the machine writes them.
constexpr char kReferenceMagic[8] = {'L', 'G', 'R', 'R', 'E', 'F', '0', '1'};

kernels::PreferenceObjective objective_of(config::Objective objective) {
  switch (objective) {
    case config::Objective::dpo: return kernels::PreferenceObjective::dpo;
    case config::Objective::orpo: return kernels::PreferenceObjective::orpo;
    case config::Objective::simpo: return kernels::PreferenceObjective::simpo;
    case config::Objective::sft: break;
  }
  throw std::logic_error("preference_options: training.objective sft has no preference loss");
}

kernels::DpoLossType loss_type_of(config::DpoLoss loss) {
  switch (loss) {
    case config::DpoLoss::sigmoid: return kernels::DpoLossType::sigmoid;
    case config::DpoLoss::ipo: return kernels::DpoLossType::ipo;
    case config::DpoLoss::hinge: return kernels::DpoLossType::hinge;
  }
  throw std::logic_error("unknown preference.loss_type");
}

// A micro-batch's fields on the device: ids, positions and documents
// [rows, seq_len]; labels and sequence flattened and cut to the loss
// positions (response targets), whose indices into [rows * seq_len] are
// `loss_rows` (undefined when every position counts). Prompts and padding
// never reach the lm_head: a prompt of a quarter of each sequence saves a
// quarter of the head's products in both passes.
struct DevicePairs {
  at::Tensor ids, labels, positions, documents, sequence, loss_rows;
  int64_t document_tokens = 0;  // the documents' pair-weighted mean length (picks kernels)
};

// The positions of a flattened batch that carry a response target.
std::vector<int64_t> loss_positions(const data::PreferenceBatch& batch, int64_t ignore_index) {
  std::vector<int64_t> kept;
  kept.reserve(static_cast<size_t>(batch.chosen_targets + batch.rejected_targets));
  for (size_t i = 0; i < batch.labels.size(); ++i) {
    if (batch.labels[i] != ignore_index) kept.push_back(static_cast<int64_t>(i));
  }
  return kept;
}

// A host vector as an int64 CPU tensor of its own (from_blob does not copy:
// clone before the vector can go away).
at::Tensor on_host(const std::vector<int64_t>& field) {
  return torch::from_blob(const_cast<int64_t*>(field.data()), {static_cast<int64_t>(field.size())},
                          at::kLong)
      .clone();
}

at::Tensor to_device(const std::vector<int64_t>& field, int64_t rows, int64_t seq_len,
                     const c10::Device& device) {
  return on_host(field).view({rows, seq_len}).to(device);
}

DevicePairs on_device(const data::PreferenceBatch& batch, const c10::Device& device,
                      int64_t ignore_index) {
  DevicePairs d;
  d.ids = to_device(batch.input_ids, batch.rows, batch.seq_len, device);
  d.positions = to_device(batch.position_ids, batch.rows, batch.seq_len, device);
  // Rows of one sequence need no document mask (and keep the fastest attention
  // path): an undefined tensor is plain causal attention. Padding after the
  // sequence sees it, but padding never reaches the loss.
  if (batch.rows_share_sequences) {
    d.documents = to_device(batch.document_ids, batch.rows, batch.seq_len, device);
    d.document_tokens = kernels::pair_weighted_document_length(batch.document_ids.data(),
                                                               batch.rows, batch.seq_len);
  }
  at::Tensor labels = on_host(batch.labels), sequence = on_host(batch.sequence);
  const std::vector<int64_t> kept = loss_positions(batch, ignore_index);
  if (kept.size() < batch.labels.size()) {
    const at::Tensor rows = on_host(kept);
    labels = labels.index_select(0, rows);
    sequence = sequence.index_select(0, rows);
    d.loss_rows = rows.to(device);
  }
  d.labels = labels.to(device);
  d.sequence = sequence.to(device);
  return d;
}

// The policy or reference forward and the op over it.
kernels::PreferenceLossResult run_pairs(models::TransformerImpl& model, const DevicePairs& d,
                                        const at::Tensor& reference,
                                        const kernels::PreferenceOptions& options) {
  const at::Tensor hidden = model.forward(d.ids, d.positions, d.documents, d.document_tokens);
  at::Tensor tokens = hidden.reshape({-1, hidden.size(-1)});  // [rows * seq_len, H]
  // only the loss positions (their gradient scatters back through index_select)
  if (d.loss_rows.defined()) tokens = tokens.index_select(0, d.loss_rows);
  return model.kernels().fused_linear_preference(tokens, model.lm_head_weight_for(hidden), d.labels,
                                                 d.sequence, reference, options);
}

// Removes the model's LoRA adapters until the end of the scope (the base model).
class AdaptersOff {
 public:
  explicit AdaptersOff(models::TransformerImpl& model) : model_(model) {
    if (model_.lora() == nullptr) return;
    // set_lora takes a shared_ptr: keep ours through the module holder's own
    saved_ = std::dynamic_pointer_cast<models::LoraAdaptersImpl>(model_.lora()->shared_from_this());
    model_.set_lora(nullptr);
  }
  ~AdaptersOff() {
    if (saved_) model_.set_lora(saved_);
  }
  AdaptersOff(const AdaptersOff&) = delete;
  AdaptersOff& operator=(const AdaptersOff&) = delete;

 private:
  models::TransformerImpl& model_;
  std::shared_ptr<models::LoraAdaptersImpl> saved_;
};

}  // namespace

kernels::PreferenceOptions preference_options(const config::TrainConfig& config) {
  kernels::PreferenceOptions o;
  o.objective = objective_of(config.training.objective);
  o.loss_type = loss_type_of(config.preference.loss_type);
  o.beta = config.preference.beta;
  o.label_smoothing = config.preference.label_smoothing;
  o.orpo_alpha = config.preference.orpo_alpha;
  o.simpo_gamma = config.preference.simpo_gamma;
  o.nll_weight = config.preference.nll_weight;
  o.chunk_mb = config.kernels.flce_chunk_mb;
  return o;
}

std::vector<data::PreferencePair> read_training_pairs(const config::TrainConfig& config,
                                                      const data::Tokenizer& tokenizer) {
  data::ReadOptions options;
  options.add_bos = config.data.add_bos;
  options.add_eos = config.data.add_eos;
  options.chat_template = data::parse_chat_template(config.data.chat_template);
  std::vector<data::PreferencePair> pairs;
  for (const std::string& file : config.data.train) {
    auto read = data::read_preference_pairs(file, tokenizer, options, config.data.seq_len);
    std::move(read.begin(), read.end(), std::back_inserter(pairs));
  }
  return pairs;
}

PreferenceTraining::PreferenceTraining(
    const config::TrainConfig& config,
    std::shared_ptr<const std::vector<data::PreferencePair>> pairs, c10::Device device)
    : config_(config),
      device_(device),
      options_(preference_options(config)),
      loader_(pairs, config.training.micro_batch_size, static_cast<uint64_t>(config.training.seed),
              config.data.seq_len),
      pairs_(std::move(pairs)) {}

PreferenceTraining::~PreferenceTraining() = default;

std::string PreferenceTraining::reference_file() const {
  return (std::filesystem::path(config_.checkpoint.output_dir) / "reference_logps.bin").string();
}

at::Tensor PreferenceTraining::sequence_logps(models::TransformerImpl& model,
                                              const data::PreferenceBatch& batch) {
  torch::NoGradGuard no_grad;
  kernels::PreferenceOptions o = options_;
  o.num_pairs = batch.num_pairs;
  // Only the log-probs are read: a zero reference stands in for DPO's.
  const at::Tensor zeros =
      torch::zeros({2 * batch.num_pairs}, at::TensorOptions().dtype(at::kFloat).device(device_));
  return run_pairs(model, on_device(batch, device_, options_.ignore_index), zeros, o).logps;
}

void PreferenceTraining::prepare_reference(models::TransformerImpl& model, bool resuming) {
  policy_ = &model;
  if (!kernels::needs_reference(options_.objective)) return;
  if (config_.preference.reference == config::ReferenceSource::precomputed) {
    if (resuming && std::filesystem::exists(reference_file())) {
      std::ifstream in(reference_file(), std::ios::binary);
      char magic[8] = {};
      int64_t count = 0;
      in.read(magic, sizeof magic);
      in.read(reinterpret_cast<char*>(&count), sizeof count);
      if (!in || std::memcmp(magic, kReferenceMagic, sizeof magic) != 0 ||
          count != static_cast<int64_t>(pairs_->size())) {
        throw data::DataError(reference_file() + ": holds no reference log-probs for the " +
                              std::to_string(pairs_->size()) +
                              " pairs of data.train; delete it to compute them again from "
                              "the starting weights");
      }
      precomputed_.resize(static_cast<size_t>(2 * count));
      in.read(reinterpret_cast<char*>(precomputed_.data()),
              static_cast<std::streamsize>(precomputed_.size() * sizeof(float)));
      if (!in) throw data::DataError(reference_file() + ": is cut short; delete it");
      log::info("reference: log-probs of " + std::to_string(count) + " pairs read from " +
                reference_file());
      return;
    }
    precompute(model);
    return;
  }
  if (model.lora() != nullptr) {
    log::info("reference: the base model (LoRA adapters off) under no_grad");
    return;
  }
  // A frozen copy of the starting weights, in the compute dtype.
  frozen_copy_ = std::make_shared<models::TransformerImpl>(
      model.config(), model.kernels(),
      at::TensorOptions().dtype(model.compute_dtype()).device(device_), model.compute_dtype());
  torch::NoGradGuard no_grad;
  const auto source = model.named_parameters();
  for (auto& item : frozen_copy_->named_parameters()) {
    item.value().copy_(source[item.key()]);  // cast: to the compute dtype
    item.value().set_requires_grad(false);
  }
  frozen_copy_->eval();
  log::info(c10::str("reference: a frozen copy of the starting weights (",
                     frozen_copy_->num_parameters(), " parameters in ",
                     c10::toString(model.compute_dtype()), ")"));
}

void PreferenceTraining::precompute(models::TransformerImpl& model) {
  const int64_t count = static_cast<int64_t>(pairs_->size());
  precomputed_.assign(static_cast<size_t>(2 * count), 0.0f);
  AdaptersOff base(model);
  const int64_t per_batch = config_.training.micro_batch_size;
  for (int64_t first = 0; first < count; first += per_batch) {
    std::vector<const data::PreferencePair*> picked;
    for (int64_t i = first; i < std::min(count, first + per_batch); ++i) {
      picked.push_back(&(*pairs_)[static_cast<size_t>(i)]);
    }
    const data::PreferenceBatch batch = data::pack_preference_pairs(picked, config_.data.seq_len);
    const at::Tensor logps = sequence_logps(model, batch).cpu();
    const int64_t p = batch.num_pairs;
    for (int64_t i = 0; i < p; ++i) {
      precomputed_[static_cast<size_t>(2 * (first + i))] = logps[i].item<float>();
      precomputed_[static_cast<size_t>(2 * (first + i) + 1)] = logps[p + i].item<float>();
    }
  }
  std::filesystem::create_directories(config_.checkpoint.output_dir);
  std::ofstream out(reference_file(), std::ios::binary | std::ios::trunc);
  out.write(kReferenceMagic, sizeof kReferenceMagic);
  out.write(reinterpret_cast<const char*>(&count), sizeof count);
  out.write(reinterpret_cast<const char*>(precomputed_.data()),
            static_cast<std::streamsize>(precomputed_.size() * sizeof(float)));
  if (!out) {
    throw data::DataError(reference_file() +
                          ": cannot be written; check that checkpoint.output_dir is writable");
  }
  log::info("reference: log-probs of " + std::to_string(count) +
            " pairs computed from the starting weights and saved to " + reference_file());
}

at::Tensor PreferenceTraining::reference_logps(const data::PreferenceBatch& batch) {
  if (!kernels::needs_reference(options_.objective)) return at::Tensor();
  if (!precomputed_.empty()) {
    const int64_t p = batch.num_pairs;
    std::vector<float> values(static_cast<size_t>(2 * p));
    for (int64_t i = 0; i < p; ++i) {
      const auto pair = static_cast<size_t>(batch.pair_index[static_cast<size_t>(i)]);
      values[static_cast<size_t>(i)] = precomputed_[2 * pair];
      values[static_cast<size_t>(p + i)] = precomputed_[2 * pair + 1];
    }
    return torch::tensor(values, at::kFloat).to(device_);
  }
  if (frozen_copy_) return sequence_logps(*frozen_copy_, batch);
  AdaptersOff base(*policy_);
  return sequence_logps(*policy_, batch);
}

PreferenceStepOutputs PreferenceTraining::step(models::TransformerImpl& model, AdamW& optimizer,
                                               distributed::Communicator& comm, double lr) {
  // The whole step's pairs first: their counts normalise every micro-batch.
  std::vector<data::PreferenceBatch> batches;
  for (int64_t i = 0; i < config_.training.gradient_accumulation_steps; ++i) {
    batches.push_back(loader_.next());
  }
  PreferenceStepOutputs out = accumulate(model, batches, &optimizer);
  const GradNorm clipping =
      grad_norm_and_clip(optimizer.gradients(), config_.training.grad_clip, comm, false);
  optimizer.step(lr, clipping.clip_coef);
  optimizer.zero_grad();
  out.grad_norm = clipping.norm;
  return out;
}

PreferenceStepOutputs PreferenceTraining::accumulate(
    models::TransformerImpl& model, const std::vector<data::PreferenceBatch>& batches,
    AdamW* optimizer) {
  PreferenceStepOutputs out;
  int64_t pairs = 0, chosen_tokens = 0;
  for (const data::PreferenceBatch& batch : batches) {
    pairs += batch.num_pairs;
    chosen_tokens += batch.chosen_targets;
    out.input_tokens += batch.rows * batch.seq_len;
  }
  kernels::PreferenceOptions o = options_;
  o.pair_normalizer = static_cast<double>(pairs);
  o.chosen_token_normalizer = static_cast<double>(std::max<int64_t>(chosen_tokens, 1));

  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device_);
  at::Tensor loss_total = torch::zeros({}, f32);
  // Per-pair numbers of the whole step, summed (host doubles at the end).
  at::Tensor sums = torch::zeros({6}, f32);
  for (const data::PreferenceBatch& batch : batches) {
    o.num_pairs = batch.num_pairs;
    const at::Tensor reference = reference_logps(batch);
    const DevicePairs d = on_device(batch, device_, options_.ignore_index);
    const kernels::PreferenceLossResult result = run_pairs(model, d, reference, o);
    result.loss.backward();
    if (optimizer != nullptr && batches.size() > 1) optimizer->fold_copy_gradients();
    loss_total += result.loss.detach();
    const kernels::PreferencePairStats s =
        kernels::preference_pair_stats(result.logps, result.counts, reference, o);
    sums += torch::stack({s.rewards_chosen.sum(), s.rewards_rejected.sum(),
                          s.rewards_chosen.gt(s.rewards_rejected).to(at::kFloat).sum(),
                          (s.rewards_chosen - s.rewards_rejected).sum(), s.logps_chosen.sum(),
                          s.logps_rejected.sum()});
  }
  out.loss_total = loss_total;
  // cast: the step's sums to host doubles (a sync, once per step)
  const at::Tensor means = (sums / static_cast<double>(pairs)).to(at::kDouble).cpu();
  const char* names[] = {"rewards/chosen",  "rewards/rejected", "rewards/accuracies",
                         "rewards/margins", "logps/chosen",     "logps/rejected"};
  for (int i = 0; i < 6; ++i) out.metrics.emplace_back(names[i], means[i].item<double>());
  return out;
}

}  // namespace liger::trainer
