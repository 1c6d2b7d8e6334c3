#include "trainer/distributed/fully_sharded.h"

#include "models/lora.h"
#include "trainer/activation_checkpoint.h"

#include <torch/torch.h>

#include <stdexcept>
#include <unordered_map>

namespace liger::trainer::distributed {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct FullyShardedModel::Unit {
  std::string name;
  std::vector<size_t> params;    // indices into params_
  std::vector<int64_t> offsets;  // each parameter's offset in this rank's flat shard
  int64_t flat_numel = 0;        // sum of the shards' numel
  // Gradients: only the trainable parameters (in unit order) have a place.
  std::vector<int64_t> grad_offsets;  // per parameter: its offset in flat_grad, -1 when frozen
  int64_t grad_numel = 0;
  bool reshard_after_forward = true;
  std::vector<Tensor> gathered;  // full weights (compute dtype); storage empty when released
  bool materialized = false;     // gathered tensors hold data
  Tensor flat_grad;  // [grad_numel] param dtype: the trainable shards' .grad are views of it
  PendingCollective gather_work;  // an all-gather in flight into gather_recv
  Tensor gather_send, gather_recv;
};

struct FullyShardedModel::PendingReduce {
  Unit* unit = nullptr;
  PendingCollective work;
  Tensor input, output;      // kept alive until the collective is done
  bool add_to_grad = false;  // output is a temporary to add into unit->flat_grad
  int64_t begin = 0;         // where output starts in unit->flat_grad
};

namespace {
// A unit holding more than twice this many elements per rank (the
// embeddings, lm_head) is reduce-scattered in chunks of it: 64 Mi elements per
// rank, i.e. 512 MiB of fp32 staging with 2 ranks. Decoder layers go whole.
constexpr int64_t kChunkElementsPerRank = int64_t{64} << 20;
}  // namespace

namespace {

// The gather as an autograd node: shards in, full weights out. Its backward
// hands the full weights' gradients to the sharding, which reduce-scatters
// them and writes the shards' .grad itself (asynchronously), so it returns no
// gradient through autograd.
struct GatherFunction : public torch::autograd::Function<GatherFunction> {
  // shards must come as a TensorList: autograd sees its elements as inputs
  // (a std::vector would pass as an opaque argument).
  static variable_list forward(AutogradContext* ctx, at::TensorList shards,
                               FullyShardedModel* owner, FullyShardedModel::Unit* unit) {
    ctx->saved_data["owner"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(owner));
    ctx->saved_data["unit"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(unit));
    // backward returns one (undefined) gradient per forward argument
    ctx->saved_data["inputs"] = static_cast<int64_t>(shards.size() + 2);
    return owner->unpack_gathered(*unit);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* owner = reinterpret_cast<FullyShardedModel*>(
        static_cast<intptr_t>(ctx->saved_data["owner"].toInt()));
    auto* unit = reinterpret_cast<FullyShardedModel::Unit*>(
        static_cast<intptr_t>(ctx->saved_data["unit"].toInt()));
    owner->post_backward(*unit, grads);
    return variable_list(static_cast<size_t>(ctx->saved_data["inputs"].toInt()));
  }
};

// Shape of a shard: [rows_per_rank, full_shape[1:]...].
std::vector<int64_t> shard_shape(const ShardedParameter& p) {
  std::vector<int64_t> shape = p.full_shape;
  shape[0] = p.rows_per_rank;
  return shape;
}

// [world, rows_per_rank, full_shape[1:]...]: the rank-major layout of a
// gathered (or to-be-scattered) parameter.
std::vector<int64_t> ranked_shape(const ShardedParameter& p, int64_t world) {
  std::vector<int64_t> shape = shard_shape(p);
  shape.insert(shape.begin(), world);
  return shape;
}

// Releases a tensor's memory while keeping the tensor (and every autograd
// record of it) valid; refill() gives it data again. Autograd's saved copies
// share the storage, so they see the new data, and no version bump happens.
void release_storage(const Tensor& t) {
  c10::StorageImpl* storage = t.storage().unsafeGetStorageImpl();
  storage->set_data_ptr_noswap(c10::DataPtr(nullptr, t.device()));
  storage->set_nbytes(0);
}

void refill_storage(const Tensor& t, const Tensor& values) {
  // values: a fresh contiguous tensor of t's shape and dtype, sole owner of
  // its storage; its memory moves into t's storage.
  c10::StorageImpl* target = t.storage().unsafeGetStorageImpl();
  c10::StorageImpl* source = values.storage().unsafeGetStorageImpl();
  const size_t nbytes = source->nbytes();
  target->set_data_ptr_noswap(source->set_data_ptr(c10::DataPtr(nullptr, values.device())));
  target->set_nbytes(nbytes);
  source->set_nbytes(0);
}

}  // namespace

int64_t ShardedParameter::valid_rows(int64_t rank) const {
  const int64_t begin = first_row(rank);
  return std::max<int64_t>(0, std::min(full_shape[0], begin + rows_per_rank) - begin);
}

FullyShardedModel::FullyShardedModel(models::TransformerImpl& model,
                                     std::shared_ptr<Communicator> communicator,
                                     ShardingOptions options)
    : model_(model), comm_(std::move(communicator)), options_(options) {
  const int64_t world = comm_->world_size();
  // Every WeightImpl's parameters by name (the base model's, then the
  // adapters'): its weight, and its bias where it has one.
  std::unordered_map<const models::WeightImpl*, std::vector<std::string>> names;
  std::unordered_map<std::string, at::Tensor*> slot_of;
  auto collect_modules = [&](torch::nn::Module& root) {
    for (const auto& item : root.named_modules()) {
      if (auto* weight = dynamic_cast<models::WeightImpl*>(item.value().get())) {
        names[weight].push_back(item.key() + ".weight");
        slot_of[item.key() + ".weight"] = &weight->weight;
        if (weight->bias.defined()) {
          names[weight].push_back(item.key() + ".bias");
          slot_of[item.key() + ".bias"] = &weight->bias;
        }
      }
    }
  };
  collect_modules(model_);
  if (model_.lora() != nullptr) collect_modules(*model_.lora());
  // Parameters in named_parameters() order (the order of a single-process
  // init), each with its module; then the adapters'.
  std::unordered_map<std::string, size_t> index_of;
  auto add_parameter = [&](const std::string& name, const Tensor& value, bool adapter) {
    ShardedParameter p;
    p.name = name;
    p.slot = slot_of.at(p.name);
    p.trainable = value.requires_grad();
    p.adapter = adapter;
    p.full_shape = value.sizes().vec();
    p.rows_per_rank = (p.full_shape[0] + world - 1) / world;
    const at::ScalarType dtype = p.trainable ? options_.param_dtype : options_.frozen_dtype;
    p.shard = at::zeros(shard_shape(p), at::TensorOptions().dtype(dtype).device(options_.device))
                  .set_requires_grad(p.trainable);
    index_of[p.name] = params_.size();
    params_.push_back(std::move(p));
  };
  for (const auto& item : model_.named_parameters()) add_parameter(item.key(), item.value(), false);
  if (model_.lora() != nullptr) {
    for (const auto& item : model_.lora()->named_parameters())
      add_parameter(item.key(), item.value(), true);
  }

  auto add_unit = [&](std::string name, const std::vector<const models::WeightImpl*>& weights,
                      bool reshard) {
    auto unit = std::make_unique<Unit>();
    unit->name = std::move(name);
    unit->reshard_after_forward = reshard;
    for (const auto* weight : weights) {
      for (const std::string& name : names.at(weight)) {
        const size_t i = index_of.at(name);
        unit->params.push_back(i);
        unit->offsets.push_back(unit->flat_numel);
        unit->flat_numel += params_[i].shard.numel();
        unit->grad_offsets.push_back(params_[i].trainable ? unit->grad_numel : -1);
        if (params_[i].trainable) unit->grad_numel += params_[i].shard.numel();
      }
    }
    units_.push_back(std::move(unit));
  };
  // units_[0]: the embeddings. Untied, they are released right after the
  // lookup (the embedding's backward needs only the ids, not the weight).
  // Tied, they are lm_head too: one root unit with the final norm, gathered
  // from the start of the forward to the end of the backward.
  tied_ = !model_.lm_head;
  if (tied_) {
    add_unit("root", {model_.model->embed_tokens.get(), model_.model->norm.get()}, false);
  } else {
    add_unit("embed", {model_.model->embed_tokens.get()}, true);
  }
  int64_t layer_index = 0;
  for (const auto& layer : *model_.model->layers) {
    std::vector<const models::WeightImpl*> weights;
    for (const auto& item : layer->named_modules()) {
      if (const auto* weight = dynamic_cast<const models::WeightImpl*>(item.value().get()))
        weights.push_back(weight);
    }
    if (model_.lora() != nullptr) {  // the layer's adapters are gathered with it
      for (int t = 0; t < models::kNumLoraTargets; ++t) {
        if (const models::LoraPair* pair =
                model_.lora()->find(layer_index, static_cast<models::LoraTarget>(t))) {
          weights.push_back(pair->a);
          weights.push_back(pair->b);
        }
      }
    }
    add_unit("layer " + std::to_string(layer_index++), weights, options_.reshard_after_forward);
  }
  // Untied: the final norm and lm_head, gathered when the last layer runs.
  if (!tied_) add_unit("head", {model_.model->norm.get(), model_.lm_head.get()}, false);
  size_t covered = 0;
  for (const auto& unit : units_) covered += unit->params.size();
  if (covered != params_.size()) {
    throw std::logic_error("fully sharded model: units cover " + std::to_string(covered) + " of " +
                           std::to_string(params_.size()) + " parameters");
  }
}

FullyShardedModel::~FullyShardedModel() = default;

void FullyShardedModel::init_weights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto meta = model_.named_parameters();
  for (auto& p : params_) {
    if (p.adapter) continue;  // their own stream, below
    // The full value, drawn exactly as one process draws it, then this rank's rows.
    const Tensor full = model_.initial_value(p.name, meta[p.name], generator);
    const int64_t rows = p.valid_rows(comm_->rank());
    if (rows > 0)
      p.shard.narrow(0, 0, rows).copy_(full.narrow(0, p.first_row(comm_->rank()), rows));
  }
  init_adapters(models::lora_init_seed(seed));
}

