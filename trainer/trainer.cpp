#include "trainer/trainer.h"

#include "data/dataset.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "kernels/registry.h"
#include "models/generate.h"
#include "models/hf.h"
#include "models/transformer.h"
#include "trainer/activation_checkpoint.h"
#include "trainer/adapter_setup.h"
#include "trainer/checkpoint.h"
#include "trainer/compute_copies.h"
#include "trainer/distributed/communicator.h"
#include "trainer/distributed/environment.h"
#include "trainer/distributed/fully_sharded.h"
#include "trainer/device_memory.h"
#include "trainer/evaluate.h"
#include "trainer/logging/log.h"
#include "trainer/lr_schedule.h"
#include "trainer/memory_estimate.h"
#include "trainer/memory_plan.h"
#include "trainer/metrics.h"
#include "trainer/model_setup.h"
#include "trainer/optimizer.h"
#include "trainer/pending_metrics.h"
#include "trainer/preflight.h"
#include "trainer/step_profiler.h"
#include "trainer/step_runner.h"
#include "trainer/stop_signal.h"
#include "trainer/tokenizer_setup.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <tuple>

namespace liger::trainer {

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
  int64_t step = 0;             // optimizer steps completed
  int64_t step_at_start = 0;    // the step this run started from (resume)
  double elapsed_before = 0.0;  // seconds spent by the runs this one resumes
  std::string kernel_table;     // Markdown: which backend serves each op, and why
};

namespace {

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

nlohmann::json trainer_state_json(int64_t step, const data::DataLoader& loader, double elapsed_s) {
  const data::LoaderState position = loader.state();
  return {{"step", step},
          {"loader", {{"epoch", position.epoch}, {"position", position.position}}},
          {"elapsed_s", elapsed_s}};
}

// The start-up kernel table as a Markdown table (logging.tensorboard's "kernels" text).
std::string kernel_table_markdown(const kernels::KernelSet& kernel_set) {
  const auto cell = [](const std::string& text) {
    std::string escaped;
    for (char c : text) escaped += c == '|' ? std::string("\\|") : std::string(1, c);
    return escaped;
  };
  std::string table = "| op | backend | why |\n|---|---|---|\n";
  for (const kernels::Selection& s : kernel_set.selections()) {
    table += "| " + std::string(kernels::op_name(s.op)) + " | " + kernels::backend_name(s.backend) +
             (s.fallback ? " (fallback, wanted cuda)" : "") + " | " + cell(s.reason) + " |\n";
  }
  return table;
}

// The whole accumulated batch is drawn first: its target-token count
// normalizes every micro-batch's summed loss (exact accumulation).
AccumulatedBatch draw_accumulated_batch(data::DataLoader& loader, int64_t micro_batches) {
  AccumulatedBatch batch;
  for (int64_t i = 0; i < micro_batches; ++i) {
    batch.micro_batches.push_back(loader.next());
    batch.target_tokens += batch.micro_batches.back().num_target_tokens();
    batch.input_tokens +=
        batch.micro_batches.back().batch_size * batch.micro_batches.back().seq_len;
  }
  return batch;
}

}  // namespace

