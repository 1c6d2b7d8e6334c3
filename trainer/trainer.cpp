#include "trainer/trainer.h"

#include "data/dataset.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "kernels/registry.h"
#include "kernels/sum_of_squares.h"
#include "models/generate.h"
#include "models/hf.h"
#include "models/transformer.h"
#include "trainer/activation_checkpoint.h"
#include "trainer/checkpoint.h"
#include "trainer/compute_copies.h"
#include "trainer/distributed/communicator.h"
#include "trainer/distributed/environment.h"
#include "trainer/distributed/fully_sharded.h"
#include "trainer/device_memory.h"
#include "trainer/evaluate.h"
#include "trainer/logging/log.h"
#include "trainer/loss.h"
#include "trainer/lr_schedule.h"
#include "trainer/memory_estimate.h"
#include "trainer/memory_plan.h"
#include "trainer/metrics.h"
#include "trainer/model_setup.h"
#include "trainer/optimizer.h"
#include "trainer/step_graph.h"
#include "trainer/step_profiler.h"
#include "trainer/stop_signal.h"

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <tuple>

namespace liger::trainer {

using Clock = std::chrono::steady_clock;

struct Trainer::State {
  config::TrainConfig config;
  c10::Device device{c10::kCPU};
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::unique_ptr<data::DataLoader> loader;
  std::shared_ptr<const data::PackedDataset> eval_data;  // null: no evaluation
  models::Transformer model{nullptr};
  std::shared_ptr<distributed::Communicator> comm;          // world size 1: no-op collectives
  std::shared_ptr<distributed::FullyShardedModel> sharded;  // null: the model is whole here
  NamedTensors trained;  // what the optimizer updates: the parameters, or this rank's shards
  std::unique_ptr<AdamW> optimizer;
  LrSchedule schedule;
  std::unique_ptr<CheckpointManager> checkpoints;
  int64_t step = 0;            // optimizer steps completed
  int64_t step_at_start = 0;   // the step this run started from (resume)
  double elapsed_before = 0.0; // seconds spent by the runs this one resumes
};

namespace {

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

// Sharded jobs: every rank writes its shards, rank 0 the index and the rest.
CheckpointScope checkpoint_scope(const std::shared_ptr<distributed::Communicator>& comm,
                                 const std::shared_ptr<distributed::FullyShardedModel>& sharded) {
  CheckpointScope scope;
  scope.rank = comm->rank();
  scope.world_size = comm->world_size();
  if (sharded) {
    scope.shard_index = sharded->shard_index();
    scope.barrier = [comm] { comm->barrier(); };
  }
  return scope;
}

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
void batch_into(std::vector<int64_t>& field, const std::vector<int64_t>& shape, const c10::Device& device,
                at::Tensor& buffer) {
  if (!buffer.defined()) buffer = torch::empty(shape, at::TensorOptions().dtype(at::kLong).device(device));
  if (buffer.sizes() != at::IntArrayRef(shape)) {
    throw std::runtime_error(c10::str("training.cuda_graphs: a micro-batch of shape ", at::IntArrayRef(shape),
                                      " after the captured ", buffer.sizes(),
                                      "; the replayed step needs every batch in one shape (set training.cuda_graphs: false)"));
  }
  const at::Tensor host = torch::from_blob(field.data(), shape, at::kLong);
  buffer.copy_(host.pin_memory(), /*non_blocking=*/true);
}

// One micro-batch on the device (positions/documents: isolated packing only).
struct DeviceBatch {
  at::Tensor ids, labels, positions, documents;
};

// Puts a micro-batch's fields on the device: as fresh tensors, or with
// `fixed` (CUDA graphs) into `into`'s buffers, which keep their addresses.
void put_on_device(data::Batch& batch, const c10::Device& device, bool isolated, bool fixed, DeviceBatch& into) {
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
  if (isolated) {  // positions restart at each document (RoPE sees them); attention stays inside each
    put(batch.position_ids, into.positions);
    put(batch.document_ids, into.documents);
  }
}

// Eager steps before the capture: lazy initialisation (cuBLAS workspaces,
// cuDNN plans, autotuning) happens there, never inside the graph.
constexpr int64_t kEagerStepsBeforeCapture = 2;

nlohmann::json trainer_state_json(int64_t step, const data::DataLoader& loader, double elapsed_s) {
  const data::LoaderState s = loader.state();
  return {{"step", step},
          {"loader", {{"epoch", s.epoch}, {"position", s.position}}},
          {"elapsed_s", elapsed_s}};
}

}  // namespace

Trainer::Trainer(config::TrainConfig config) : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.config = std::move(config);
  const auto& c = s.config;

