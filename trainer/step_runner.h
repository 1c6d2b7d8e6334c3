// The device half of one optimizer step: the accumulated batch goes to the
// device, then forward and backward of every micro-batch, clipping and the
// AdamW update. With training.cuda_graphs the step runs eagerly for the first
// kEagerStepsBeforeCapture steps of a run, is then captured once as a CUDA
// graph (trainer/step_graph.h) and replayed for every later step; this class
// owns what that needs: the side stream the whole run uses, the fixed batch
// buffers and the fixed 1 / count scalar the graph reads, and the graph.
// Nothing here waits for the device: the step's loss and gradient norm come
// back as device tensors.
#pragma once

#include "data/loader.h"
#include "kernels/ops.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace c10::cuda {
struct CUDAStreamGuard;
}
namespace liger::models {
class TransformerImpl;
struct ExpertCounts;
}  // namespace liger::models
namespace liger::trainer::distributed {
class Communicator;
class FullyShardedModel;
}  // namespace liger::trainer::distributed

namespace liger::trainer {

class AdamW;
class StepGraph;

// One optimizer step's micro-batches (training.gradient_accumulation_steps of
// them) and what they count, drawn before any of them runs.
struct AccumulatedBatch {
  std::vector<data::Batch> micro_batches;
  int64_t target_tokens = 0;  // this rank's, over all micro-batches
  int64_t input_tokens = 0;   // this rank's

  // Every micro-batch's summed loss is divided by the target count of the
  // whole accumulated batch (exact accumulation): max(count, 1), this rank's.
  double normalizer() const;
};

// Global L2 norm of all gradients (fp32) and the clipping coefficient
// min(1, max_norm / (norm + 1e-6)) (undefined when max_norm <= 0), which the
// optimizer applies inside its update instead of a pass over the gradients.
// Sharded: each rank holds a disjoint part of the gradients, so the squared
// norms are summed over ranks first. No host synchronisation: both stay
// device tensors.
struct GradNorm {
  at::Tensor norm;
  at::Tensor clip_coef;
};
GradNorm grad_norm_and_clip(const std::vector<at::Tensor>& grads, double max_norm,
                            distributed::Communicator& comm, bool sharded);

// What a step does besides the model's own work.
struct StepOptions {
  c10::Device device{c10::kCPU};
  bool cuda_graphs = false;  // training.cuda_graphs
  bool isolated_documents =
      false;               // data.packing = isolated: positions and document ids go to the model
  double grad_clip = 0.0;  // training.grad_clip (<= 0: no clipping)
  double flce_chunk_mb = 0.0;  // kernels.flce_chunk_mb
  kernels::FlceMode flce_mode = kernels::FlceMode::speed;
  // Compute copies over several micro-batches: their gradients sum in fp32
  // (without copies, fold_copy_gradients has nothing to do).
  bool fold_copy_gradients = false;
  int64_t start_step = 0;  // the step this run starts from (resume): the eager steps count from it
  // MoE models: the router losses are computed and reported; they join the
  // training loss with these weights (0: reported only). The aux weight is
  // model router_aux_loss_coef with output_router_logits on, else 0.
  bool router_losses = false;
  int64_t num_experts = 0;
  double aux_loss_weight = 0.0;
  double z_loss_weight = 0.0;
};

// The step's results, device tensors (fp32 scalars), not yet read by the host.
struct StepOutputs {
  at::Tensor loss_total;  // this rank's micro-batch losses summed
  at::Tensor grad_norm;   // the global norm of all gradients, before clipping
  // With router losses: [2] fp32, this rank's share of the accumulated
  // batch's load-balancing loss and router z-loss; undefined otherwise.
  at::Tensor router_losses;
};

// One micro-batch on the device (positions/documents: isolated packing only;
// document_tokens: the documents' pair-weighted mean length, which picks the
// attention kernels; a CUDA graph replays the choice of the step it captured).
struct DeviceBatch {
  at::Tensor ids, labels, positions, documents;
  int64_t document_tokens = 0;
};

class StepRunner {
 public:
  // With cuda_graphs, the current stream becomes a side stream from here to
  // the destructor (see join_streams()).
  StepRunner(models::TransformerImpl& model, AdamW& optimizer, distributed::Communicator& comm,
             distributed::FullyShardedModel* sharded, const StepOptions& options);
  ~StepRunner();
  StepRunner(const StepRunner&) = delete;
  StepRunner& operator=(const StepRunner&) = delete;

  // Runs optimizer step `step` with learning rate `lr` on `batch`. Throws
  // (cuda_graphs) when a micro-batch's shape differs from the captured one or
  // when the capture fails.
  StepOutputs run(AccumulatedBatch& batch, double lr, int64_t step);

  // After the last step (cuda_graphs): the original stream waits for
  // everything queued on the side stream so far, so that what runs on it
  // after the run sees the trained state. Without cuda_graphs: nothing.
  void join_streams();

 private:
  // 1 / count of the global accumulated batch as an fp32 device scalar.
  at::Tensor inverse_count(int64_t target_tokens, double normalizer);
  // Forward and backward of every micro-batch, clipping, the AdamW update.
  StepOutputs device_step(const std::vector<DeviceBatch>& inputs, double normalizer,
                          const at::Tensor& inverse_count, double lr);
  // The expert counts of the whole accumulated batch (every micro-batch, every
  // rank) from forwards without autograd; and `counts` summed over the ranks.
  models::ExpertCounts count_batch_experts(const std::vector<DeviceBatch>& inputs);
  models::ExpertCounts summed_over_ranks(models::ExpertCounts counts);
  // cuda_graphs: an eager step (the first ones), the capture (once) or a replay.
  StepOutputs graph_step(const at::Tensor& inverse_count, double normalizer, double lr,
                         int64_t step);

  models::TransformerImpl& model_;
  AdamW& optimizer_;
  distributed::Communicator& comm_;
  distributed::FullyShardedModel* sharded_;  // null: the model is whole here
  StepOptions options_;
  // cuda_graphs only: the run's side stream, the graph's inputs (their
  // addresses stay fixed), and the graph once captured.
  std::unique_ptr<c10::cuda::CUDAStreamGuard> graph_stream_;
  std::vector<DeviceBatch> fixed_inputs_;
  at::Tensor fixed_inverse_count_;
  std::unique_ptr<StepGraph> graph_;
};

}  // namespace liger::trainer