Trainer::Trainer(config::TrainConfig train_config) : state_(std::make_unique<State>()) {
  State& state = *state_;
  state.config = std::move(train_config);
  const config::TrainConfig& config = state.config;

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
  const log::Level level = log_level(config.logging.level);
  log::set_level(leader ? level : std::max(level, log::Level::warn));
  // Every path the config names, before any work (a bad one fails in the first second).
  check_files(config);
  std::filesystem::create_directories(config.checkpoint.output_dir);
  if (leader)
    log::add_file_sink(
        (std::filesystem::path(config.checkpoint.output_dir) / "train.log").string());

  state.device = resolve_device(config.training.device, env.local_rank);
  config::check_for_run(config, {env.world_size, state.device.is_cuda()});
  state.comm = distributed::Communicator::create(env, state.device, config.parallelism.backend,
                                                 config.parallelism.timeout_s);
  if (env.distributed()) {
    log::info(c10::str("distributed: ", env.describe(), "; backend ", state.comm->backend_name(),
                       ", parameters, gradients and optimizer state sharded over ", env.world_size,
                       " ranks (reshard_after_forward ",
                       config.parallelism.reshard_after_forward ? "on" : "off", ", reduce ",
                       config.parallelism.reduce_dtype, ")"));
  }
  if (config.training.threads > 0) at::set_num_threads(static_cast<int>(config.training.threads));
  torch::manual_seed(static_cast<uint64_t>(config.training.seed));

  state.tokenizer = load_run_tokenizer(config);
  const models::ModelConfig model_config =
      resolve_model_config(config, state.tokenizer->vocab_size());
  // training.memory_plan: auto: the precision and activation checkpointing that fit this GPU.
  if (const auto plan = apply_memory_plan(
          state.config, model_config,
          {env.world_size, state.device.is_cuda(), device_memory_capacity(state.device)})) {
    log::info(*plan);
  }
  data::DataSpec spec;
  spec.files = config.data.train;
  spec.format = config.data.format;
  spec.chat_template = config.data.chat_template;
  spec.token_dtype = config.data.token_dtype;
  spec.packing = config.data.packing;
  spec.seq_len = config.data.seq_len;
  spec.add_bos = config.data.add_bos;
  spec.add_eos = config.data.add_eos;
  spec.model_vocab_size = model_config.vocab_size;
  auto dataset = data::build_dataset(spec, *state.tokenizer);
  // Evaluation data: held-out training windows or separate files.
  if (config.training.eval_every > 0 && config.data.eval_fraction > 0.0) {
    const int64_t all_windows = dataset->num_windows();
    std::tie(dataset, state.eval_data) = data::hold_out_windows(dataset, config.data.eval_fraction);
    log::info(c10::str("eval: the last ", state.eval_data->num_windows(), " of ", all_windows,
                       " windows held out (data.eval_fraction ", config.data.eval_fraction, ")"));
  } else if (config.training.eval_every > 0 && !config.data.eval.empty()) {
    data::DataSpec eval_spec = spec;
    eval_spec.files = config.data.eval;
    state.eval_data = data::build_dataset(eval_spec, *state.tokenizer);
    log::info(c10::str("eval: ", state.eval_data->num_windows(), " windows from ",
                       config.data.eval.size(), " file(s)"));
  } else if (!config.data.eval.empty() || config.data.eval_fraction > 0.0) {
    log::warn("data.eval / data.eval_fraction are set but training.eval_every is 0: no evaluation");
  }
  if (dataset->packing() == data::PackingMode::isolated) {
    log::info(
        "data.packing = isolated: positions restart at each document, attention is masked "
        "per document and no label crosses a document boundary");
  }
  data::LoaderOptions loader_options;
  loader_options.micro_batch_size = config.training.micro_batch_size;
  loader_options.seed = static_cast<uint64_t>(config.training.seed);
  loader_options.rank = env.rank;
  loader_options.world_size = env.world_size;
  state.loader = std::make_unique<data::DataLoader>(dataset, loader_options);
  log::info(c10::str("data: ", dataset->num_windows(), " windows of ", config.data.seq_len,
                     " tokens from ", config.data.train.size(), " file(s); tokenizer ",
                     state.tokenizer->describe()));

  const kernels::KernelSet kernel_set =
      kernels::resolve_kernels(kernel_toggles(config.kernels), state.device, compute_dtype(config));
  for (const auto& selection : kernel_set.selections()) {
    if (selection.fallback) {
      log::warn("kernel fallback: " + selection.describe());
    } else {
      log::info("kernel " + selection.describe());
    }
  }
  state.kernel_table = kernel_table_markdown(kernel_set);

  const bool checkpointing =
      config.training.activation_checkpointing == config::ActivationCheckpointing::full;
  std::vector<at::Tensor>
      compute_copies;  // the model's 16-bit parameters when it runs on copies (else empty)
  if (env.distributed()) {
    // Sharded: the model itself lives on the meta device (no memory); its
    // weights point at gathered tensors while each unit runs.
    state.model = models::Transformer(
        model_config, kernel_set,
        at::TensorOptions().dtype(base_parameter_dtype(config)).device(at::kMeta),
        compute_dtype(config));
    attach_adapters_on_meta(
        *state.model,
        config);  // LoRA: adapters in the units, the base frozen (trainer/adapter_setup.h)
    distributed::ShardingOptions sharding;
    sharding.param_dtype = parameter_dtype(config);
    sharding.frozen_dtype = base_parameter_dtype(config);
    sharding.compute_dtype = compute_dtype(config);
    sharding.reduce_dtype =
        config.parallelism.reduce_dtype == config::ReduceDtype::bf16 ? at::kBFloat16 : at::kFloat;
    sharding.reshard_after_forward = config.parallelism.reshard_after_forward;
    sharding.activation_checkpointing = checkpointing;
    sharding.device = state.device;
    state.sharded =
        std::make_shared<distributed::FullyShardedModel>(*state.model, state.comm, sharding);
    state.model->set_layer_hooks(state.sharded);
    if (config.model.hf_path.empty()) {
      state.sharded->init_weights(static_cast<uint64_t>(config.training.seed));
    } else {  // this rank's rows of each parameter, read straight from the mapped files
      try {
        const models::HfWeights weights(*state.model, config.model.hf_path);
        state.sharded->load_full_parameters([&](const std::string& name) {
          return models::is_lora_parameter_name(name) ? at::Tensor() : weights.view(name);
        });
        state.sharded->init_adapters(
            models::lora_init_seed(static_cast<uint64_t>(config.training.seed)));
      } catch (const models::ModelIoError& error) {
        throw config::ConfigError(std::string("model.hf_path: ") + error.what());
      }
      log::info("model: weights loaded from " + config.model.hf_path +
                " and sharded (each rank reads its rows)");
    }
    state.sharded->load_full_parameters(
        adapter_path_values(*state.model, config));  // model.adapter_path's adapters, if any
    state.trained = state.sharded->named_shards();
  } else {
    const auto param_options =
        at::TensorOptions().dtype(base_parameter_dtype(config)).device(state.device);
    state.model =
        models::Transformer(model_config, kernel_set, param_options, compute_dtype(config));
    if (checkpointing) state.model->set_layer_hooks(std::make_shared<CheckpointEveryLayer>());
    if (config.model.hf_path.empty()) {
      state.model->init_weights(static_cast<uint64_t>(config.training.seed));
    } else {  // every parameter comes from the checkpoint (a missing one is an error): no init
      try {
        models::load_hf_weights(*state.model, config.model.hf_path);
      } catch (const models::ModelIoError& error) {
        throw config::ConfigError(std::string("model.hf_path: ") + error.what());
      }
      log::info("model: weights loaded from " + config.model.hf_path);
    }
    // What trains: every parameter, or (LoRA) the adapters and modules_to_save beside the frozen
    // base.
    NamedTensors trainable = setup_trainable_parameters(*state.model, config);
    if (uses_compute_copies(config, 1)) {
      ComputeCopies moved = move_to_compute_copies(trainable, compute_dtype(config));
      state.trained = std::move(moved.masters);
      compute_copies = std::move(moved.copies);
      log::info(
          c10::str("mixed precision: the model runs on ", c10::toString(compute_dtype(config)),
                   " copies of the fp32 parameters, which AdamW rewrites in its update pass"));
    } else {
      state.trained = std::move(trainable);
    }
  }
  if (uses_lora(config)) {
    int64_t trained = 0;
    for (const auto& item : state.trained) trained += item.second.numel();
    log::info(c10::str(
        "LoRA: rank ", config.lora.rank, ", alpha ", config::resolved_lora_alpha(config.lora), ", ",
        trained, " trainable parameters (adapters",
        config.lora.modules_to_save.empty() ? "" : " + modules_to_save",
        "); the base model is frozen in ", c10::toString(base_parameter_dtype(config)),
        config.model.adapter_path.empty() ? "" : ", adapters from " + config.model.adapter_path));
  }
  if (checkpointing)
    log::info("activation checkpointing: every decoder layer is recomputed in backward");
  // glu (and full): the MLP's GLU product is recomputed in backward, not kept.
  state.model->set_recompute_glu(config.training.activation_checkpointing !=
                                 config::ActivationCheckpointing::none);
  if (config.training.activation_checkpointing == config::ActivationCheckpointing::glu) {
    log::info("activation checkpointing: each MLP's GLU product is recomputed in backward");
  }
  log::info(c10::str(
      "model: ", config.model.hf_path.empty() ? config.model.preset : config.model.hf_path, " (",
      model_config.family, ", ", state.model->num_parameters(), " parameters, ",
      model_config.num_layers, " layers, hidden ", model_config.hidden_size, ", vocab ",
      model_config.vocab_size, ") on ", state.device, ", parameters ",
      c10::toString(parameter_dtype(config)), ", compute ", c10::toString(compute_dtype(config))));

  AdamWOptions adam;
  adam.beta1 = config.training.beta1;
  adam.beta2 = config.training.beta2;
  adam.eps = config.training.eps;
  adam.stochastic_rounding = config.training.stochastic_rounding;
  // Per rank: the shards differ.
  adam.seed = static_cast<uint64_t>(config.training.seed) ^ (static_cast<uint64_t>(env.rank) << 40);
  adam.device_values =
      config.training.cuda_graphs;  // lr, step counts, keys read on the device (replays)
  state.optimizer = std::make_unique<AdamW>(
      split_decay_groups(state.trained, config.training.weight_decay, compute_copies), adam);

  state.schedule.kind = config.training.lr_schedule;
  state.schedule.peak_lr = config.training.lr;
  state.schedule.warmup_steps = config.training.warmup_steps;
  state.schedule.total_steps = config.training.steps;
  state.schedule.min_lr_ratio = config.training.min_lr_ratio;

  state.checkpoints = std::make_unique<CheckpointManager>(config.checkpoint.output_dir,
                                                          config.checkpoint.keep_last);
  std::optional<std::string> resume_from;
  try {
    resume_from = state.checkpoints->resolve_resume(config.checkpoint.resume);
  } catch (const std::runtime_error& error) {
    throw config::ConfigError(error.what());
  }
  if (resume_from) {
    nlohmann::json saved;
    try {
      saved = CheckpointManager::load(*resume_from, state.trained, *state.optimizer,
                                      checkpoint_scope(state.comm, state.sharded));
      state.optimizer
          ->refresh_compute_copies();  // the model runs on the copies: they show the loaded weights
    } catch (const std::runtime_error& error) {
      throw config::ConfigError(std::string("checkpoint.resume: ") + error.what());
    }
    state.step = saved.at("step").get<int64_t>();
    state.loader->restore({saved.at("loader").at("epoch").get<int64_t>(),
                           saved.at("loader").at("position").get<int64_t>()});
    state.elapsed_before = saved.value("elapsed_s", 0.0);
    log::info(c10::str("resumed from ", *resume_from, " at step ", state.step));
  } else if (config.checkpoint.resume.mode == config::ResumeMode::auto_) {
    log::info("checkpoint.resume = auto: no checkpoint in " + config.checkpoint.output_dir +
              ", starting fresh");
  }
}

