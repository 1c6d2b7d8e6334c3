// liger-bench --op attention: the flash attention kernel against cuDNN's and
// PyTorch's flash SDPA at Llama shapes, per mask variant (see bench_attention.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace liger::bench {

struct AttentionBenchOptions {
  std::string dtype = "bf16";  // bf16 or fp16
  int reps = 20, warmup = 5;
  std::string json_path;  // also write the rows here when not empty
  // Only these (empty: all). shapes: llama3-8b, llama3-1b; variants: causal,
  // window, softcap, documents; impls: the table's impl names.
  std::vector<std::string> shapes, variants, impls;
  int documents = 8;      // documents per sequence of the documents variant
  int64_t tokens = 8192;  // the sequence length
  int64_t batch = 1;      // sequences per measurement
};

// Prints the table (and writes the JSON); returns the exit code.
int run_attention_bench(const AttentionBenchOptions& options);

}  // namespace liger::bench
