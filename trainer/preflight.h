// The checks a run can make from its config and the file system alone, before
// any work: a mistyped path fails in the first second with the key that names
// it, not after an 8B model has been built and loaded. The Trainer and
// --dry-run both call check_files.
#pragma once

#include "trainer/config.h"

namespace liger::trainer {

// Throws config::ConfigError naming the key and what to do when:
//  - checkpoint.resume names a folder that is not a liger-train checkpoint;
//  - checkpoint.output_dir cannot be created or written;
//  - a data.train / data.eval file is missing, a folder, or unreadable;
//  - data.tokenizer names nothing, or a folder without tokenizer.json / tokenizer.model;
//  - model.hf_path lacks config.json or a weight file (model.safetensors, or the
//    shards model.safetensors.index.json lists);
//  - model.adapter_path lacks adapter_config.json or adapter_model.safetensors.
void check_files(const config::TrainConfig& config);

}  // namespace liger::trainer