void FullyShardedModel::init_adapters(uint64_t seed) {
  if (model_.lora() == nullptr) return;
  torch::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto meta = model_.lora()->named_parameters();
  for (auto& p : params_) {
    if (!p.adapter) continue;
    const Tensor full = model_.lora()->initial_value(p.name, meta[p.name], generator);
    const int64_t rows = p.valid_rows(comm_->rank());
    if (rows > 0)
      p.shard.narrow(0, 0, rows).copy_(full.narrow(0, p.first_row(comm_->rank()), rows));
  }
}

void FullyShardedModel::load_full_parameters(
    const std::function<Tensor(const std::string&)>& full) {
  torch::NoGradGuard no_grad;
  for (auto& p : params_) {
    const Tensor value = full(p.name);
    if (!value.defined()) continue;
    if (value.sizes().vec() != p.full_shape) {
      throw std::runtime_error("parameter " + p.name + " has shape " + c10::str(value.sizes()) +
                               " but the model expects " + c10::str(at::IntArrayRef(p.full_shape)));
    }
    const int64_t rows = p.valid_rows(comm_->rank());
    if (rows > 0)
      p.shard.narrow(0, 0, rows).copy_(value.narrow(0, p.first_row(comm_->rank()), rows));
  }
}

std::vector<std::pair<std::string, Tensor>> FullyShardedModel::named_shards() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& p : params_) {
    if (p.trainable) out.emplace_back(p.name, p.shard);
  }
  return out;
}

