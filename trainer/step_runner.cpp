#include "trainer/step_runner.h"

#include "kernels/document_length.h"
#include "kernels/sum_of_squares.h"
#include "models/router_losses.h"
#include "models/transformer.h"
#include "trainer/distributed/communicator.h"
#include "trainer/distributed/fully_sharded.h"
#include "trainer/logging/log.h"
#include "trainer/loss.h"
#include "trainer/optimizer.h"
#include "trainer/step_graph.h"

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include <algorithm>
#include <stdexcept>

namespace liger::trainer {
namespace {

// Eager steps before the capture: lazy initialisation (cuBLAS workspaces,
// cuDNN plans, autotuning) happens there, never inside the graph.
constexpr int64_t kEagerStepsBeforeCapture = 2;

// One int64 field of a batch on the device. To a GPU through pinned memory
// and without blocking: a copy from pageable memory would first wait for the
// stream (the previous step's optimizer), leaving the GPU idle while the host
// then enqueues the step's first small kernels. The pinned staging block is
// the caching host allocator's, reused once its copy has completed.
at::Tensor batch_to_device(std::vector<int64_t>& field, const std::vector<int64_t>& shape,
                           const c10::Device& device) {
  const at::Tensor host = torch::from_blob(field.data(), shape, at::kLong);
  if (!device.is_cuda()) return host.to(device);
  return host.pin_memory().to(device, /*non_blocking=*/true);
}

// The same field copied into a fixed device buffer (a CUDA graph's input),
// allocated on first use; every later batch must have its shape.
void batch_into(std::vector<int64_t>& field, const std::vector<int64_t>& shape,
                const c10::Device& device, at::Tensor& buffer) {
  if (!buffer.defined())
    buffer = torch::empty(shape, at::TensorOptions().dtype(at::kLong).device(device));
  if (buffer.sizes() != at::IntArrayRef(shape)) {
    throw std::runtime_error(c10::str(
        "training.cuda_graphs: a micro-batch of shape ", at::IntArrayRef(shape),
        " after the captured ", buffer.sizes(),
        "; the replayed step needs every batch in one shape (set training.cuda_graphs: false)"));
  }
  const at::Tensor host = torch::from_blob(field.data(), shape, at::kLong);
  buffer.copy_(host.pin_memory(), /*non_blocking=*/true);
}

// Puts a micro-batch's fields on the device: as fresh tensors, or with
// `fixed` (CUDA graphs) into `into`'s buffers, which keep their addresses.
void put_on_device(data::Batch& batch, const c10::Device& device, bool isolated, bool fixed,
                   DeviceBatch& into) {
  const auto shape = std::vector<int64_t>{batch.batch_size, batch.seq_len};
  auto put = [&](std::vector<int64_t>& field, at::Tensor& slot) {
    if (fixed) {
      batch_into(field, shape, device, slot);
    } else {
      slot = batch_to_device(field, shape, device);
    }
  };
  put(batch.input_ids, into.ids);
  put(batch.labels, into.labels);
  if (isolated) {  // positions restart at each document (RoPE sees them); attention stays inside
                   // each
    put(batch.position_ids, into.positions);
    put(batch.document_ids, into.documents);
    into.document_tokens = kernels::pair_weighted_document_length(batch.document_ids.data(),
                                                                  batch.batch_size, batch.seq_len);
  }
}

}  // namespace

GradNorm grad_norm_and_clip(const std::vector<at::Tensor>& grads, double max_norm,
                            distributed::Communicator& comm, bool sharded) {
  if (grads.empty()) return {torch::zeros({}, at::kFloat), at::Tensor()};
  // One pass over all gradients (kernels/sum_of_squares.h), fp32.
  at::Tensor total = kernels::sum_of_squares(grads);
  if (sharded) comm.all_reduce(total);
  total = total.sqrt();
  at::Tensor coef;
  if (max_norm > 0.0) coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
  return {total, coef};
}

double AccumulatedBatch::normalizer() const {
  return static_cast<double>(std::max<int64_t>(target_tokens, 1));
}

StepRunner::StepRunner(models::TransformerImpl& model, AdamW& optimizer,
                       distributed::Communicator& comm, distributed::FullyShardedModel* sharded,
                       const StepOptions& options)
    : model_(model), optimizer_(optimizer), comm_(comm), sharded_(sharded), options_(options) {
  if (!options_.cuda_graphs) return;
  // CUDA graphs: the whole run on a side stream (a capture cannot use the
  // default stream, and the eager steps before it must warm up the same
  // stream's cuBLAS workspace), fixed batch buffers and 1 / count.
  // The side stream starts after everything queued so far (the optimizer's
  // zero-filled state, the loaded weights): streams from the pool do not
  // wait for the default stream by themselves.
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, options_.device.index());
  at::cuda::CUDAEvent queued;
  queued.record(c10::cuda::getCurrentCUDAStream(options_.device.index()));
  queued.block(side);
  graph_stream_ = std::make_unique<c10::cuda::CUDAStreamGuard>(side);
  fixed_inverse_count_ =
      torch::zeros({}, at::TensorOptions().dtype(at::kFloat).device(options_.device));
}