  // Where this process stands: torchrun-style or SLURM environment, or alone.
  distributed::ProcessEnvironment env;
  try {
    env = distributed::detect_environment();
  } catch (const distributed::EnvironmentError& error) {
    throw config::ConfigError(error.what());
  }
  const bool leader = env.rank == 0;
  log::set_rank(static_cast<int>(env.rank), static_cast<int>(env.world_size));
  // Other ranks say only what goes wrong; rank 0 tells the story.
  log::set_level(leader ? log_level(c.logging.level) : std::max(log_level(c.logging.level), log::Level::warn));
  std::filesystem::create_directories(c.checkpoint.output_dir);
  if (leader) log::add_file_sink((std::filesystem::path(c.checkpoint.output_dir) / "train.log").string());

  s.device = resolve_device(c.training.device, env.local_rank);
  config::check_for_run(c, {env.world_size, s.device.is_cuda()});
  s.comm = distributed::Communicator::create(env, s.device, c.parallelism.backend, c.parallelism.timeout_s);
  if (env.distributed()) {
    log::info(c10::str("distributed: ", env.describe(), "; backend ", s.comm->backend_name(),
                       ", parameters, gradients and optimizer state sharded over ", env.world_size,
                       " ranks (reshard_after_forward ", c.parallelism.reshard_after_forward ? "on" : "off",
                       ", reduce ", c.parallelism.reduce_dtype, ")"));
  }
  if (c.training.threads > 0) at::set_num_threads(static_cast<int>(c.training.threads));
  torch::manual_seed(static_cast<uint64_t>(c.training.seed));

  data::TokenizerOptions tokenizer_options;
  tokenizer_options.bos_token = c.data.bos_token;
  tokenizer_options.eos_token = c.data.eos_token;
  s.tokenizer = data::load_tokenizer(c.data.tokenizer, tokenizer_options);
  const models::ModelConfig model_config = resolve_model_config(c, s.tokenizer->vocab_size());
  // training.memory_plan: auto: the precision and activation checkpointing that fit this GPU.
  if (const auto plan = apply_memory_plan(s.config, model_config,
                                          {env.world_size, s.device.is_cuda(), device_memory_capacity(s.device)})) {
    log::info(*plan);
  }
  data::DataSpec spec;
  spec.files = c.data.train;
  spec.format = c.data.format;
  spec.chat_template = c.data.chat_template;
  spec.token_dtype = c.data.token_dtype;
  spec.packing = c.data.packing;
  spec.seq_len = c.data.seq_len;
  spec.add_bos = c.data.add_bos;
  spec.add_eos = c.data.add_eos;
  spec.model_vocab_size = model_config.vocab_size;
  auto dataset = data::build_dataset(spec, *s.tokenizer);
  // Evaluation data: held-out training windows or separate files.
  if (c.training.eval_every > 0 && c.data.eval_fraction > 0.0) {
    const int64_t all_windows = dataset->num_windows();
    std::tie(dataset, s.eval_data) = data::hold_out_windows(dataset, c.data.eval_fraction);
    log::info(c10::str("eval: the last ", s.eval_data->num_windows(), " of ", all_windows,
                       " windows held out (data.eval_fraction ", c.data.eval_fraction, ")"));
  } else if (c.training.eval_every > 0 && !c.data.eval.empty()) {
    data::DataSpec eval_spec = spec;
    eval_spec.files = c.data.eval;
    s.eval_data = data::build_dataset(eval_spec, *s.tokenizer);
    log::info(c10::str("eval: ", s.eval_data->num_windows(), " windows from ", c.data.eval.size(), " file(s)"));
  } else if (!c.data.eval.empty() || c.data.eval_fraction > 0.0) {
    log::warn("data.eval / data.eval_fraction are set but training.eval_every is 0: no evaluation");
  }
  if (dataset->packing() == data::PackingMode::isolated) {
    log::info("data.packing = isolated: positions restart at each document, attention is masked "
              "per document (explicit attention path) and no label crosses a document boundary");
  }
  data::LoaderOptions loader_options;
  loader_options.micro_batch_size = c.training.micro_batch_size;
  loader_options.seed = static_cast<uint64_t>(c.training.seed);
  loader_options.rank = env.rank;
  loader_options.world_size = env.world_size;
  s.loader = std::make_unique<data::DataLoader>(dataset, loader_options);
  log::info(c10::str("data: ", dataset->num_windows(), " windows of ", c.data.seq_len,
                     " tokens from ", c.data.train.size(), " file(s); tokenizer ",
                     s.tokenizer->describe()));