nlohmann::json FullyShardedModel::shard_index() const {
  nlohmann::json params = nlohmann::json::object();
  for (const auto& p : params_) {
    if (p.trainable) params[p.name] = {{"shape", p.full_shape}, {"rows_per_rank", p.rows_per_rank}};
  }
  return {{"world_size", comm_->world_size()}, {"sharded_dim", 0}, {"parameters", params}};
}

// ---------------------------------------------------------------- gathering

void FullyShardedModel::issue_gather(Unit& unit) {
  if (unit.materialized || unit.gather_work.pending()) return;
  torch::NoGradGuard no_grad;
  // Send buffer: this rank's shards, flattened and cast to the compute dtype
  // in one copy each (the only cast of the weights: fp32 master -> bf16 here).
  unit.gather_send = at::empty(
      {unit.flat_numel}, at::TensorOptions().dtype(options_.compute_dtype).device(options_.device));
  for (size_t k = 0; k < unit.params.size(); ++k) {
    const Tensor& shard = params_[unit.params[k]].shard;
    unit.gather_send.narrow(0, unit.offsets[k], shard.numel()).copy_(shard.detach().reshape({-1}));
  }
  unit.gather_recv =
      at::empty({comm_->world_size() * unit.flat_numel},
                at::TensorOptions().dtype(options_.compute_dtype).device(options_.device));
  unit.gather_work = comm_->all_gather(unit.gather_recv, unit.gather_send);
}

