// Small helpers shared by the models tests: paths, temp folders, running the
// project's Python (HF transformers, the oracle), comparing tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace liger::testing {

// The repository (env LIGER_SOURCE_DIR, set by ctest).
std::string repo_dir();
// The Python with transformers: env LIGER_PYTHON, else the repo's .venv.
std::string python();
// A folder under the temp dir, unique to this process (created).
std::string temp_dir(const std::string& name);
// Runs `command` through the shell with stdout+stderr captured; prints the
// output to stdout (so ctest logs show it) and returns the exit status.
int run_and_print(const std::string& command);

// max |actual - expected| / max |expected|: the error relative to the
// largest magnitude of the reference (robust where entries are near zero).
double relative_to_max(const at::Tensor& actual, const at::Tensor& expected);

}  // namespace liger::testing