  const kernels::KernelSet kernel_set =
      kernels::resolve_kernels(kernel_toggles(c.kernels), s.device, compute_dtype(c));
  for (const auto& selection : kernel_set.selections()) {
    if (selection.fallback) {
      log::warn("kernel fallback: " + selection.describe());
    } else {
      log::info("kernel " + selection.describe());
    }
  }

  const bool checkpointing = c.training.activation_checkpointing == config::ActivationCheckpointing::full;
  std::vector<at::Tensor> compute_copies;  // the model's 16-bit parameters when it runs on copies (else empty)
  if (env.distributed()) {
    // Sharded: the model itself lives on the meta device (no memory); its
    // weights point at gathered tensors while each unit runs.
    s.model = models::Transformer(model_config, kernel_set, at::TensorOptions().dtype(parameter_dtype(c)).device(at::kMeta),
                                  compute_dtype(c));
    distributed::ShardingOptions sharding;
    sharding.param_dtype = parameter_dtype(c);
    sharding.compute_dtype = compute_dtype(c);
    sharding.reduce_dtype = c.parallelism.reduce_dtype == config::ReduceDtype::bf16 ? at::kBFloat16 : at::kFloat;
    sharding.reshard_after_forward = c.parallelism.reshard_after_forward;
    sharding.activation_checkpointing = checkpointing;
    sharding.device = s.device;
    s.sharded = std::make_shared<distributed::FullyShardedModel>(*s.model, s.comm, sharding);
    s.model->set_layer_hooks(s.sharded);
    if (c.model.hf_path.empty()) {
      s.sharded->init_weights(static_cast<uint64_t>(c.training.seed));
    } else {  // this rank's rows of each parameter, read straight from the mapped files
      try {
        const models::HfWeights weights(*s.model, c.model.hf_path);
        s.sharded->load_full_parameters([&](const std::string& name) { return weights.view(name); });
      } catch (const models::ModelIoError& error) {
        throw config::ConfigError(std::string("model.hf_path: ") + error.what());
      }
      log::info("model: weights loaded from " + c.model.hf_path + " and sharded (each rank reads its rows)");
    }
    s.trained = s.sharded->named_shards();
  } else {
  const auto param_options = at::TensorOptions().dtype(parameter_dtype(c)).device(s.device);
  s.model = models::Transformer(model_config, kernel_set, param_options, compute_dtype(c));
  if (checkpointing) s.model->set_layer_hooks(std::make_shared<CheckpointEveryLayer>());
  if (c.model.hf_path.empty()) {
    s.model->init_weights(static_cast<uint64_t>(c.training.seed));
  } else {  // every parameter comes from the checkpoint (a missing one is an error): no init
    try {
      models::load_hf_weights(*s.model, c.model.hf_path);
    } catch (const models::ModelIoError& error) {
      throw config::ConfigError(std::string("model.hf_path: ") + error.what());
    }
    log::info("model: weights loaded from " + c.model.hf_path);
  }
  if (uses_compute_copies(c, 1)) {
    ComputeCopies moved = move_to_compute_copies(*s.model, compute_dtype(c));
    s.trained = std::move(moved.masters);
    compute_copies = std::move(moved.copies);
    log::info(c10::str("mixed precision: the model runs on ", c10::toString(compute_dtype(c)),
                       " copies of the fp32 parameters, which AdamW rewrites in its update pass"));
  } else {
    for (const auto& item : s.model->named_parameters()) s.trained.emplace_back(item.key(), item.value());
  }
  }
  if (checkpointing) log::info("activation checkpointing: every decoder layer is recomputed in backward");
  // glu (and full): the MLP's GLU product is recomputed in backward, not kept.
  s.model->set_recompute_glu(c.training.activation_checkpointing != config::ActivationCheckpointing::none);
  if (c.training.activation_checkpointing == config::ActivationCheckpointing::glu) {
    log::info("activation checkpointing: each MLP's GLU product is recomputed in backward");
  }
  log::info(c10::str("model: ", c.model.hf_path.empty() ? c.model.preset : c.model.hf_path, " (",
                     model_config.family, ", ", s.model->num_parameters(), " parameters, ",
                     model_config.num_layers, " layers, hidden ", model_config.hidden_size,
                     ", vocab ", model_config.vocab_size, ") on ", s.device, ", parameters ",
                     c10::toString(parameter_dtype(c)), ", compute ",
                     c10::toString(compute_dtype(c))));