StepRunner::~StepRunner() = default;

StepOutputs StepRunner::run(AccumulatedBatch& batch, double lr, int64_t step) {
  const double normalizer = batch.normalizer();
  const at::Tensor inverse = inverse_count(batch.target_tokens, normalizer);
  std::vector<DeviceBatch> fresh_inputs;
  std::vector<DeviceBatch>& inputs = options_.cuda_graphs ? fixed_inputs_ : fresh_inputs;
  inputs.resize(batch.micro_batches.size());
  for (size_t k = 0; k < batch.micro_batches.size(); ++k) {
    put_on_device(batch.micro_batches[k], options_.device, options_.isolated_documents,
                  options_.cuda_graphs, inputs[k]);
  }
  if (options_.cuda_graphs) return graph_step(inverse, normalizer, lr, step);
  const StepOutputs outputs = device_step(inputs, normalizer, inverse, lr);
  optimizer_.zero_grad();
  if (sharded_) sharded_->release_gradients();
  return outputs;
}

void StepRunner::join_streams() {
  if (!graph_stream_) return;
  at::cuda::CUDAEvent trained;
  trained.record(graph_stream_->current_stream());
  trained.block(graph_stream_->original_stream());
}

// The loss reads 1 / count as an fp32 device scalar. Sharded: the count of
// the global batch, all-reduced on the device (no host round trip: the next
// step's first gathers can overlap this one's tail); 1 / max(count, 1) in
// double, then fp32, as the host computes it.
at::Tensor StepRunner::inverse_count(int64_t target_tokens, double normalizer) {
  if (comm_.world_size() > 1) {
    at::Tensor counts = torch::full({1}, target_tokens,
                                    at::TensorOptions().dtype(at::kLong).device(options_.device));
    comm_.all_reduce(counts);
    return counts.to(at::kDouble).clamp_min(1.0).reciprocal().to(at::kFloat).squeeze(0);
  }
  if (options_.cuda_graphs) {                      // the graph reads the fixed scalar
    fixed_inverse_count_.fill_(1.0 / normalizer);  // cast: to the fp32 scalar, as the fill below
    return fixed_inverse_count_;
  }
  return torch::full({}, 1.0 / normalizer,
                     at::TensorOptions().dtype(at::kFloat).device(options_.device));
}

models::ExpertCounts StepRunner::summed_over_ranks(models::ExpertCounts counts) {
  if (comm_.world_size() > 1) {
    comm_.all_reduce(counts.chosen);
    counts.rows *= comm_.world_size();  // every rank's micro-batches have the same shape
  }
  return counts;
}

models::ExpertCounts StepRunner::count_batch_experts(const std::vector<DeviceBatch>& inputs) {
  torch::NoGradGuard no_grad;
  models::ExpertCounts total;
  for (const DeviceBatch& micro_batch : inputs) {
    // The routing is a function of the inputs and the weights: this forward
    // picks the experts the training forward will (LoRA dropout aside).
    model_.forward(micro_batch.ids, micro_batch.positions, micro_batch.documents,
                   micro_batch.document_tokens);
    const models::ExpertCounts counts =
        models::expert_counts(model_.take_router_outputs(), options_.num_experts);
    total.chosen = total.chosen.defined() ? total.chosen + counts.chosen : counts.chosen;
    total.rows += counts.rows;
  }
  return summed_over_ranks(std::move(total));
}