Trainer::~Trainer() = default;

models::TransformerImpl& Trainer::model() {
  return *state_->model;
}

TrainResult Trainer::run(int64_t stop_after_step) {
  State& state = *state_;
  const config::TrainConfig& config = state.config;
  install_stop_handlers();
  std::optional<MetricsWriter> metrics = open_metrics();
  const auto run_start = Clock::now();
  const int64_t rank = state.comm->rank();
  TrainResult result;
  result.rank = rank;
  int64_t last_saved = -1;
  auto save = [&](int64_t step) {
    result.checkpoint_path = save_checkpoint(step, run_start);
    last_saved = step;
  };
  begin_run();
  StepProfiler profiler(config.logging.profile_first_step, config.logging.profile_steps,
                        config.checkpoint.output_dir, rank, /*log_summary=*/rank == 0);
  MetricsInFlight step_metrics(metrics_context(metrics ? &*metrics : nullptr, run_start));
  StepRunner runner(*state.model, *state.optimizer, *state.comm, state.sharded.get(),
                    step_options());
  while (state.step < config.training.steps) {
    const int64_t step = state.step + 1;
    profiler.begin_step(step);
    const auto step_start = Clock::now();
    const double lr = state.schedule.at(step);
    AccumulatedBatch batch =
        draw_accumulated_batch(*state.loader, config.training.gradient_accumulation_steps);
    const StepOutputs outputs = runner.run(batch, lr, step);
    state.step = step;
    profiler.end_step(step);
    // Every rank's micro-batches have the same shape: the job's input tokens.
    const StepFacts facts{step, lr, batch.input_tokens * state.comm->world_size(), step_start};
    PendingMetrics pending(facts, outputs.loss_total, outputs.grad_norm, stop_requested(),
                           state.device, *state.comm);
    if (state.eval_data && step % config.training.eval_every == 0)
      pending.add_eval(evaluate_model());
    // A stop at a given step (tests, tools) is exact: its metrics are read now.
    const bool stop_here = step == stop_after_step;
    if (step_metrics.push(std::move(pending), /*read_now=*/stop_here) || stop_here) {
      step_metrics.drain();  // a signal a step ago: this step's metrics too, then stop here
      if (metrics) metrics->finish_progress();
      log::warn(c10::str("stop requested (signal ", stop_signal_number(), "): saving at step ",
                         step, " and stopping"));
      save(step);
      result.stopped_by_signal = true;
      break;
    }
    if (config.checkpoint.every > 0 && step % config.checkpoint.every == 0) save(step);
  }
  step_metrics.drain();
  runner.join_streams();  // what runs after this on the original stream sees the trained state
  if (metrics) metrics->finish_progress();
  if (!result.stopped_by_signal && config.checkpoint.save_final && last_saved != state.step &&
      state.step > 0) {
    save(state.step);
  }
  result.final_step = state.step;
  result.final_loss = step_metrics.last_loss();
  if (config.logging.sample_tokens > 0 && !result.stopped_by_signal)
    result.sample = generate_sample();
  log_done(result, metrics);
  return result;
}

