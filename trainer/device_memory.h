// Peak memory of the training device: the CUDA caching allocator's peak on a
// GPU, the process's peak resident set on the CPU.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <string>

namespace liger::trainer {

int64_t peak_memory_bytes(const c10::Device& device);
void reset_peak_memory(const c10::Device& device);
// The memory of a CUDA device in bytes (what the GPU reports, all of it);
// nullopt for the CPU or a GPU that cannot be queried.
std::optional<double> device_memory_capacity(const c10::Device& device);
// Dense bf16 peak FLOP/s of the device, from its name (H100/H200: 989e12,
// A100: 312e12); 0 when unknown (cpu, other GPUs).
double device_peak_bf16_flops(const c10::Device& device);
// The facts of an allocator's out-of-memory message (its first line: what was
// asked for, what the device holds and has free), without PyTorch's advice on
// allocator settings and documentation links that follow them: the trainer's
// own message goes on with the estimate and the switches that cut memory.
// A message of another form comes back as its first line.
std::string describe_out_of_memory(const std::string& allocator_message);

}  // namespace liger::trainer
