// liger-export: a training checkpoint -> a Hugging Face model folder
// (config.json + safetensors, sharded past --max-shard-mb, the run's tokenizer
// files and generation_config.json) that transformers' from_pretrained loads.
// Argument parsing and wiring only.
//
//   liger-export --checkpoint runs/tiny/step-400 --out exported/ [--dtype auto|fp32|bf16|fp16]
//   liger-export --checkpoint runs/lora/step-400 --out adapter/          # a LoRA run: a PEFT
//   adapter folder liger-export --checkpoint runs/lora/step-400 --out merged/ --merge   # or the
//   merged model
#include "trainer/export.h"

#include <CLI/CLI.hpp>

#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace {

std::string first_line(const std::string& message) {
  const auto newline = message.find('\n');
  return newline == std::string::npos ? message : message.substr(0, newline);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"liger-export: write a liger-train checkpoint as a Hugging Face model folder"};
  std::string checkpoint, out, dtype = "auto";
  double max_shard_mb = 5.0 * 1024;
  bool merge = false;
  app.add_option("--checkpoint", checkpoint, "checkpoint folder (runs/NAME/step-N)")->required();
  app.add_option("--out", out, "output folder (created; earlier model weights in it are replaced)")
      ->required();
  std::vector<std::string> dtype_choices = {"auto"};
  for (const std::string& name : liger::config::enum_input_names<liger::config::Dtype>())
    dtype_choices.push_back(name);
  app.add_option("--dtype", dtype, "storage dtype: auto (the run's model.dtype), fp32, bf16, fp16")
      ->check(CLI::IsMember(dtype_choices));
  app.add_option("--max-shard-mb", max_shard_mb,
                 "split the weights into shards of at most this size (MiB)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--merge", merge,
               "LoRA checkpoints: write the merged model (W + alpha/rank B A) instead of a PEFT "
               "adapter folder");
  CLI11_PARSE(app, argc, argv);
  try {
    const int64_t max_shard_bytes = static_cast<int64_t>(max_shard_mb * 1024 * 1024);
    // auto: the checkpoint's dtype (nullopt); else the dtype of that name.
    const std::optional<liger::config::Dtype> storage =
        liger::config::enum_from_name<liger::config::Dtype>(dtype);
    std::cout << liger::trainer::export_checkpoint(checkpoint, out, storage, max_shard_bytes, merge)
              << "\n";
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "error: " << first_line(error.what()) << "\n";
  }
  return 1;
}