  AdamWOptions adam;
  adam.beta1 = c.training.beta1;
  adam.beta2 = c.training.beta2;
  adam.eps = c.training.eps;
  adam.stochastic_rounding = c.training.stochastic_rounding;
  adam.seed = static_cast<uint64_t>(c.training.seed) ^ (static_cast<uint64_t>(env.rank) << 40);  // per rank: shards differ
  adam.device_values = c.training.cuda_graphs;  // lr, step counts, keys read on the device (replays)
  s.optimizer =
      std::make_unique<AdamW>(split_decay_groups(s.trained, c.training.weight_decay, compute_copies), adam);

  s.schedule.kind = c.training.lr_schedule;
  s.schedule.peak_lr = c.training.lr;
  s.schedule.warmup_steps = c.training.warmup_steps;
  s.schedule.total_steps = c.training.steps;
  s.schedule.min_lr_ratio = c.training.min_lr_ratio;

  s.checkpoints = std::make_unique<CheckpointManager>(c.checkpoint.output_dir, c.checkpoint.keep_last);
  std::optional<std::string> resume_from;
  try {
    resume_from = s.checkpoints->resolve_resume(c.checkpoint.resume);
  } catch (const std::runtime_error& error) {
    throw config::ConfigError(error.what());
  }
  if (resume_from) {
    nlohmann::json state;
    try {
      state = CheckpointManager::load(*resume_from, s.trained, *s.optimizer, checkpoint_scope(s.comm, s.sharded));
      s.optimizer->refresh_compute_copies();  // the model runs on the copies: they show the loaded weights
    } catch (const std::runtime_error& error) {
      throw config::ConfigError(std::string("checkpoint.resume: ") + error.what());
    }
    s.step = state.at("step").get<int64_t>();
    s.loader->restore({state.at("loader").at("epoch").get<int64_t>(),
                       state.at("loader").at("position").get<int64_t>()});
    s.elapsed_before = state.value("elapsed_s", 0.0);
    log::info(c10::str("resumed from ", *resume_from, " at step ", s.step));
  } else if (c.checkpoint.resume.mode == config::ResumeMode::auto_) {
    log::info("checkpoint.resume = auto: no checkpoint in " + c.checkpoint.output_dir +
              ", starting fresh");
  }
}

Trainer::~Trainer() = default;

models::TransformerImpl& Trainer::model() { return *state_->model; }

