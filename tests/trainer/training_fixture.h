// Shared set-up for the end-to-end trainer tests: a very small Llama on a
// prompt/completion file built from the shipped Shakespeare text, where the
// prompts (no loss) vary in length so that ignored tokens fall unevenly
// across micro-batches.
#pragma once

#include "trainer/config.h"

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

namespace liger::testing {

std::string source_dir();
// A fresh empty directory under the system temp dir.
std::string fresh_dir(const std::string& name);
// Writes (once per process) the prompt/completion JSONL and returns its path.
std::string prompt_completion_file();

// A tiny-model config over prompt_completion_file(), output in `output_dir`.
config::TrainConfig tiny_config(const std::string& output_dir,
                                const std::vector<std::string>& overrides = {});

// name -> parameter (a CPU copy) of a trained model.
using Parameters = std::map<std::string, at::Tensor>;

// Largest ||a - b|| / ||b|| over all parameters.
double max_relative_difference(const Parameters& a, const Parameters& b);

}  // namespace liger::testing
