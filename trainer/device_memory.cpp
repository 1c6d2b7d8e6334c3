#include "trainer/device_memory.h"

#include <c10/cuda/CUDACachingAllocator.h>

#include <cuda_runtime_api.h>
#include <sys/resource.h>

#include <string>

namespace liger::trainer {

int64_t peak_memory_bytes(const c10::Device& device) {
  if (device.is_cuda()) {
    const auto stats =
        c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
        .peak;
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

std::optional<double> device_memory_capacity(const c10::Device& device) {
  if (!device.is_cuda()) return std::nullopt;
  cudaDeviceProp props{};
  if (cudaGetDeviceProperties(&props, device.index() < 0 ? 0 : device.index()) != cudaSuccess)
    return std::nullopt;
  return static_cast<double>(props.totalGlobalMem);
}

double device_peak_bf16_flops(const c10::Device& device) {
  if (!device.is_cuda()) return 0.0;
  cudaDeviceProp props{};
  if (cudaGetDeviceProperties(&props, device.index() < 0 ? 0 : device.index()) != cudaSuccess)
    return 0.0;
  const std::string name = props.name;
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos)
    return 989e12;
  if (name.find("A100") != std::string::npos) return 312e12;
  return 0.0;
}

std::string describe_out_of_memory(const std::string& allocator_message) {
  std::string text = allocator_message.substr(0, allocator_message.find('\n'));
  // PyTorch's advice starts with one of these sentences (c10's caching allocator).
  for (const char* advice : {" If reserved but unallocated memory is large",
                             " See documentation for Memory Management"}) {
    const auto at = text.find(advice);
    if (at != std::string::npos) text.erase(at);
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

void reset_peak_memory(const c10::Device& device) {
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
  }
}

}  // namespace liger::trainer
