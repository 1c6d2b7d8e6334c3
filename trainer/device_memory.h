// Peak memory of the training device: the CUDA caching allocator's peak on a
// GPU, the process's peak resident set on the CPU.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>

namespace liger::trainer {

int64_t peak_memory_bytes(const c10::Device& device);
void reset_peak_memory(const c10::Device& device);

}  // namespace liger::trainer