// `normalizer` is this rank's count (the global one on one process), kept in
// the loss options for a loss path that would not read `inverse_count`.
StepOutputs StepRunner::device_step(const std::vector<DeviceBatch>& inputs, double normalizer,
                                    const at::Tensor& inverse_count, double lr) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(options_.device);
  at::Tensor loss_total = torch::zeros({}, f32);
  // Router losses: each micro-batch's (HF's form over its router rows)
  // weighted by its share of the accumulated batch's rows (all micro-batches,
  // all ranks), so that their sum over the batch is its row-weighted mean,
  // like the token loss's 1 / N.
  // The load-balancing loss multiplies two means over the batch (f_e, P_e):
  // exact accumulation needs the whole batch's expert counts before the first
  // backward. With several micro-batches a forward without autograd counts
  // them first (a forward's worth of extra work, only with the loss in the
  // objective); with one, its own forward's counts; over ranks, their sum.
  at::Tensor router_total;
  int64_t batch_rows = 0;
  const bool exact_balance = options_.router_losses && options_.aux_loss_weight > 0.0;
  models::ExpertCounts batch_counts;
  if (options_.router_losses) {
    router_total = torch::zeros({2}, f32);
    for (const DeviceBatch& micro_batch : inputs) batch_rows += micro_batch.ids.numel();
    batch_rows *= comm_.world_size();
    if (exact_balance && inputs.size() > 1) batch_counts = count_batch_experts(inputs);
  }
  for (const DeviceBatch& micro_batch : inputs) {
    at::Tensor hidden = model_.forward(micro_batch.ids, micro_batch.positions,
                                       micro_batch.documents, micro_batch.document_tokens);
    at::Tensor loss = token_loss(model_, hidden, micro_batch.labels, normalizer,
                                 options_.flce_chunk_mb, options_.flce_mode, inverse_count);
    at::Tensor objective = loss;
    if (options_.router_losses) {
      const std::vector<models::RouterOutput> routers = model_.take_router_outputs();
      const double share =
          static_cast<double>(micro_batch.ids.numel()) / static_cast<double>(batch_rows);
      at::Tensor aux;
      if (exact_balance) {
        if (inputs.size() == 1) {
          batch_counts = summed_over_ranks(models::expert_counts(routers, options_.num_experts));
        }
        aux = models::load_balancing_loss_part(routers, options_.num_experts, batch_counts);
      } else {  // reported only: each micro-batch's own, weighted by its share
        aux = models::load_balancing_loss(routers, options_.num_experts) * share;
      }
      const at::Tensor z = models::router_z_loss(routers) * share;
      if (options_.aux_loss_weight > 0.0) objective = objective + options_.aux_loss_weight * aux;
      if (options_.z_loss_weight > 0.0) objective = objective + options_.z_loss_weight * z;
      router_total += torch::stack({aux.detach(), z.detach()});
    }
    objective.backward();
    if (sharded_) sharded_->finish_backward();
    if (options_.fold_copy_gradients)
      optimizer_.fold_copy_gradients();  // fp32 sums across micro-batches
    loss_total += loss.detach();
  }
  const GradNorm clipping =
      grad_norm_and_clip(optimizer_.gradients(), options_.grad_clip, comm_, sharded_ != nullptr);
  if (options_.cuda_graphs) {
    optimizer_.apply_step(clipping.clip_coef);  // prepare_step ran before, outside any capture
  } else {
    optimizer_.step(lr, clipping.clip_coef);
  }
  return {loss_total, clipping.norm, router_total};
}

// The batch is in the fixed buffers the graph reads, 1 / count in its scalar;
// the AdamW values go to device memory now. Then the step runs eagerly (the
// first steps), is captured (once) or replayed.
StepOutputs StepRunner::graph_step(const at::Tensor& inverse_count, double normalizer, double lr,
                                   int64_t step) {
  optimizer_.prepare_step(lr);
  if (!graph_ && step - options_.start_step <= kEagerStepsBeforeCapture) {
    const StepOutputs outputs = device_step(fixed_inputs_, normalizer, inverse_count, lr);
    optimizer_
        .zero_grad();  // the capture must see no gradients: its backward allocates them in its pool
    return outputs;
  }
  if (!graph_) {
    graph_ = std::make_unique<StepGraph>(
        [&] {
          const StepOutputs captured =
              device_step(fixed_inputs_, normalizer, fixed_inverse_count_, lr);
          std::vector<at::Tensor> outputs = {captured.loss_total, captured.grad_norm};
          if (captured.router_losses.defined()) outputs.push_back(captured.router_losses);
          return outputs;
        },
        step);
    log::info(c10::str("cuda graphs: step ", step, " captured (",
                       graph_->pool_bytes() / double(1 << 30),
                       " GiB in the graph's memory pool); every later step replays it"));
  }
  graph_->replay();
  const std::vector<at::Tensor>& outputs = graph_->outputs();
  return {outputs[0], outputs[1], outputs.size() > 2 ? outputs[2] : at::Tensor()};
}

}  // namespace liger::trainer
