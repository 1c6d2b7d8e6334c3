// FSDP-style sharding (ZeRO-3, as PyTorch's FSDP2 `fully_shard`).
//
// Units: each decoder layer, the embeddings, and the final norm with lm_head
// (with tied embeddings: one root unit of embeddings and final norm). Every parameter lives sharded
// on dim 0: rank r keeps rows [r * rows_per_rank, (r + 1) * rows_per_rank), zero-padded past the
// last row, in the parameter dtype (fp32 master by default); the optimizer and the checkpoints see
// only these shards.
//
// Forward: before a unit runs, its shards are all-gathered in the compute
// dtype (bf16) and the model's weights point at the full tensors; the next
// layer's all-gather is already in flight while this one computes. After the
// layer (reshard_after_forward) the full tensors' memory is released.
// Backward: a hook on the layer's output gathers its weights again (and starts
// the previous layer's gather); when autograd reaches the gather, the full
// gradients are reduce-scattered (sum, in reduce_dtype) into the shards'
// gradients — asynchronously, landing while the next layer's backward runs.
//
// The loss must be normalised by the token count of all ranks: then the summed
// shard gradients are exactly those of one process over the global batch.
//
// LoRA (the model's adapters, models/lora.h): each layer's adapters join its
// unit. The frozen base is sharded and gathered as before (its shards in
// frozen_dtype, no gradient); only trainable parameters (adapters, saved
// modules) get gradient buffers and reduce-scatters, and only they are the
// optimizer's and the checkpoints' shards.
#pragma once

#include "models/transformer.h"
#include "trainer/distributed/communicator.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace liger::trainer::distributed {

struct ShardingOptions {
  at::ScalarType param_dtype = at::kFloat;  // trainable shards, their gradients, optimizer state
  at::ScalarType frozen_dtype =
      at::kFloat;  // shards of parameters that do not require grad (LoRA's base)
  at::ScalarType compute_dtype = at::kFloat;  // gathered weights
  at::ScalarType reduce_dtype = at::kFloat;   // gradients across ranks
  bool reshard_after_forward = true;
  bool activation_checkpointing = false;  // recompute each layer in backward
  c10::Device device{c10::kCPU};
};

// One parameter's piece on this rank.
struct ShardedParameter {
  std::string name;  // as in model.named_parameters() (HF names), then the adapters'
  // The model's tensor that points at the gathered value while its unit runs
  // (a WeightImpl's weight or bias).
  at::Tensor* slot = nullptr;
  bool trainable = true;  // requires grad (else frozen: no gradient, not the optimizer's)
  bool adapter = false;   // a LoRA adapter's (init from its own stream)
  std::vector<int64_t> full_shape;
  int64_t rows_per_rank = 0;  // ceil(full_shape[0] / world)
  at::Tensor shard;           // [rows_per_rank, full_shape[1:]...], a leaf with .grad
  // Rows of the full parameter this rank holds (the rest of the shard is padding).
  int64_t first_row(int64_t rank) const { return rank * rows_per_rank; }
  int64_t valid_rows(int64_t rank) const;
};

class FullyShardedModel : public models::LayerHooks {
 public:
  // `model` is built on the meta device (it allocates nothing); its weights are
  // pointed at gathered tensors while units run. Installs itself as the
  // model's layer hooks. Shards start uninitialised: call init_weights or
  // load_full_parameters.
  FullyShardedModel(models::TransformerImpl& model, std::shared_ptr<Communicator> communicator,
                    ShardingOptions options);
  ~FullyShardedModel() override;

  // The same values as models::TransformerImpl::init_weights(seed) on one
  // process (and, for the adapters, LoraAdaptersImpl::init_weights(
  // lora_init_seed(seed))), drawn one parameter at a time on the CPU.
  void init_weights(uint64_t seed);
  // The adapters' shards only, as init_weights draws them.
  void init_adapters(uint64_t seed);
  // Each shard from the full value `full(name)` (any device and dtype); a
  // parameter for which it returns an undefined tensor is left as it is.
  void load_full_parameters(const std::function<at::Tensor(const std::string&)>& full);

  // The trainable shards, in model.named_parameters() order, then the
  // adapters' (optimizer, checkpoints).
  std::vector<std::pair<std::string, at::Tensor>> named_shards() const;
  const std::vector<ShardedParameter>& parameters() const { return params_; }
  // What a checkpoint records to put shards back together: world size and,
  // per trainable parameter, its full shape and rows per rank.
  nlohmann::json shard_index() const;
  // After each backward(): lands the last reduce-scatter in the shards' .grad
  // and releases units that had nothing to reduce (a frozen head).
  void finish_backward();
  // After the optimizer step (the shards' .grad already cleared): frees the
  // flat gradient buffers, so the next forward runs without a step's worth
  // of fp32 gradients alive; backward allocates them again unit by unit.
  void release_gradients();

  // models::LayerHooks
  void before_forward() override;
  void after_embedding() override;
  void before_head() override;
  at::Tensor run_layer(int64_t index, const at::Tensor& x, const LayerFn& layer) override;

  // Called by the gather's autograd node (not for users).
  struct Unit;
  void post_backward(Unit& unit, const std::vector<at::Tensor>& full_grads);
  std::vector<at::Tensor> unpack_gathered(Unit& unit);

 private:
  void issue_gather(Unit& unit);
  void materialize_for_forward(Unit& unit);
  void materialize_for_backward(Unit& unit);
  void release(Unit& unit);
  void pre_backward(int64_t layer);
  void land_reduce_scatter();

  models::TransformerImpl& model_;
  std::shared_ptr<Communicator> comm_;
  ShardingOptions options_;
  std::vector<ShardedParameter> params_;
  // [0] = embeddings (or the tied root), [1 + i] = layer i, then the head (untied)
  std::vector<std::unique_ptr<Unit>> units_;
  bool tied_ = false;
  struct PendingReduce;
  std::unique_ptr<PendingReduce> pending_reduce_;
};

}  // namespace liger::trainer::distributed