void Trainer::log_done(const TrainResult& result,
                       const std::optional<MetricsWriter>& metrics) const {
  log::info(c10::str("done: step ", result.final_step, ", final loss ", result.final_loss,
                     ", checkpoint ",
                     result.checkpoint_path.empty() ? "(none)" : result.checkpoint_path,
                     ", metrics ", metrics ? metrics->path() : std::string("(rank 0)")));
  log::flush();
}

// Rank 0 keeps the metrics (every value in them is global); logging.tensorboard: TensorBoard
// events beside them, with the resolved config and the kernel table as text.
std::optional<MetricsWriter> Trainer::open_metrics() const {
  const State& state = *state_;
  if (state.comm->rank() != 0) return std::nullopt;
  const config::TrainConfig& config = state.config;
  MetricsWriter metrics(config.checkpoint.output_dir, state.step, config.training.steps,
                        config.logging.every, config.logging.progress_bar);
  if (config.logging.tensorboard) {
    metrics.open_tensorboard({{"config", "```yaml\n" + config.resolved_yaml + "```\n"},
                              {"kernels", state.kernel_table}});
  }
  return metrics;
}

// Before the first step: train mode, the run's starting step, the peak memory counted from here.
void Trainer::begin_run() {
  State& state = *state_;
  if (state.step >= state.config.training.steps) {
    log::info(c10::str("nothing to do: the checkpoint is at step ", state.step,
                       " and training.steps = ", state.config.training.steps));
  }
  state.model->train();
  state.step_at_start = state.step;
  reset_peak_memory(state.device);
}

