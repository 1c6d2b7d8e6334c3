// From config to the things a run is built from: the device, the dtypes, the
// resolved ModelConfig and the kernel selection.
#pragma once

#include "kernels/registry.h"
#include "models/model_config.h"
#include "trainer/config.h"
#include "trainer/logging/log.h"

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <optional>

namespace liger::trainer {

// training.device: auto -> cuda when a GPU is visible. cuda without a GPU
// is an error that says so. On cuda the process uses GPU `local_rank` (one
// rank per GPU) and makes it the current device.
c10::Device resolve_device(config::Device device, int64_t local_rank = 0);

// fp32 -> kFloat, bf16 -> kBFloat16, fp16 -> kHalf.
c10::ScalarType scalar_type(config::Dtype dtype);
// training.precision, else model.dtype -> compute dtype.
c10::ScalarType compute_dtype(const config::TrainConfig& config);
// fp32 master weights when training.master_weights and compute is 16-bit.
c10::ScalarType parameter_dtype(const config::TrainConfig& config);
// Whether the model runs on 16-bit compute copies of fp32 parameters
// (trainer/compute_copies.h): fp32 parameters with 16-bit compute, one
// process. Over several micro-batches each one's 16-bit gradients are folded
// into fp32 sums (AdamW::fold_copy_gradients), never summed in 16 bits.
bool uses_compute_copies(const config::TrainConfig& config, int64_t world_size);

// The preset with the model.* overrides applied, or, with model.hf_path,
// the checkpoint's config.json (overriding its architecture is an error). `tokenizer_vocab` fills
// vocab_size when neither the preset nor the config give one, and must fit
// in the model's vocabulary. Throws config::ConfigError naming the key.
models::ModelConfig resolve_model_config(const config::TrainConfig& config,
                                         std::optional<int64_t> tokenizer_vocab);

kernels::KernelToggles kernel_toggles(const config::KernelsSection& kernels);

// logging.level -> the logging facade's level.
log::Level log_level(config::LogLevel level);

}  // namespace liger::trainer
