#include "trainer/preflight.h"

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

namespace fs = std::filesystem;

namespace liger::trainer {
namespace {

using config::ConfigError;

// " (relative paths are resolved against the working directory D)" for a relative path.
std::string relative_hint(const std::string& path) {
  if (fs::path(path).is_absolute()) return "";
  std::error_code ec;
  return " (relative paths are resolved against the working directory " +
         fs::current_path(ec).string() + ")";
}

[[noreturn]] void fail(const std::string& key, const std::string& value, const std::string& why) {
  throw ConfigError(key + " = '" + value + "': " + why);
}

void check_readable_file(const std::string& key, const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(key, path, "no such file" + relative_hint(path));
  if (fs::is_directory(path, ec)) fail(key, path, "is a folder; list the files themselves");
  if (::access(path.c_str(), R_OK) != 0)
    fail(key, path, std::string("cannot be read (") + std::strerror(errno) + ")");
}

// The folder itself when it exists, else the nearest existing folder above it
// (where create_directories would start) must be writable.
void check_writable_dir(const std::string& key, const std::string& dir) {
  std::error_code ec;
  fs::path probe = fs::absolute(dir, ec);
  while (!probe.empty() && !fs::exists(probe, ec) && probe != probe.parent_path())
    probe = probe.parent_path();
  if (!fs::is_directory(probe, ec)) {
    fail(key, dir, probe.string() + " is a file, not a folder; choose another folder");
  }
  if (::access(probe.c_str(), W_OK | X_OK) != 0) {
    fail(key, dir,
         probe.string() + " is not writable (" + std::strerror(errno) +
             "); choose a folder this user may write");
  }
}

void check_resume(const config::Resume& resume) {
  if (resume.mode != config::ResumeMode::path) return;
  const std::string& dir = resume.path;
  std::error_code ec;
  const char* what_to_do =
      "; give a step-N folder written by liger-train (runs/NAME/step-N), or auto or none";
  if (!fs::is_directory(dir, ec))
    fail("checkpoint.resume", dir, "no such folder" + relative_hint(dir) + what_to_do);
  if (!fs::exists(fs::path(dir) / "trainer_state.json", ec))
    fail("checkpoint.resume", dir,
         std::string("not a checkpoint (no trainer_state.json)") + what_to_do);
}

void check_tokenizer(const std::string& path) {
  if (path.empty()) return;  // the sample tokenizer or the preset's: the tokenizer set-up says
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (!fs::exists(fs::path(path) / "tokenizer.json", ec) &&
        !fs::exists(fs::path(path) / "tokenizer.model", ec)) {
      fail("data.tokenizer", path,
           "the folder has neither tokenizer.json nor tokenizer.model; point data.tokenizer at "
           "the model folder or the tokenizer file");
    }
    return;
  }
  check_readable_file("data.tokenizer", path);
}

void check_hf_folder(const std::string& dir) {
  if (dir.empty()) return;
  std::error_code ec;
  const fs::path root(dir);
  if (!fs::is_directory(root, ec))
    fail("model.hf_path", dir, "no such folder" + relative_hint(dir));
  if (!fs::exists(root / "config.json", ec))
    fail("model.hf_path", dir, "no config.json; give a Hugging Face model folder");
  if (fs::exists(root / "model.safetensors", ec)) return;
  const fs::path index = root / "model.safetensors.index.json";
  if (!fs::exists(index, ec)) {
    fail("model.hf_path", dir,
         "no model.safetensors or model.safetensors.index.json (liger-train reads safetensors "
         "weights; convert .bin weights with transformers' save_pretrained)");
  }
  nlohmann::json parsed;
  try {
    std::ifstream in(index);
    parsed = nlohmann::json::parse(in);
  } catch (const std::exception& error) {
    fail("model.hf_path", dir,
         "model.safetensors.index.json is not valid JSON: " + std::string(error.what()));
  }
  std::set<std::string> shards;
  if (parsed.contains("weight_map") && parsed["weight_map"].is_object()) {
    for (const auto& item : parsed["weight_map"].items()) {
      if (item.value().is_string()) shards.insert(item.value().get<std::string>());
    }
  }
  for (const std::string& shard : shards) {
    if (!fs::exists(root / shard, ec)) {
      fail("model.hf_path", dir,
           "the shard " + shard +
               " listed in model.safetensors.index.json is missing (an incomplete download?)");
    }
  }
}

void check_adapter_folder(const std::string& dir) {
  if (dir.empty()) return;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    fail("model.adapter_path", dir, "no such folder" + relative_hint(dir));
  for (const char* file : {"adapter_config.json", "adapter_model.safetensors"}) {
    if (!fs::exists(fs::path(dir) / file, ec)) {
      fail("model.adapter_path", dir,
           std::string("no ") + file +
               "; give a PEFT adapter folder (liger-export of a LoRA run "
               "writes one)");
    }
  }
}

}  // namespace

void check_files(const config::TrainConfig& config) {
  check_resume(config.checkpoint.resume);
  check_writable_dir("checkpoint.output_dir", config.checkpoint.output_dir);
  // The model folder before the tokenizer, which defaults to the same folder.
  check_hf_folder(config.model.hf_path);
  check_adapter_folder(config.model.adapter_path);
  for (const std::string& file : config.data.train) check_readable_file("data.train", file);
  for (const std::string& file : config.data.eval) check_readable_file("data.eval", file);
  check_tokenizer(config.data.tokenizer);
}

}  // namespace liger::trainer