namespace {

// The FLOPs per token behind the mfu column: with LoRA the frozen base skips its weight gradients.
double training_flops_per_token(const models::ModelConfig& model,
                                const config::TrainConfig& config) {
  if (!uses_lora(config)) return model.training_flops_per_token(config.data.seq_len);
  const std::vector<std::string> saved = lora_modules_to_save(config);
  const auto saves = [&saved](const char* name) {
    return std::find(saved.begin(), saved.end(), name) != saved.end();
  };
  // A tied lm_head is the embedding: it trains when either name is saved.
  const bool lm_head_trained = saves("lm_head") || (model.tie_embeddings && saves("embed_tokens"));
  return models::lora_training_flops_per_token(model,
                                               lora_options(config, models::lora_targets_of(model)),
                                               lm_head_trained, config.data.seq_len);
}

}  // namespace

// The run's facts that each step's metrics row needs (trainer/pending_metrics.h).
MetricsContext Trainer::metrics_context(MetricsWriter* writer, Clock::time_point run_start) const {
  const State& state = *state_;
  const config::TrainConfig& config = state.config;
  MetricsContext context;
  context.writer = writer;
  context.run_start = run_start;
  context.elapsed_before = state.elapsed_before;
  context.flops_per_token = training_flops_per_token(state.model->config(), config);
  context.peak_flops = config.logging.peak_tflops > 0.0 ? config.logging.peak_tflops * 1e12
                                                        : device_peak_bf16_flops(state.device);
  context.world_size = state.comm->world_size();
  context.first_step = state.step_at_start + 1;
  if (state.device.is_cuda()) {
    context.memory_estimate =
        estimate_memory(state.model->config(), config, context.world_size).describe();
  }
  return context;
}

