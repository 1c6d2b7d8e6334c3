// Checkpoints: output_dir/step-N/ holds the model, the optimizer state, the
// trainer state (step, data position, counters), the RNG state, the
// resolved config and the resolved ModelConfig (model_config.json). A
// checkpoint is written into a temporary directory, synced, and renamed into
// place, so a crash never leaves a half-written step-N/ and never touches the
// last good one.
//
// Sharded jobs (FSDP): every rank writes its own shards into the same
// step-N/ (model.rank-R.pt, optimizer.rank-R.pt, rng.rank-R.pt) and rank 0
// writes shards.json, the index that puts them back together; the rename
// happens once all ranks have written. A sharded checkpoint resumes on the
// same number of ranks; load_model() (export, generation) assembles it on one.
#pragma once

#include "models/transformer.h"
#include "trainer/config_enums.h"
#include "trainer/optimizer.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace liger::trainer {

// A checkpoint that could not be written (disk full, quota, permission, a
// vanished directory). One line: what failed on which path, the free space,
// and the last good checkpoint, which is untouched; the temporary folder is
// already removed.
class CheckpointWriteError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Where this process stands when a checkpoint is written or read.
struct CheckpointScope {
  int64_t rank = 0;
  int64_t world_size = 1;
  std::function<void()> barrier = [] {};  // all ranks meet (sharded jobs)
  nlohmann::json shard_index;             // null: the parameters are whole
  bool sharded() const { return !shard_index.is_null(); }
};

class CheckpointManager {
 public:
  CheckpointManager(std::string output_dir, int64_t keep_last);

  // Writes step-N/ atomically and prunes to keep_last. Returns its path.
  // Throws CheckpointWriteError when it cannot be written: nothing of the
  // attempt stays on disk, and every earlier checkpoint is as it was.
  // `parameters`: the model's parameters, or this rank's shards (scope.sharded()).
  std::string save(int64_t step, const NamedTensors& parameters,
                   const models::ModelConfig& model_config, const AdamW& optimizer,
                   const nlohmann::json& trainer_state, const std::string& resolved_config_yaml,
                   const CheckpointScope& scope = {});
  std::string save(int64_t step, models::TransformerImpl& model, const AdamW& optimizer,
                   const nlohmann::json& trainer_state, const std::string& resolved_config_yaml);

  // Complete checkpoints in output_dir, oldest first.
  std::vector<std::string> list() const;

  // Resolves checkpoint.resume: none -> nullopt; auto -> newest complete
  // step-N/ (nullopt when there is none); a path must be a checkpoint
  // directory (std::runtime_error otherwise).
  std::optional<std::string> resolve_resume(const config::Resume& resume) const;

  // Restores parameters (whole or this rank's shards, as saved) + optimizer
  // from `dir` and returns its trainer state. A parameter missing or of
  // another shape, or a sharded checkpoint of another world size, is an error
  // naming it.
  static nlohmann::json load(const std::string& dir, const NamedTensors& parameters,
                             AdamW& optimizer, const CheckpointScope& scope = {});
  static nlohmann::json load(const std::string& dir, models::TransformerImpl& model,
                             AdamW& optimizer);

  // Restores the whole model's parameters (export, generation); a sharded
  // checkpoint is assembled from all its ranks' files.
  static void load_model(const std::string& dir, models::TransformerImpl& model);
  // Every parameter of the checkpoint, whole (CPU, as saved; sharded ones assembled).
  static NamedTensors read_whole_parameters(const std::string& dir);

 private:
  // save() without the clean-up: the files into .step-N.tmp/, then the rename.
  void write_step(int64_t step, const NamedTensors& parameters,
                  const models::ModelConfig& model_config, const AdamW& optimizer,
                  const nlohmann::json& trainer_state, const std::string& resolved_config_yaml,
                  const CheckpointScope& scope) const;

  std::string output_dir_;
  int64_t keep_last_;
};

}  // namespace liger::trainer