std::vector<Tensor> FullyShardedModel::unpack_gathered(Unit& unit) {
  issue_gather(unit);
  unit.gather_work.wait();
  const int64_t world = comm_->world_size();
  const Tensor ranked = unit.gather_recv.view({world, unit.flat_numel});
  std::vector<Tensor> full;
  for (size_t k = 0; k < unit.params.size(); ++k) {
    const ShardedParameter& p = params_[unit.params[k]];
    std::vector<int64_t> padded = p.full_shape;
    padded[0] = world * p.rows_per_rank;
    // [world, numel] columns of this parameter -> [world, rows, ...] (a view)
    // -> [world * rows, ...] (a copy: the rank blocks are not adjacent).
    Tensor value = ranked.narrow(1, unit.offsets[k], p.shard.numel())
                       .view(ranked_shape(p, world))
                       .reshape(padded);
    if (padded[0] != p.full_shape[0]) value = value.narrow(0, 0, p.full_shape[0]).clone();
    if (value.is_alias_of(unit.gather_recv)) value = value.clone();
    full.push_back(value);
  }
  unit.gather_send = Tensor();
  unit.gather_recv = Tensor();
  return full;
}

void FullyShardedModel::materialize_for_forward(Unit& unit) {
  std::vector<Tensor> full;
  if (at::GradMode::is_enabled()) {
    std::vector<Tensor> shards;
    for (size_t i : unit.params) shards.push_back(params_[i].shard);
    full = GatherFunction::apply(at::TensorList(shards), this, &unit);
    // Frozen weights (LoRA's base) leave the graph: no weight gradient is
    // computed for them (the same storage, so release and refill still apply).
    for (size_t k = 0; k < unit.params.size(); ++k) {
      if (!params_[unit.params[k]].trainable) full[k] = full[k].detach();
    }
  } else {
    full = unpack_gathered(unit);
  }
  for (size_t k = 0; k < unit.params.size(); ++k) *params_[unit.params[k]].slot = full[k];
  unit.gathered = std::move(full);
  unit.materialized = true;
}

void FullyShardedModel::materialize_for_backward(Unit& unit) {
  if (unit.materialized) return;
  at::NoGradGuard no_grad;
  const std::vector<Tensor> fresh = unpack_gathered(unit);
  for (size_t k = 0; k < fresh.size(); ++k) refill_storage(unit.gathered[k], fresh[k]);
  unit.materialized = true;
}