TrainResult Trainer::run(int64_t stop_after_step) {
  State& s = *state_;
  const auto& c = s.config;
  install_stop_handlers();
  const bool leader = s.comm->rank() == 0;
  const bool distributed = s.comm->world_size() > 1;
  // Rank 0 keeps the metrics (every value in them is global).
  std::optional<MetricsWriter> metrics;
  if (leader) {
    metrics.emplace(c.checkpoint.output_dir, s.step, c.training.steps, c.logging.every, c.logging.progress_bar);
  }
  const auto run_start = Clock::now();
  TrainResult result;
  result.rank = s.comm->rank();
  result.final_loss = std::numeric_limits<double>::quiet_NaN();
  int64_t last_saved = -1;

  auto save = [&](int64_t step) {
    const double elapsed =
        s.elapsed_before + std::chrono::duration<double>(Clock::now() - run_start).count();
    result.checkpoint_path = s.checkpoints->save(step, s.trained, s.model->config(), *s.optimizer,
                                                 trainer_state_json(step, *s.loader, elapsed),
                                                 c.resolved_yaml, checkpoint_scope(s.comm, s.sharded));
    last_saved = step;
    log::info("saved checkpoint " + result.checkpoint_path);
  };

  if (s.step >= c.training.steps) {
    log::info(c10::str("nothing to do: the checkpoint is at step ", s.step, " and training.steps = ",
                       c.training.steps));
  }
  s.model->train();
  s.step_at_start = s.step;
  reset_peak_memory(s.device);
  const double peak_flops = c.logging.peak_tflops > 0.0 ? c.logging.peak_tflops * 1e12 : device_peak_bf16_flops(s.device);
  const bool dataset_isolated = s.loader->dataset().packing() == data::PackingMode::isolated;
  StepProfiler profiler(c.logging.profile_first_step, c.logging.profile_steps, c.checkpoint.output_dir,
                        s.comm->rank(), leader);
  // A step whose metrics are still on their way from the device.
  struct PendingStep {
    int64_t step = 0;
    double lr = 0.0;
    int64_t input_tokens = 0;
    Clock::time_point step_start;
    bool stop_signal = false;
    at::Tensor values;  // host doubles: loss, grad_norm, stop (ranks asking), peak memory
    std::shared_ptr<at::cuda::CUDAEvent> done;  // recorded after the step's last kernel (cuda)
    std::optional<double> eval_loss, eval_ppl;
  };
  std::optional<PendingStep> pending;
  std::shared_ptr<at::cuda::CUDAEvent> previous_done;  // the step before `pending`'s
  // Waits for a step's metrics, records and logs them; returns whether any rank asked to stop.
  auto finish_step = [&](PendingStep& p) -> bool {
    if (p.done) p.done->synchronize();
    const double* v = p.values.data_ptr<double>();
    StepMetrics m;
    m.step = p.step;
    m.loss = v[0];
    m.grad_norm = v[1];
    m.lr = p.lr;
    m.tokens = p.input_tokens;
    // The step's time: on cuda from the previous step's end to its end on the
    // GPU's clock (the host runs a step ahead); else, and for the first step, wall time.
    double step_seconds = std::chrono::duration<double>(Clock::now() - p.step_start).count();
    if (p.done && previous_done) step_seconds = previous_done->elapsed_time(*p.done) / 1000.0;
    previous_done = p.done;
    m.tokens_per_s = static_cast<double>(p.input_tokens) / std::max(step_seconds, 1e-9);
    m.elapsed_s = s.elapsed_before + std::chrono::duration<double>(Clock::now() - run_start).count();
    m.peak_mem_bytes = static_cast<int64_t>(v[3]);  // the highest of all ranks
    m.world_size = s.comm->world_size();
    if (peak_flops > 0.0) {
      m.mfu = s.model->config().training_flops_per_token(c.data.seq_len) * m.tokens_per_s /
              (peak_flops * static_cast<double>(m.world_size));
    }
    m.eval_loss = p.eval_loss;
    m.eval_ppl = p.eval_ppl;
    if (metrics) metrics->record(m);
    if (p.step == s.step_at_start + 1 && s.device.is_cuda()) {
      const MemoryEstimate estimate = estimate_memory(s.model->config(), c, s.comm->world_size());
      log::info(c10::str("memory per GPU: measured peak ", static_cast<double>(m.peak_mem_bytes) / (1 << 30),
                         " GiB after the first step; estimate ", estimate.describe()));
    }
    for (const std::string& note : kernels::take_kernel_notes()) log::info(note);  // e.g. tuned GEMM plans
    result.final_loss = m.loss;
    if (!std::isfinite(m.loss)) {
      throw std::runtime_error(c10::str("loss is ", m.loss, " at step ", p.step,
                                        ": training diverged; lower training.lr or check the data"));
    }
    return v[2] > 0.0;
  };
  const bool graphs = c.training.cuda_graphs;
  // The device half of a step: forward and backward of every micro-batch,
  // clipping, the AdamW update. Returns (summed loss, gradient norm).
  // The loss reads 1 / count from inverse_count; normaliser is this rank's
  // count (the global one on one process), kept in the options for a loss
  // path that would not read the tensor.
  const kernels::FlceMode flce_mode =
      c.kernels.flce_mode == config::FlceMode::lean ? kernels::FlceMode::lean : kernels::FlceMode::speed;
  // Compute copies over several micro-batches: their gradients sum in fp32
  // (without copies, fold_copy_gradients has nothing to do).
  const bool fold_copy_gradients = c.training.gradient_accumulation_steps > 1;
  auto device_step = [&](const std::vector<DeviceBatch>& inputs, double normaliser,
                         const at::Tensor& inverse_count, double lr) -> std::pair<at::Tensor, at::Tensor> {
    at::Tensor loss_total = torch::zeros({}, at::TensorOptions().dtype(at::kFloat).device(s.device));
    for (const DeviceBatch& in : inputs) {
      at::Tensor hidden = s.model->forward(in.ids, in.positions, in.documents);
      at::Tensor loss = token_loss(*s.model, hidden, in.labels, normaliser, c.kernels.flce_chunk_mb, flce_mode,
                                   inverse_count);
      loss.backward();
      if (s.sharded) s.sharded->finish_backward();
      if (fold_copy_gradients) s.optimizer->fold_copy_gradients();  // fp32 sums across micro-batches
      loss_total += loss.detach();
    }
    const GradNorm clipping = grad_norm_and_clip(s.optimizer->gradients(), c.training.grad_clip, *s.comm, s.sharded != nullptr);
    if (graphs) {
      s.optimizer->apply_step(clipping.clip_coef);  // prepare_step ran before, outside any capture
    } else {
      s.optimizer->step(lr, clipping.clip_coef);
    }
    return {loss_total, clipping.norm};
  };
  // CUDA graphs: the whole run on a side stream (a capture cannot use the
  // default stream, and the eager steps before it must warm up the same
  // stream's cuBLAS workspace), fixed batch buffers and 1 / count.
  std::optional<c10::cuda::CUDAStreamGuard> graph_stream;
  if (graphs) {
    // The side stream starts after everything queued so far (the optimizer's
    // zero-filled state, the loaded weights): streams from the pool do not
    // wait for the default stream by themselves.
    const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, s.device.index());
    at::cuda::CUDAEvent queued;
    queued.record(c10::cuda::getCurrentCUDAStream(s.device.index()));
    queued.block(side);
    graph_stream.emplace(side);
  }
  std::vector<DeviceBatch> static_inputs;
  at::Tensor static_inverse_count;
  if (graphs) static_inverse_count = torch::zeros({}, at::TensorOptions().dtype(at::kFloat).device(s.device));
  std::unique_ptr<StepGraph> graph;
  while (s.step < c.training.steps) {
    const int64_t step = s.step + 1;
    profiler.begin_step(step);
    const auto step_start = Clock::now();
    const double lr = s.schedule.at(step);

    // The whole accumulated batch is drawn first: its target-token count
    // normalises every micro-batch's summed loss (exact accumulation).
    std::vector<data::Batch> batches;
    int64_t target_tokens = 0, input_tokens = 0;
    for (int64_t i = 0; i < c.training.gradient_accumulation_steps; ++i) {
      batches.push_back(s.loader->next());
      target_tokens += batches.back().num_target_tokens();
      input_tokens += batches.back().batch_size * batches.back().seq_len;
    }
    // Every micro-batch's summed loss is divided by the target count of the
    // whole accumulated batch, read by the loss as 1 / count in an fp32 device
    // scalar. Sharded: the count of the global batch, all-reduced on the
    // device (no host round trip: the next step's first gathers can overlap
    // this one's tail); 1 / max(count, 1) in double, then fp32, as the host computes it.
    const double normaliser = static_cast<double>(std::max<int64_t>(target_tokens, 1));
    at::Tensor inverse_count;
    if (distributed) {
      at::Tensor counts = torch::full({1}, target_tokens, at::TensorOptions().dtype(at::kLong).device(s.device));
      s.comm->all_reduce(counts);
      inverse_count = counts.to(at::kDouble).clamp_min(1.0).reciprocal().to(at::kFloat).squeeze(0);
      input_tokens *= s.comm->world_size();  // every rank's micro-batches have the same shape
    } else if (graphs) {  // the graph reads the fixed scalar
      static_inverse_count.fill_(1.0 / normaliser);  // cast: to the fp32 scalar, as the fill below
      inverse_count = static_inverse_count;
    } else {
      inverse_count = torch::full({}, 1.0 / normaliser, at::TensorOptions().dtype(at::kFloat).device(s.device));
    }

    std::vector<DeviceBatch> fresh_inputs;
    std::vector<DeviceBatch>& inputs = graphs ? static_inputs : fresh_inputs;
    inputs.resize(batches.size());
    for (size_t k = 0; k < batches.size(); ++k) {
      put_on_device(batches[k], s.device, dataset_isolated, graphs, inputs[k]);
    }
    at::Tensor loss_total, grad_norm;
    if (!graphs) {
      std::tie(loss_total, grad_norm) = device_step(inputs, normaliser, inverse_count, lr);
      s.optimizer->zero_grad();
      if (s.sharded) s.sharded->release_gradients();
    } else {
      // The batch is in the fixed buffers the graph reads, 1 / count in its
      // scalar; the AdamW values go to device memory now. Then the step runs
      // eagerly (the first steps), is captured (once) or replayed.
      s.optimizer->prepare_step(lr);
      if (!graph && step - s.step_at_start <= kEagerStepsBeforeCapture) {
        std::tie(loss_total, grad_norm) = device_step(inputs, normaliser, inverse_count, lr);
        s.optimizer->zero_grad();  // the capture must see no gradients: its backward allocates them in its pool
      } else {
        if (!graph) {
          graph = std::make_unique<StepGraph>(
              [&] {
                at::Tensor l, g;
                std::tie(l, g) = device_step(static_inputs, normaliser, static_inverse_count, lr);
                return std::vector<at::Tensor>{l, g};
              },
              step);
          log::info(c10::str("cuda graphs: step ", step, " captured (", graph->pool_bytes() / double(1 << 30),
                             " GiB in the graph's memory pool); every later step replays it"));
        }
        graph->replay();
        loss_total = graph->outputs()[0];
        grad_norm = graph->outputs()[1];
      }
    }
    s.step = step;

    // The step's metrics leave the device without stopping it: they are
    // copied to pinned host memory behind an event and read while the next
    // step runs (on cuda), so the GPU never waits for the host between steps.
    // Sharded: the loss is the sum of every rank's share, and whether to stop
    // is decided together (a signal may reach the ranks a step apart).
    profiler.end_step(step);
    PendingStep now;
    now.step = step;
    now.lr = lr;
    now.input_tokens = input_tokens;
    now.step_start = step_start;
    now.stop_signal = stop_requested();
    // The host values are written by fill kernels on the device (their value
    // is a launch argument): a copy from pageable host memory would wait for
    // the stream, i.e. for this whole step.
    const auto on_device = at::TensorOptions().dtype(at::kDouble).device(s.device);
    at::Tensor values = torch::stack({loss_total.to(at::kDouble), grad_norm.to(at::kDouble),
                                      torch::full({}, now.stop_signal ? 1.0 : 0.0, on_device),
                                      torch::full({}, static_cast<double>(peak_memory_bytes(s.device)),
                                                  on_device)});
    if (distributed) {
      at::Tensor sums = values.narrow(0, 0, 3).clone();  // loss and stop: summed; grad_norm is global already
      s.comm->all_reduce(sums);
      at::Tensor peak = values.narrow(0, 3, 1).clone();
      s.comm->all_reduce(peak, distributed::ReduceOp::max);
      values = torch::cat({sums.narrow(0, 0, 1), values.narrow(0, 1, 1), sums.narrow(0, 2, 1), peak});
    }
    now.values = values.is_cuda() ? torch::empty({4}, at::TensorOptions().dtype(at::kDouble).pinned_memory(true))
                                   : values;
    if (values.is_cuda()) {
      now.values.copy_(values, /*non_blocking=*/true);
      now.done = std::make_shared<at::cuda::CUDAEvent>(cudaEventDefault);  // timed: steps are measured on the GPU
      now.done->record(at::cuda::getCurrentCUDAStream());
    }
    if (s.eval_data && step % c.training.eval_every == 0) {
      const EvalResult eval =
          evaluate(*s.model, *s.eval_data, c.training.micro_batch_size, c.training.eval_batches, s.device);
      now.eval_loss = eval.loss;
      now.eval_ppl = eval.perplexity;
    }
    // A stop at a given step (tests, tools) is exact: its metrics are read now.
    const bool stop_here = step == stop_after_step;
    bool stop_now = false;
    if (pending) stop_now = finish_step(*pending);
    pending = std::move(now);
    if (stop_here || !values.is_cuda()) {
      stop_now = finish_step(*pending) || stop_now || stop_here;
      pending.reset();
    }

    if (stop_now) {
      if (pending) {  // the signal arrived a step ago: this step's metrics too, then stop here
        finish_step(*pending);
        pending.reset();
      }
      if (metrics) metrics->finish_progress();
      log::warn(c10::str("stop requested (signal ", stop_signal_number(), "): saving at step ", step,
                         " and stopping"));
      save(step);
      result.stopped_by_signal = true;
      break;
    }
    if (c.checkpoint.every > 0 && step % c.checkpoint.every == 0) save(step);
  }
  if (pending) finish_step(*pending);
  if (graph_stream) {  // what runs after this function on the original stream sees the trained state
    at::cuda::CUDAEvent trained;
    trained.record(graph_stream->current_stream());
    trained.block(graph_stream->original_stream());
  }
  if (metrics) metrics->finish_progress();
  if (!result.stopped_by_signal && c.checkpoint.save_final && last_saved != s.step && s.step > 0) {
    save(s.step);
  }
  result.final_step = s.step;

  if (c.logging.sample_tokens > 0 && !result.stopped_by_signal) {
    std::vector<int64_t> prompt;
    if (c.data.add_bos && s.tokenizer->bos_id() >= 0) prompt.push_back(s.tokenizer->bos_id());
    for (int32_t id : s.tokenizer->encode(c.logging.sample_prompt)) prompt.push_back(id);
    models::GenerationOptions options;
    options.max_new_tokens = c.logging.sample_tokens;
    options.temperature = c.logging.sample_temperature;
    options.top_p = c.logging.sample_top_p;
    options.seed = static_cast<uint64_t>(c.training.seed);
    options.eos_id = s.tokenizer->eos_id();
    const std::vector<int64_t> tokens = models::generate(*s.model, prompt, options);
    std::vector<int32_t> generated;
    for (size_t i = (c.data.add_bos && s.tokenizer->bos_id() >= 0) ? 1 : 0; i < tokens.size(); ++i) {
      if (tokens[i] != s.tokenizer->eos_id()) generated.push_back(static_cast<int32_t>(tokens[i]));
    }
    result.sample = s.tokenizer->decode(generated);
  }

  log::info(c10::str("done: step ", result.final_step, ", final loss ", result.final_loss,
                     ", checkpoint ", result.checkpoint_path.empty() ? "(none)" : result.checkpoint_path,
                     ", metrics ", metrics ? metrics->path() : std::string("(rank 0)")));
  log::flush();
  return result;
}

}  // namespace liger::trainer
