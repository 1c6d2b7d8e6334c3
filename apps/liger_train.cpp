// liger-train: argument parsing and wiring only.
//
//   liger-train --config FILE.yaml [--set section.key=value ...] [--dry-run]
//   liger-train --print-reference      (the commented reference.yaml)
#include "data/data_error.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/config_schema.h"
#include "trainer/device_memory.h"
#include "trainer/dry_run.h"
#include "trainer/logging/log.h"
#include "trainer/trainer.h"

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include <cstdio>
#include <iostream>
#include <optional>

namespace {

// User errors are one line, no stack trace (c10::Error carries one: cut it).
std::string first_line(const std::string& message) {
  const auto newline = message.find('\n');
  return newline == std::string::npos ? message : message.substr(0, newline);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"liger-train: fine-tune Llama-family LLMs with fused kernels"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool dry = false;
  bool print_reference = false;
  app.add_option("-c,--config", config_path, "YAML config (see configs/reference.yaml)");
  app.add_option("--set", overrides, "override a key: --set training.steps=100 (repeatable)")
      ->type_name("KEY=VALUE");
  app.add_flag("--dry-run", dry, "validate, build the model on the meta device, print and exit");
  app.add_flag("--print-reference", print_reference, "print the commented reference config");
  CLI11_PARSE(app, argc, argv);

  if (print_reference) {
    std::cout << liger::config::reference_yaml();
    return 0;
  }
  if (config_path.empty()) {
    std::cerr << "error: --config FILE.yaml is required (start from configs/tiny.yaml)\n";
    return 2;
  }
  std::optional<liger::config::TrainConfig> loaded;  // for the out-of-memory message
  try {
    loaded = liger::config::load_config(config_path, overrides);
    const liger::config::TrainConfig& config = *loaded;
    if (dry) {
      std::cout << liger::trainer::dry_run(config).text;
      return 0;
    }
    liger::trainer::Trainer trainer(config);
    const liger::trainer::TrainResult result = trainer.run();
    if (result.rank != 0) return 0;  // rank 0 reports for the job
    if (!result.sample.empty()) {
      std::cout << "\n----- sample (prompt: \"" << config.logging.sample_prompt << "\") -----\n"
                << result.sample << "\n-----\n";
    }
    std::cout << "final loss " << result.final_loss << " at step " << result.final_step
              << (result.checkpoint_path.empty() ? "" : ", checkpoint " + result.checkpoint_path)
              << "\n";
    return 0;
  } catch (const c10::OutOfMemoryError& error) {
    // One line: what ran out and the switches that cut memory the most.
    std::string estimate;
    try {  // the same estimate as --dry-run, on the same line
      const std::string report = liger::trainer::dry_run(*loaded).text;
      const auto at = report.find("memory per GPU");
      if (at != std::string::npos) estimate = "; " + report.substr(at, report.find('\n', at) - at);
    } catch (...) {
    }
    const bool planned =
        loaded && loaded->training.memory_plan == liger::config::MemoryPlanMode::auto_;
    std::cerr
        << "out of memory: " << liger::trainer::describe_out_of_memory(error.what()) << estimate
        << (planned
                ? " -- the memory plan chose what its estimate fits; to fit, lower "
                  "training.memory_budget_gib (the plan then chooses leaner), "
                  "training.micro_batch_size or data.seq_len, or shard over more GPUs "
                  "(scripts/launch.sh)\n"
                : " -- to fit, set training.memory_plan: auto (it chooses the precision and "
                  "activation checkpointing), or turn on training.activation_checkpointing: full "
                  "and kernels.fused_linear_cross_entropy: true, lower training.micro_batch_size "
                  "or data.seq_len, use training.precision: bf16, or shard over more GPUs "
                  "(scripts/launch.sh); liger-train --dry-run prints the memory estimate\n");
  } catch (const liger::config::ConfigError& error) {
    std::cerr << "config error: " << error.what() << "\n";
  } catch (const liger::data::DataError& error) {
    std::cerr << "data error: " << error.what() << "\n";
  } catch (const liger::trainer::CheckpointWriteError& error) {
    std::cerr << "checkpoint error: " << error.what() << "\n";
  } catch (const std::exception& error) {
    std::cerr << "error: " << first_line(error.what()) << "\n";
  }
  liger::log::flush();
  return 1;
}
