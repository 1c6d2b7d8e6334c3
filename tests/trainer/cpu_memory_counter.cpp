#include "tests/trainer/cpu_memory_counter.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>

namespace liger::testing {
namespace {

// Never destroyed: tensors may be freed after any counter is gone.
struct Counts {
  std::mutex mutex;
  std::unordered_map<void*, size_t> sizes;
  int64_t current = 0, peak = 0;
};
Counts& counts() {
  static Counts* instance = new Counts;
  return *instance;
}

void counted_free(void* data) {
  if (data == nullptr) return;
  {
    Counts& c = counts();
    std::lock_guard<std::mutex> lock(c.mutex);
    const auto it = c.sizes.find(data);
    if (it != c.sizes.end()) {
      c.current -= static_cast<int64_t>(it->second);
      c.sizes.erase(it);
    }
  }
  c10::free_cpu(data);
}

class CountingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    void* data = c10::alloc_cpu(bytes);
    if (data != nullptr) {
      Counts& c = counts();
      std::lock_guard<std::mutex> lock(c.mutex);
      c.sizes[data] = bytes;
      c.current += static_cast<int64_t>(bytes);
      c.peak = std::max(c.peak, c.current);
    }
    return {data, data, &counted_free, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &counted_free; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

// Above the default allocator's registration priority, so that it takes effect.
constexpr uint8_t kPriority = 100;

}  // namespace

CpuMemoryCounter::CpuMemoryCounter() : previous_(c10::GetCPUAllocator()) {
  static CountingAllocator* allocator = new CountingAllocator;
  c10::SetCPUAllocator(allocator, kPriority);
  reset_peak();
}

CpuMemoryCounter::~CpuMemoryCounter() {
  c10::SetCPUAllocator(previous_, kPriority);
}

int64_t CpuMemoryCounter::current() const {
  Counts& c = counts();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.current;
}

int64_t CpuMemoryCounter::peak() const {
  Counts& c = counts();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.peak;
}

void CpuMemoryCounter::reset_peak() {
  Counts& c = counts();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.peak = c.current;
}

}  // namespace liger::testing
