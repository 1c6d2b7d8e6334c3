// A step's metrics on their way from the device. Reading a step's loss on
// the host right after queuing it would make the host wait for the whole
// step and leave the GPU idle while the host then queues the next one. So the
// values (loss, gradient norm, whether any rank asked to stop, peak memory)
// are copied to pinned host memory behind an event, and read while the next
// step runs: the GPU never waits for the host between steps. Off cuda the
// values are on the host at once. Sharded: the loss is the sum of every rank's
// share, and whether to stop is decided together (a signal may reach the
// ranks a step apart).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace c10::cuda {
struct CUDAEvent;
}
namespace liger::trainer::distributed {
class Communicator;
}

namespace liger::trainer {

class MetricsWriter;
struct EvalResult;

// What finishing a step's metrics needs from the run, and what one finished
// step leaves for the next.
struct MetricsContext {
  MetricsWriter* writer = nullptr;  // rank 0's, which keeps the metrics; null on the other ranks
  std::chrono::steady_clock::time_point run_start;
  double elapsed_before = 0.0;   // seconds spent by the runs this one resumes
  double flops_per_token = 0.0;  // training FLOPs per token (model FLOPs utilisation)
  double peak_flops = 0.0;       // of one device; 0: unknown, no MFU
  int64_t world_size = 1;
  // After this step (the run's first) the measured peak memory is logged
  // beside the estimate; an empty estimate (off cuda): no line.
  int64_t first_step = 1;
  std::string memory_estimate;
  // Carried from step to step: the end of the last finished step on the GPU
  // (its step time is measured from there), and its loss.
  std::shared_ptr<c10::cuda::CUDAEvent> previous_end;
  double last_loss = std::numeric_limits<double>::quiet_NaN();
};

// What the host knows of a step once its device work is queued.
struct StepFacts {
  int64_t step = 0;
  double lr = 0.0;
  int64_t input_tokens = 0;  // all ranks
  std::chrono::steady_clock::time_point started;
};

class PendingMetrics {
 public:
  // Queues the step's values after its device work: stacked on the device
  // (sharded: reduced over ranks), then copied to the host without waiting.
  // `stop_requested`: this rank's vote to stop.
  // `router_losses`: [2] (load-balancing, z) of an MoE model, or undefined.
  PendingMetrics(const StepFacts& facts, const at::Tensor& loss_total, const at::Tensor& grad_norm,
                 const at::Tensor& router_losses, bool stop_requested, const c10::Device& device,
                 distributed::Communicator& comm);

  // Evaluation steps: the validation loss joins the step's row.
  void add_eval(const EvalResult& eval);
  // Numbers the objective reports beside the loss (already on the host).
  void add_extra(std::vector<std::pair<std::string, double>> extra) { extra_ = std::move(extra); }
  // Whether the values may still be on their way (cuda): finish() would wait.
  bool in_flight() const { return done_ != nullptr; }

  // Waits for the values, records the step's row (rank 0) and logs what
  // follows it; throws when the loss is not finite (training diverged).
  // Returns whether any rank asked to stop.
  bool finish(MetricsContext& context);

 private:
  StepFacts facts_;
  // host doubles: loss, grad_norm, stop (ranks asking), peak memory, then
  // with router losses the load-balancing and z losses
  at::Tensor values_;
  bool router_losses_ = false;
  std::shared_ptr<c10::cuda::CUDAEvent> done_;  // recorded after the step's last kernel (cuda)
  std::optional<double> eval_loss_, eval_ppl_;
  std::vector<std::pair<std::string, double>> extra_;
};

// The step whose metrics are on their way: at most one, since each is
// finished while the step after it runs.
class MetricsInFlight {
 public:
  explicit MetricsInFlight(MetricsContext context);

  // Takes a step's metrics: finishes the previous step's (their copy has
  // run beside this step), and these too when `read_now` or when they are on
  // the host already; else they wait for the next push() or drain().
  // Returns whether any rank asked to stop.
  bool push(PendingMetrics step, bool read_now);
  // Finishes the step still in flight, if any.
  void drain();
  // The loss of the last finished step (NaN if none).
  double last_loss() const { return context_.last_loss; }

 private:
  MetricsContext context_;
  std::optional<PendingMetrics> in_flight_;
};

}  // namespace liger::trainer
