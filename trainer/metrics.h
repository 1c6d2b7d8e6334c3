// Per-step metrics: one JSON object per optimizer step appended to
// output_dir/metrics.jsonl, a log line every `logging.every` steps, a
// progress bar on stdout when it is a terminal, and with logging.tensorboard
// the same numbers as TensorBoard scalars.
#pragma once

#include "trainer/config_enums.h"
#include "trainer/logging/tensorboard_writer.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace liger::trainer {

struct StepMetrics {
  int64_t step = 0;
  double loss = 0.0;
  double lr = 0.0;
  double grad_norm = 0.0;
  int64_t tokens = 0;         // target tokens in this step (all micro-batches)
  double tokens_per_s = 0.0;  // input tokens processed per second in this step
  double elapsed_s = 0.0;     // since the start of this run (resumed runs continue the clock)
  int64_t peak_mem_bytes = 0;
  int64_t world_size = 1;  // ranks that processed `tokens` together
  // Model FLOPs utilisation: training FLOPs per token x tokens/s / (ranks x
  // the device's dense bf16 peak); absent when the peak is unknown (cpu).
  std::optional<double> mfu;
  // Set on evaluation steps (training.eval_every): validation loss per target
  // token and its perplexity exp(eval_loss); absent from the row otherwise.
  std::optional<double> eval_loss;
  std::optional<double> eval_ppl;
};

class MetricsWriter {
 public:
  // Opens output_dir/metrics.jsonl. On resume from `resume_step` > 0, lines of
  // later steps (from the run that was interrupted) are dropped first.
  MetricsWriter(const std::string& output_dir, int64_t resume_step, int64_t total_steps,
                int64_t log_every, config::ProgressBar progress_bar);

  // logging.tensorboard: from here on every number of each row also goes to
  // a new TensorBoard events file in output_dir (the run's own, beside those
  // of the runs it resumes), after `texts` (tag, Markdown) written once at the
  // run's first step.
  void open_tensorboard(const std::vector<std::pair<std::string, std::string>>& texts);

  void record(const StepMetrics& metrics);
  void finish_progress();
  std::string path() const { return path_; }

 private:
  void draw_progress(const StepMetrics& metrics);

  std::string path_;
  std::ofstream file_;
  std::optional<log::TensorBoardWriter> tensorboard_;
  int64_t resume_step_;
  int64_t total_steps_;
  int64_t log_every_;
  int64_t first_step_ = -1;
  bool progress_ = false;
};

// A metrics.jsonl row's numbers as TensorBoard scalars, tagged by their key:
// "eval/<name>" for eval_<name>, else "train/<key>"; the step is the event's.
std::vector<log::Scalar> tensorboard_scalars(const nlohmann::json& row);

// "1h02m", "3m07s", "12s"
std::string format_duration(double seconds);

}  // namespace liger::trainer
