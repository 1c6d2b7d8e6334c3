// Checkpoints: output_dir/step-N/ holds the model, the optimizer state, the
// trainer state (step, data position, counters), the RNG state, the
// resolved config and the resolved ModelConfig (model_config.json). A checkpoint is written into a temporary directory, synced,
// and renamed into place, so a crash never leaves a half-written step-N/ and
// never touches the last good one.
#pragma once

#include "models/transformer.h"
#include "trainer/optimizer.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace liger::trainer {

class CheckpointManager {
 public:
  CheckpointManager(std::string output_dir, int64_t keep_last);

  // Writes step-N/ atomically and prunes to keep_last. Returns its path.
  std::string save(int64_t step, models::TransformerImpl& model, const AdamW& optimizer,
                   const nlohmann::json& trainer_state, const std::string& resolved_config_yaml);

  // Complete checkpoints in output_dir, oldest first.
  std::vector<std::string> list() const;

  // Resolves checkpoint.resume: "none" -> nullopt; "auto" -> newest complete
  // step-N/ (nullopt when there is none); anything else is a path that must
  // be a checkpoint directory (std::runtime_error otherwise).
  std::optional<std::string> resolve_resume(const std::string& resume) const;

  // Restores model + optimizer from `dir` and returns its trainer state.
  // A parameter missing or of another shape is an error naming it.
  static nlohmann::json load(const std::string& dir, models::TransformerImpl& model, AdamW& optimizer);
  // Restores the model parameters only (export, generation).
  static void load_model(const std::string& dir, models::TransformerImpl& model);

 private:
  std::string output_dir_;
  int64_t keep_last_;
};

}  // namespace liger::trainer