void FullyShardedModel::release(Unit& unit) {
  if (!unit.materialized) return;
  for (const Tensor& t : unit.gathered) release_storage(t);
  unit.materialized = false;
}

void FullyShardedModel::before_forward() {
  Unit& first = *units_[0];
  issue_gather(first);
  if (units_.size() > 1) issue_gather(*units_[1]);  // the first layer's, in flight meanwhile
  first.materialized = false;                       // a new forward: a new gather node
  materialize_for_forward(first);
}

void FullyShardedModel::after_embedding() {
  if (!tied_) release(*units_[0]);
}

void FullyShardedModel::before_head() {
  if (tied_) return;  // the root unit is still gathered
  Unit& head = *units_.back();
  head.materialized = false;
  materialize_for_forward(head);
}

Tensor FullyShardedModel::run_layer(int64_t index, const Tensor& x, const LayerFn& layer) {
  const size_t u = static_cast<size_t>(index) + 1;
  Unit& unit = *units_.at(u);
  unit.materialized = false;  // a new forward: a new gather node
  materialize_for_forward(unit);
  if (u + 1 < units_.size()) issue_gather(*units_[u + 1]);  // prefetch the next layer (or the head)
  Tensor y = options_.activation_checkpointing ? checkpointed_layer(layer, x) : layer(x);
  const bool training = y.requires_grad();
  if (unit.reshard_after_forward || !training) release(unit);
  if (training) {
    y.register_hook([this, index](const Tensor&) { pre_backward(index); });
  }
  return y;
}

// ------------------------------------------------------------------ backward

void FullyShardedModel::pre_backward(int64_t layer) {
  const size_t u = static_cast<size_t>(layer) + 1;
  materialize_for_backward(*units_[u]);
  if (u > 1 && !units_[u - 1]->materialized)
    issue_gather(*units_[u - 1]);  // prefetch the previous layer
}

void FullyShardedModel::release_gradients() {
  for (auto& unit : units_) {
    for (const size_t k : unit->params) {
      TORCH_CHECK(!params_[k].shard.grad().defined(),
                  "release_gradients: clear the shards' gradients first (optimizer zero_grad)");
    }
    unit->flat_grad = Tensor();
  }
}

