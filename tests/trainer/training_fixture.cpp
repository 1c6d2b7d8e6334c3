#include "tests/trainer/training_fixture.h"

#include "trainer/file_util.h"

#include <torch/torch.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;

namespace liger::testing {

std::string source_dir() {
  const char* dir = std::getenv("LIGER_SOURCE_DIR");
  return dir ? dir : ".";
}

std::string fresh_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("liger-test-" + std::to_string(::getpid())) / name;
  liger::trainer::remove_tree(dir.string());
  fs::create_directories(dir);
  return dir.string();
}

std::string prompt_completion_file() {
  const fs::path path = fs::temp_directory_path() / ("liger-test-" + std::to_string(::getpid())) /
                        "prompt_completion.jsonl";
  if (fs::exists(path)) return path.string();
  fs::create_directories(path.parent_path());
  std::ifstream text(source_dir() + "/data/samples/tinyshakespeare.txt");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(text, line) && lines.size() < 600) {
    if (!line.empty()) lines.push_back(line);
  }
  // Record i: a prompt of (i * 7 % 9) lines (0..8: some records are almost
  // all prompt, some have none), then one completion line.
  std::ofstream out(path);
  size_t next = 0;
  for (int i = 0; next + 10 < lines.size(); ++i) {
    const int prompt_lines = (i * 7) % 9;
    std::string prompt;
    for (int k = 0; k < prompt_lines; ++k) prompt += lines[next++] + "\n";
    nlohmann::json record = {{"prompt", prompt}, {"completion", lines[next++]}};
    out << record.dump() << "\n";
  }
  return path.string();
}

config::TrainConfig tiny_config(const std::string& output_dir,
                                const std::vector<std::string>& overrides) {
  const std::string yaml = R"(
model:
  preset: tiny
  hidden_size: 32
  intermediate_size: 64
  num_layers: 2
  num_heads: 4
  num_kv_heads: 2
  max_seq_len: 64
  tie_embeddings: false
data:
  seq_len: 32
training:
  device: cpu
  steps: 5
  micro_batch_size: 8
  gradient_accumulation_steps: 1
  lr: 0.003
  lr_schedule: cosine
  warmup_steps: 2
  grad_clip: 1.0
  seed: 7
  threads: 1
checkpoint:
  every: 0
  keep_last: 0
  save_final: false
logging:
  every: 1
  level: warn
  progress_bar: off
)";
  std::vector<std::string> all = {
      "data.train=[" + prompt_completion_file() + "]",
      "data.tokenizer=" + source_dir() + "/data/samples/shakespeare_bpe1024.model",
      "checkpoint.output_dir=" + output_dir};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return config::parse_config(yaml, "tiny_test_config", all);
}

double max_relative_difference(const Parameters& a, const Parameters& b) {
  double worst = 0.0;
  for (const auto& [name, value] : b) {
    const at::Tensor other = a.at(name);
    const double scale = std::max(value.norm().item<double>(), 1e-12);
    worst = std::max(worst, (other - value).norm().item<double>() / scale);
  }
  return worst;
}

}  // namespace liger::testing
