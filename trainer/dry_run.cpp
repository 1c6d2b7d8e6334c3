#include "trainer/dry_run.h"

#include "data/tokenizer.h"
#include "models/transformer.h"
#include "models/lora.h"
#include "trainer/adapter_setup.h"
#include "trainer/distributed/environment.h"
#include "trainer/device_memory.h"
#include "trainer/memory_estimate.h"
#include "trainer/memory_plan.h"
#include "trainer/preflight.h"
#include "trainer/model_setup.h"

#include <torch/torch.h>

#include <cstdio>
#include <sstream>

namespace liger::trainer {
namespace {

std::string with_commas(int64_t value) {
  std::string digits = std::to_string(value);
  for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) digits.insert(i, ",");
  return digits;
}

std::string gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return text;
}

}  // namespace

DryRunReport dry_run(const config::TrainConfig& requested) {
  // The paths first, as a run checks them.
  check_files(requested);
  config::TrainConfig c = requested;  // with training.memory_plan: auto, the planned config below
  // The tokenizer is only needed when the preset takes its vocabulary from it.
  std::optional<int64_t> tokenizer_vocab;
  if (c.model.hf_path.empty() && !c.model.vocab_size &&
      models::preset(c.model.preset).vocab_size == 0) {
    tokenizer_vocab = data::load_tokenizer(c.data.tokenizer)->vocab_size();
  }
  const models::ModelConfig model_config = resolve_model_config(c, tokenizer_vocab);
  // A dry run plans for the configured device without needing it: an 8B
  // config for a GPU is checked on a laptop.
  const bool gpu_visible = torch::cuda::is_available();
  const c10::Device device = c.training.device == config::Device::cuda ||
                                     (c.training.device == config::Device::auto_ && gpu_visible)
                                 ? c10::Device(c10::kCUDA, 0)
                                 : c10::Device(c10::kCPU);
  // Sharding follows the launcher's environment (RANK=0 WORLD_SIZE=8 plans 8 ranks).
  int64_t world = 1;
  try {
    world = distributed::detect_environment().world_size;
  } catch (const distributed::EnvironmentError&) {
  }
  // The checks the Trainer makes once it knows the job, on the planned one.
  config::check_for_run(c, {world, device.is_cuda()});
  // training.memory_plan: auto: planned for this GPU, or an assumed one when none is visible.
  const std::optional<std::string> plan = apply_memory_plan(
      c, model_config,
      {world, device.is_cuda(), gpu_visible ? device_memory_capacity(device) : std::nullopt});
  const kernels::KernelSet kernel_set =
      kernels::resolve_kernels(kernel_toggles(c.kernels), device, compute_dtype(c));

  // Meta tensors carry shapes and dtypes only: nothing is allocated.
  const auto meta = at::TensorOptions().dtype(parameter_dtype(c)).device(c10::kMeta);
  models::Transformer model(model_config, kernel_set, meta, compute_dtype(c));

  DryRunReport report;
  report.num_parameters = model->num_parameters();
  report.active_parameters = model_config.active_parameters();
  const double param_bytes = static_cast<double>(report.num_parameters) *
                             static_cast<double>(c10::elementSize(parameter_dtype(c)));
  std::ostringstream out;
  char billions[32];
  const double count = static_cast<double>(report.num_parameters);
  if (count >= 1e9) {
    std::snprintf(billions, sizeof billions, "%.2f B", count / 1e9);
  } else {
    std::snprintf(billions, sizeof billions, "%.2f M", count / 1e6);
  }
  out << "config: valid\n";
  out << "model: " << (c.model.hf_path.empty() ? c.model.preset : c.model.hf_path) << " ("
      << model_config.family << "), " << model_config.num_layers << " layers, hidden "
      << model_config.hidden_size << ", heads " << model_config.num_heads << "/"
      << model_config.num_kv_heads << " (q/kv), head_dim " << model_config.resolved_head_dim()
      << ", mlp " << model_config.intermediate_size << ", vocab " << model_config.vocab_size
      << (model_config.tie_embeddings ? ", tied embeddings" : "") << "\n";
  out << "parameters: " << with_commas(report.num_parameters) << " (" << billions << ")\n";
  if (model_config.num_experts > 0) {
    const double active = static_cast<double>(report.active_parameters);
    std::snprintf(billions, sizeof billions, "%.2f %s", active >= 1e9 ? active / 1e9 : active / 1e6,
                  active >= 1e9 ? "B" : "M");
    out << "experts: " << model_config.num_experts << " per layer, "
        << model_config.num_experts_per_token << " per token; active parameters per token "
        << with_commas(report.active_parameters) << " (" << billions
        << "; the memory estimate counts every expert)\n";
  }
  if (uses_lora(c)) {
    const models::LoraOptions lora = lora_options(c, models::lora_targets_of(model_config));
    const int64_t adapters = models::lora_parameter_count(model_config, lora);
    std::string targets;
    for (const models::LoraTarget t : lora.targets)
      targets += std::string(targets.empty() ? "" : ", ") + models::lora_target_name(t);
    out << "LoRA: rank " << lora.rank << ", alpha " << lora.alpha << " on " << targets << ": "
        << with_commas(adapters) << " adapter parameters ("
        << static_cast<double>(adapters) * 100.0 / static_cast<double>(report.num_parameters)
        << "% of the base)" << (c.lora.modules_to_save.empty() ? "" : " + modules_to_save")
        << "; the base is frozen in " << c10::toString(base_parameter_dtype(c))
        << " (no gradient, no AdamW state: see the estimate below)\n";
  } else {
    out << "memory (per replica, before activations): weights " << gib(param_bytes) << ", grads "
        << gib(param_bytes) << ", AdamW states " << gib(2 * param_bytes) << " ("
        << c10::toString(parameter_dtype(c)) << " parameters, " << c10::toString(compute_dtype(c))
        << " compute)\n";
  }
  const MemoryEstimate estimate = estimate_memory(model_config, c, world);
  if (plan) out << *plan << "\n";
  out << "memory per GPU (estimate, " << world << (world > 1 ? " ranks sharing the model" : " rank")
      << ", activation checkpointing " << c.training.activation_checkpointing << ", "
      << (c.kernels.fused_linear_cross_entropy
              ? "fused loss " + std::string(config::name_of(c.kernels.flce_mode))
              : std::string("logits materialised"))
      << "): " << estimate.describe() << "\n";
  out << "device: " << device
      << (device.is_cuda() && !gpu_visible ? " (no GPU visible here: planned, not checked)" : "")
      << "\n";
  out << "tokens per optimizer step: "
      << rows_per_micro_batch(c) * c.training.gradient_accumulation_steps * c.data.seq_len << "\n";
  out << "kernels:\n";
  std::istringstream table(kernels::format_selection_table(kernel_set));
  for (std::string line; std::getline(table, line);) out << "  " << line << "\n";
  report.text = out.str();
  return report;
}

}  // namespace liger::trainer
