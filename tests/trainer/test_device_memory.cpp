// Device memory facts (trainer/device_memory.h): the out-of-memory line keeps
// the allocator's facts and drops its advice; the CPU peak is the process's
// resident peak and grows with what it touches.
#include "tests/catch.h"
#include "trainer/device_memory.h"

#include <torch/torch.h>

#include <string>

using liger::trainer::describe_out_of_memory;

TEST_CASE("out-of-memory line: the allocator's facts without its advice") {
  // The form of c10's caching-allocator message (LibTorch 2.11), then a stack trace.
  const std::string facts =
      "CUDA out of memory. Tried to allocate 256.00 MiB. GPU 0 has a total capacity of 79.18 GiB "
      "of which "
      "230.19 MiB is free. Including non-PyTorch memory, this process has 78.95 GiB memory in use. "
      "Of the "
      "allocated memory 78.04 GiB is allocated by PyTorch, and 166.51 MiB is reserved by PyTorch "
      "but unallocated.";
  const std::string message =
      facts +
      " If reserved but unallocated memory is large try setting "
      "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
      "to avoid fragmentation.  See documentation for Memory Management  "
      "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)\n"
      "Exception raised from malloc at c10/cuda/CUDACachingAllocator.cpp:1234 (most recent call "
      "first):\n"
      "frame #0: ...";
  CHECK(describe_out_of_memory(message) == facts);
  // Only the documentation pointer after the facts.
  CHECK(describe_out_of_memory(facts + " See documentation for Memory Management (https://x)") ==
        facts);
  // Another form: its first line, unchanged.
  CHECK(describe_out_of_memory(
            "DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes.\nframe") ==
        "DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes.");
  CHECK(describe_out_of_memory("") == "");
}

TEST_CASE("CPU peak memory: the resident peak, which touching memory raises") {
  const c10::Device cpu(c10::kCPU);
  const int64_t before = liger::trainer::peak_memory_bytes(cpu);
  CHECK(before > 0);
  // 256 MiB written (fill touches every page): the resident peak must cover it.
  const torch::Tensor block = torch::ones({64 << 20}, torch::kFloat);
  CHECK(block.sum().item<double>() == double(64 << 20));
  const int64_t after = liger::trainer::peak_memory_bytes(cpu);
  CHECK(after >= before);
  CHECK(after >= int64_t(256) << 20);
  CHECK(liger::trainer::device_peak_bf16_flops(cpu) == 0.0);
}
