// Profiles a window of optimizer steps with PyTorch's Kineto profiler (CPU
// ops and CUDA kernels through CUPTI): each rank writes a Chrome trace
// (chrome://tracing, Perfetto) to <output_dir>/profile/rank-R.json, and the
// device time of the window is summarised in the log, by kind of kernel
// (GEMM, attention, our kernels, collectives, elementwise, ...) and by kernel.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace liger::trainer {

class StepProfiler {
 public:
  // Profiles steps [first_step, first_step + steps); steps == 0 = off.
  StepProfiler(int64_t first_step, int64_t steps, std::string output_dir, int rank,
               bool log_summary, int top_kernels = 20);
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  // Around each optimizer step's work on the host: begin before its first
  // launch, end after its last (the report waits for the device).
  void begin_step(int64_t step);
  void end_step(int64_t step);

 private:
  void stop_and_report();

  int64_t first_step_;
  int64_t last_step_;
  std::string output_dir_;
  int rank_;
  bool log_summary_;
  int top_kernels_;
  bool running_ = false;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace liger::trainer
