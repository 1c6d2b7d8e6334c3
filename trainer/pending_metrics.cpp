#include "trainer/pending_metrics.h"

#include "kernels/registry.h"
#include "trainer/device_memory.h"
#include "trainer/distributed/communicator.h"
#include "trainer/evaluate.h"
#include "trainer/logging/log.h"
#include "trainer/metrics.h"

#include <ATen/cuda/CUDAEvent.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <utility>

namespace liger::trainer {

using Clock = std::chrono::steady_clock;

PendingMetrics::PendingMetrics(const StepFacts& facts, const at::Tensor& loss_total,
                               const at::Tensor& grad_norm, const at::Tensor& router_losses,
                               bool stop_requested, const c10::Device& device,
                               distributed::Communicator& comm)
    : facts_(facts), router_losses_(router_losses.defined()) {
  // The host values are written by fill kernels on the device (their value
  // is a launch argument): a copy from pageable host memory would wait for
  // the stream, i.e. for this whole step.
  const auto on_device = at::TensorOptions().dtype(at::kDouble).device(device);
  at::Tensor values =
      torch::stack({loss_total.to(at::kDouble), grad_norm.to(at::kDouble),
                    torch::full({}, stop_requested ? 1.0 : 0.0, on_device),
                    torch::full({}, static_cast<double>(peak_memory_bytes(device)), on_device)});
  if (comm.world_size() > 1) {
    at::Tensor sums =
        values.narrow(0, 0, 3).clone();  // loss and stop: summed; grad_norm is global already
    comm.all_reduce(sums);
    at::Tensor peak = values.narrow(0, 3, 1).clone();
    comm.all_reduce(peak, distributed::ReduceOp::max);
    values = torch::cat({sums.narrow(0, 0, 1), values.narrow(0, 1, 1), sums.narrow(0, 2, 1), peak});
  }
  if (router_losses_) {
    // Each rank's share of the batch's router losses: their sum is the batch's.
    at::Tensor router = router_losses.to(at::kDouble);
    if (comm.world_size() > 1) comm.all_reduce(router);
    values = torch::cat({values, router});
  }
  values_ = values.is_cuda()
                ? torch::empty({values.numel()},
                               at::TensorOptions().dtype(at::kDouble).pinned_memory(true))
                : values;
  if (values.is_cuda()) {
    values_.copy_(values, /*non_blocking=*/true);
    done_ = std::make_shared<at::cuda::CUDAEvent>(
        cudaEventDefault);  // timed: steps are measured on the GPU
    done_->record(at::cuda::getCurrentCUDAStream());
  }
}

void PendingMetrics::add_eval(const EvalResult& eval) {
  eval_loss_ = eval.loss;
  eval_ppl_ = eval.perplexity;
}

bool PendingMetrics::finish(MetricsContext& context) {
  if (done_) done_->synchronize();
  const double* values = values_.data_ptr<double>();
  StepMetrics row;
  row.step = facts_.step;
  row.loss = values[0];
  row.grad_norm = values[1];
  row.lr = facts_.lr;
  row.tokens = facts_.input_tokens;
  // The step's time: on cuda from the previous step's end to its end on the
  // GPU's clock (the host runs a step ahead); else, and for the first step, wall time.
  double step_seconds = std::chrono::duration<double>(Clock::now() - facts_.started).count();
  if (done_ && context.previous_end)
    step_seconds = context.previous_end->elapsed_time(*done_) / 1000.0;
  context.previous_end = done_;
  row.tokens_per_s = static_cast<double>(facts_.input_tokens) / std::max(step_seconds, 1e-9);
  row.elapsed_s = context.elapsed_before +
                  std::chrono::duration<double>(Clock::now() - context.run_start).count();
  row.peak_mem_bytes = static_cast<int64_t>(values[3]);  // the highest of all ranks
  row.world_size = context.world_size;
  if (context.peak_flops > 0.0) {
    row.mfu = context.flops_per_token * row.tokens_per_s /
              (context.peak_flops * static_cast<double>(row.world_size));
  }
  if (router_losses_) {
    row.aux_loss = values[4];
    row.z_loss = values[5];
  }
  row.eval_loss = eval_loss_;
  row.eval_ppl = eval_ppl_;
  row.extra = extra_;
  if (context.writer) context.writer->record(row);
  if (facts_.step == context.first_step && !context.memory_estimate.empty()) {
    log::info(c10::str("memory per GPU: measured peak ",
                       static_cast<double>(row.peak_mem_bytes) / (1 << 30),
                       " GiB after the first step; estimate ", context.memory_estimate));
  }
  for (const std::string& note : kernels::take_kernel_notes())
    log::info(note);  // e.g. tuned GEMM plans
  context.last_loss = row.loss;
  if (!std::isfinite(row.loss)) {
    throw std::runtime_error(c10::str("loss is ", row.loss, " at step ", facts_.step,
                                      ": training diverged; lower training.lr or check the data"));
  }
  return values[2] > 0.0;
}

MetricsInFlight::MetricsInFlight(MetricsContext context) : context_(std::move(context)) {}

bool MetricsInFlight::push(PendingMetrics step, bool read_now) {
  bool stop = in_flight_ && in_flight_->finish(context_);
  in_flight_ = std::move(step);
  if (read_now || !in_flight_->in_flight()) {
    stop = in_flight_->finish(context_) || stop;
    in_flight_.reset();
  }
  return stop;
}

void MetricsInFlight::drain() {
  if (in_flight_) in_flight_->finish(context_);
  in_flight_.reset();
}

}  // namespace liger::trainer