void FullyShardedModel::post_backward(Unit& unit, const std::vector<Tensor>& full_grads) {
  at::NoGradGuard no_grad;
  const int64_t world = comm_->world_size();
  land_reduce_scatter();  // the previous unit's: it ran while this one's backward did
  // The shards' gradients are views of one flat buffer per unit, allocated on
  // a step's first micro-batch and freed after its optimizer step
  // (release_gradients); on the first micro-batch the reduce-scatter writes
  // straight into it (when the reduce and parameter dtypes agree).
  if (unit.grad_numel == 0) {  // nothing trains here
    release(unit);
    return;
  }
  if (!unit.flat_grad.defined()) {
    unit.flat_grad = at::empty(
        {unit.grad_numel}, at::TensorOptions().dtype(options_.param_dtype).device(options_.device));
  }
  size_t first_trainable = 0;
  while (!params_[unit.params[first_trainable]].trainable) ++first_trainable;
  const bool first = !params_[unit.params[first_trainable]].shard.grad().defined();
  if (first) {
    for (size_t k = 0; k < unit.params.size(); ++k) {
      ShardedParameter& p = params_[unit.params[k]];
      if (!p.trainable) continue;
      p.shard.mutable_grad() =
          unit.flat_grad.narrow(0, unit.grad_offsets[k], p.shard.numel()).view(shard_shape(p));
    }
  }
  const bool direct = first && options_.reduce_dtype == options_.param_dtype;

  // Each parameter's gradient, zero-padded to world * rows_per_rank rows and
  // seen as [world, rows_per_rank * ...]: row r goes to rank r.
  std::vector<Tensor> ranked(unit.params.size());
  for (size_t k = 0; k < unit.params.size(); ++k) {
    const Tensor& grad = full_grads[k];
    if (!grad.defined() || !params_[unit.params[k]].trainable)
      continue;  // unused (zeros) or frozen
    const ShardedParameter& p = params_[unit.params[k]];
    Tensor padded = grad;
    const int64_t pad = world * p.rows_per_rank - p.full_shape[0];
    if (pad > 0) {
      std::vector<int64_t> shape = p.full_shape;
      shape[0] = pad;
      padded = at::cat({grad, at::zeros(shape, grad.options())}, 0);
    }
    ranked[k] = padded.view({world, p.shard.numel()});
  }

  // The reduce-scatter input is staged in the reduce dtype (cast here: bf16
  // gradients are summed over ranks in fp32 by default). Big units (the
  // embeddings, lm_head) go in chunks, each waited for before the next is
  // staged, so the staging memory stays bounded; a layer goes in one piece,
  // left in flight while the next layer's backward runs.
  const int64_t chunk =
      unit.grad_numel > 2 * kChunkElementsPerRank ? kChunkElementsPerRank : unit.grad_numel;
  for (int64_t begin = 0; begin < unit.grad_numel; begin += chunk) {
    const int64_t end = std::min(unit.grad_numel, begin + chunk);
    // Zero-filled only where some parameter of the chunk has no gradient.
    bool covered = true;
    for (size_t k = 0; k < unit.params.size(); ++k) {
      if (unit.grad_offsets[k] < 0) continue;  // frozen: no place in the gradients
      const int64_t lo = std::max(begin, unit.grad_offsets[k]);
      const int64_t hi =
          std::min(end, unit.grad_offsets[k] + params_[unit.params[k]].shard.numel());
      if (lo < hi && !ranked[k].defined()) covered = false;
    }
    const auto staging_options =
        at::TensorOptions().dtype(options_.reduce_dtype).device(options_.device);
    Tensor input = covered ? at::empty({world, end - begin}, staging_options)
                           : at::zeros({world, end - begin}, staging_options);
    for (size_t k = 0; k < unit.params.size(); ++k) {
      if (!ranked[k].defined() || unit.grad_offsets[k] < 0) continue;
      const int64_t lo = std::max(begin, unit.grad_offsets[k]);
      const int64_t hi =
          std::min(end, unit.grad_offsets[k] + params_[unit.params[k]].shard.numel());
      if (lo >= hi) continue;
      input.narrow(1, lo - begin, hi - lo)
          .copy_(ranked[k].narrow(1, lo - unit.grad_offsets[k], hi - lo));
    }
    auto pending = std::make_unique<PendingReduce>();
    pending->unit = &unit;
    pending->input = input.view({-1});
    pending->add_to_grad = !direct;
    pending->output = direct ? unit.flat_grad.narrow(0, begin, end - begin)
                             : at::empty({end - begin}, input.options());
    pending->begin = begin;
    pending->work = comm_->reduce_scatter(pending->output, pending->input);
    pending_reduce_ = std::move(pending);
    if (end < unit.grad_numel) land_reduce_scatter();
  }
  release(unit);
}

void FullyShardedModel::land_reduce_scatter() {
  if (!pending_reduce_) return;
  at::NoGradGuard no_grad;
  PendingReduce& pending = *pending_reduce_;
  pending.work.wait();
  if (pending.add_to_grad) {
    // Accumulated in the parameter dtype (fp32 master: no rounding across micro-batches).
    pending.unit->flat_grad.narrow(0, pending.begin, pending.output.numel()).add_(pending.output);
  }
  pending_reduce_.reset();
}

void FullyShardedModel::finish_backward() {
  land_reduce_scatter();
  // A unit with nothing to train (LoRA's frozen head, or the tied root) never
  // reaches post_backward: its weights are released here.
  for (auto& unit : units_) {
    if (unit->grad_numel == 0) release(*unit);
  }
}

}  // namespace liger::trainer::distributed
