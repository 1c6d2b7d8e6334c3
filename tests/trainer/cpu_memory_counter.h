// Counts the bytes of CPU tensors while it lives: the process's CPU allocator
// is replaced by one that keeps a running total and its peak. What a
// training step holds at its peak on the CPU, to compare with the memory
// estimate (the process's peak resident set would count the libraries and
// the data too). One at a time.
#pragma once

#include <c10/core/Allocator.h>

#include <cstdint>

namespace liger::testing {

class CpuMemoryCounter {
 public:
  CpuMemoryCounter();   // installs the counting allocator
  ~CpuMemoryCounter();  // puts the previous one back (tensors it made are still counted when freed)
  CpuMemoryCounter(const CpuMemoryCounter&) = delete;
  CpuMemoryCounter& operator=(const CpuMemoryCounter&) = delete;

  int64_t current() const;  // bytes of live CPU tensors allocated since any counter was installed
  int64_t peak() const;     // the highest current() since construction or reset_peak()
  void reset_peak();

 private:
  c10::Allocator* previous_;
};

}  // namespace liger::testing
