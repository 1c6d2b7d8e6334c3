// check_files (trainer/preflight.h): every path a config names is checked
// before any work, and a bad one is a config error naming its key.
#include "tests/catch.h"
#include "trainer/config.h"
#include "trainer/file_util.h"
#include "trainer/preflight.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using liger::config::parse_config;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    char name[] = "/tmp/liger_preflight_XXXXXX";
    path = ::mkdtemp(name);
  }
  // remove_tree, not fs::remove_all (trainer/file_util.h says why).
  ~TempDir() { liger::trainer::remove_tree(path.string()); }
};

void touch(const fs::path& file, const std::string& text = "x") {
  fs::create_directories(file.parent_path());
  std::ofstream(file) << text;
}

// The message check_files throws for these overrides ("" when it passes).
std::string error_of(const std::vector<std::string>& overrides) {
  try {
    liger::trainer::check_files(parse_config("", "preflight.yaml", overrides));
  } catch (const liger::config::ConfigError& error) {
    return error.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("check_files passes a config whose paths exist") {
  TempDir dir;
  touch(dir.path / "train.txt");
  touch(dir.path / "tok" / "tokenizer.json");
  touch(dir.path / "hf" / "config.json");
  touch(dir.path / "hf" / "model.safetensors");
  touch(dir.path / "run" / "step-2" / "trainer_state.json");
  const std::string d = dir.path.string();
  CHECK(error_of({"data.train=[" + d + "/train.txt]", "data.tokenizer=" + d + "/tok",
                  "model.hf_path=" + d + "/hf", "checkpoint.output_dir=" + d + "/new/run",
                  "checkpoint.resume=" + d + "/run/step-2"}) == "");
}

TEST_CASE("check_files names the key of a bad path and what to do") {
  TempDir dir;
  const std::string d = dir.path.string();
  touch(dir.path / "a_file");
  touch(dir.path / "train.txt");
  const std::string train = "data.train=[" + d + "/train.txt]";

  std::string message = error_of({train, "checkpoint.resume=" + d + "/nowhere"});
  CHECK(contains(message, "checkpoint.resume = '" + d + "/nowhere': no such folder"));
  touch(dir.path / "not_a_checkpoint" / "model.pt");
  message = error_of({train, "checkpoint.resume=" + d + "/not_a_checkpoint"});
  CHECK(contains(message, "not a checkpoint (no trainer_state.json)"));

  message = error_of({train, "checkpoint.output_dir=" + d + "/a_file/run"});
  CHECK(contains(message, "checkpoint.output_dir"));
  CHECK(contains(message, "is a file, not a folder"));

  CHECK(contains(error_of({"data.train=[" + d + "/missing.txt]"}),
                 "data.train = '" + d + "/missing.txt': no such file"));
  CHECK(contains(error_of({"data.train=[" + d + "]"}), "is a folder"));
  CHECK(contains(error_of({train, "data.eval=[" + d + "/missing.jsonl]"}), "data.eval"));
  CHECK(contains(error_of({"data.train=[relative_missing.txt]"}),
                 "resolved against the working directory"));

  CHECK(contains(error_of({train, "data.tokenizer=" + d}),
                 "neither tokenizer.json nor tokenizer.model"));

  fs::create_directories(dir.path / "hf");
  CHECK(contains(error_of({train, "model.hf_path=" + d + "/hf"}), "no config.json"));
  touch(dir.path / "hf" / "config.json");
  CHECK(contains(error_of({train, "model.hf_path=" + d + "/hf"}), "no model.safetensors"));
  touch(dir.path / "hf" / "model.safetensors.index.json",
        R"({"weight_map": {"a": "model-00001-of-00002.safetensors",)"
        R"( "b": "model-00002-of-00002.safetensors"}})");
  touch(dir.path / "hf" / "model-00001-of-00002.safetensors");
  message = error_of({train, "model.hf_path=" + d + "/hf"});
  CHECK(contains(message, "model.hf_path"));
  CHECK(contains(message, "model-00002-of-00002.safetensors"));
  touch(dir.path / "hf" / "model-00002-of-00002.safetensors");
  CHECK(error_of({train, "model.hf_path=" + d + "/hf", "data.tokenizer=" + d + "/train.txt"}) ==
        "");

  fs::create_directories(dir.path / "adapter");
  message = error_of({train, "model.adapter=lora", "model.adapter_path=" + d + "/adapter"});
  CHECK(contains(message, "model.adapter_path"));
  CHECK(contains(message, "adapter_config.json"));
}
