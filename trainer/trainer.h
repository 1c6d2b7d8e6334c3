// The training loop, top to bottom: config -> tokenizer + data -> model +
// kernels -> AdamW + schedule -> (resume) -> steps -> checkpoints + metrics.
#pragma once

#include "trainer/config.h"

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace liger::models {
class TransformerImpl;
}

namespace liger::trainer {

class MetricsWriter;
struct EvalResult;
struct MetricsContext;
struct StepOptions;

struct TrainResult {
  int64_t rank = 0;  // of this process in its job (only rank 0 reports)
  int64_t final_step = 0;
  double final_loss = 0.0;      // loss of the last step taken (NaN if none was)
  std::string checkpoint_path;  // last checkpoint written ("" if none)
  bool stopped_by_signal = false;
  std::string sample;  // generated text (logging.sample_tokens > 0)
};

class Trainer {
 public:
  // Builds everything (throws config::ConfigError / data::DataError on user errors).
  explicit Trainer(config::TrainConfig config);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains to training.steps. `stop_after_step` > 0 stops after that step as
  // a SIGTERM would (checkpoint, stopped_by_signal = true): preemption tests.
  TrainResult run(int64_t stop_after_step = 0);

  models::TransformerImpl& model();

 private:
  using Clock = std::chrono::steady_clock;
  // The named parts of run() (trainer.cpp), in the order it calls them.
  // rank 0's metrics.jsonl (and TensorBoard events); none on other ranks
  std::optional<MetricsWriter> open_metrics() const;
  void begin_run();  // train mode, the run's first step, peak memory reset
  MetricsContext metrics_context(MetricsWriter* writer, Clock::time_point run_start) const;
  StepOptions step_options() const;  // what the StepRunner takes from the config
  EvalResult evaluate_model();       // on the held-out windows
  std::string save_checkpoint(int64_t step, Clock::time_point run_start);  // returns its path
  std::string generate_sample();  // logging.sample_tokens after logging.sample_prompt
  void log_done(const TrainResult& result, const std::optional<MetricsWriter>& metrics) const;

  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace liger::trainer