// What the StepRunner takes from the config (trainer/step_runner.h).
StepOptions Trainer::step_options() const {
  const State& state = *state_;
  const config::TrainConfig& config = state.config;
  StepOptions options;
  options.device = state.device;
  options.cuda_graphs = config.training.cuda_graphs;
  options.isolated_documents = state.loader->dataset().packing() == data::PackingMode::isolated;
  options.grad_clip = config.training.grad_clip;
  options.flce_chunk_mb = config.kernels.flce_chunk_mb;
  options.flce_mode = config.kernels.flce_mode == config::FlceMode::lean ? kernels::FlceMode::lean
                                                                         : kernels::FlceMode::speed;
  options.fold_copy_gradients = config.training.gradient_accumulation_steps > 1;
  options.start_step = state.step_at_start;
  return options;
}

// Validation loss on the held-out windows (training.eval_every).
EvalResult Trainer::evaluate_model() {
  State& state = *state_;
  return evaluate(*state.model, *state.eval_data, state.config.training.micro_batch_size,
                  state.config.training.eval_batches, state.device);
}

// Writes step-<step> (elapsed time: this run's and the resumed runs'); returns its path.
std::string Trainer::save_checkpoint(int64_t step, Clock::time_point run_start) {
  State& state = *state_;
  const double elapsed =
      state.elapsed_before + std::chrono::duration<double>(Clock::now() - run_start).count();
  const std::string path = state.checkpoints->save(
      step, state.trained, state.model->config(), *state.optimizer,
      trainer_state_json(step, *state.loader, elapsed), state.config.resolved_yaml,
      checkpoint_scope(state.comm, state.sharded));
  log::info("saved checkpoint " + path);
  return path;
}

// The trained model's continuation of logging.sample_prompt (without the
// BOS it starts from and without EOS tokens).
std::string Trainer::generate_sample() {
  State& state = *state_;
  const config::TrainConfig& config = state.config;
  const data::Tokenizer& tokenizer = *state.tokenizer;
  const bool starts_with_bos = config.data.add_bos && tokenizer.bos_id() >= 0;
  std::vector<int64_t> prompt;
  if (starts_with_bos) prompt.push_back(tokenizer.bos_id());
  for (int32_t id : tokenizer.encode(config.logging.sample_prompt)) prompt.push_back(id);
  models::GenerationOptions options;
  options.max_new_tokens = config.logging.sample_tokens;
  options.temperature = config.logging.sample_temperature;
  options.top_p = config.logging.sample_top_p;
  options.seed = static_cast<uint64_t>(config.training.seed);
  options.eos_id = tokenizer.eos_id();
  const std::vector<int64_t> tokens = models::generate(*state.model, prompt, options);
  std::vector<int32_t> generated;
  for (size_t i = starts_with_bos ? 1 : 0; i < tokens.size(); ++i) {
    if (tokens[i] != tokenizer.eos_id()) generated.push_back(static_cast<int32_t>(tokens[i]));
  }
  return tokenizer.decode(generated);
}

}  // namespace liger::trainer
