// TrainConfig: the validated, typed form of a YAML config. Every key, with
// its type, default and documentation, is declared once in
// trainer/config_keys.h; configs/reference.yaml is generated from there.
// Modes are enums (trainer/config_enums.h). Torch-free: the trainer turns
// them into torch types.
#pragma once

#include "trainer/config_enums.h"

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace liger::config {

// A user error in a config file or a --set override. The message names the
// file or key, the value and what is allowed.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The tokenizer of data.tokenizer '' without model.hf_path: the shipped
// sample (relative to the working directory, as the sample data).
inline constexpr const char* kSampleTokenizer = "data/samples/shakespeare_bpe1024.model";

// A list-of-strings key (data.train, data.eval).
using Strings = std::vector<std::string>;

// ModelSection, DataSection, TrainingSection, PreferenceSection, KernelsSection,
// ParallelismSection, CheckpointSection, LoggingSection: one field per key of
// trainer/config_keys.h, with its default.
#define CONFIG_SECTION(name, Struct) struct Struct {
#define CONFIG_KEY(Type, name, default_value, allowed, doc) Type name = default_value;
#define CONFIG_END_SECTION() \
  }                          \
  ;
#include "trainer/config_keys.h"
#undef CONFIG_SECTION
#undef CONFIG_KEY
#undef CONFIG_END_SECTION

struct TrainConfig {
  ModelSection model;
  LoraSection lora;
  DataSection data;
  TrainingSection training;
  PreferenceSection preference;
  KernelsSection kernels;
  ParallelismSection parallelism;
  CheckpointSection checkpoint;
  LoggingSection logging;

  // The resolved config (every key, defaults filled in) as YAML: written
  // into each checkpoint so a run can be reproduced from it alone.
  std::string resolved_yaml;
};

// lora.alpha, null meaning 2 x lora.rank.
inline double resolved_lora_alpha(const LoraSection& lora) {
  return lora.alpha ? *lora.alpha : 2.0 * static_cast<double>(lora.rank);
}

// Loads `path`, applies `overrides` ("section.key=value", the value parsed as
// YAML) and validates everything. Throws ConfigError.
TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Same from YAML text (`origin` names it in messages).
TrainConfig parse_config(const std::string& yaml_text, const std::string& origin,
                         const std::vector<std::string>& overrides = {});

// `config` with training.memory_plan: auto resolved: as if training.precision
// and training.activation_checkpointing had been written (training.memory_plan
// off; model.dtype and training.master_weights following the precision). The
// trainer runs it and its checkpoints record it (trainer/memory_plan.h).
TrainConfig with_planned_memory(const TrainConfig& config, Precision precision,
                                ActivationCheckpointing checkpointing);

// What a run will run on, known once the process has started (the launcher's
// environment, the resolved device).
struct RunSetting {
  int64_t world_size = 1;  // ranks in the job
  bool on_cuda = false;    // training.device resolved to a GPU
};

// The rules that involve the run as well as the keys: training.cuda_graphs
// needs a GPU and one rank; parallelism.data_parallel_shard_degree is -1 or
// the world size. Called by the Trainer and by --dry-run. Throws ConfigError.
void check_for_run(const TrainConfig& config, const RunSetting& run);

}  // namespace liger::config
