#include "trainer/checkpoint.h"

#include "trainer/file_util.h"

#include <torch/torch.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <stdexcept>

namespace fs = std::filesystem;

namespace liger::trainer {
namespace {

constexpr const char* kModelFile = "model.pt";
constexpr const char* kOptimizerFile = "optimizer.pt";
constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kRngFile = "rng.pt";
constexpr const char* kConfigFile = "config.yaml";
constexpr const char* kModelConfigFile = "model_config.json";  // the resolved ModelConfig (export, generate)

// fsync a file or directory so that the rename below publishes durable data.
void sync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw std::runtime_error("cannot open " + path.string() + " to sync it");
  ::fsync(fd);
  ::close(fd);
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path.string() + " (disk full?)");
}

// Parses "step-N" -> N, or -1.
int64_t step_of(const fs::path& dir) {
  static const std::regex pattern("step-([0-9]+)");
  std::smatch match;
  const std::string name = dir.filename().string();
  if (!std::regex_match(name, match, pattern)) return -1;
  return std::stoll(match[1].str());
}

}  // namespace

CheckpointManager::CheckpointManager(std::string output_dir, int64_t keep_last)
    : output_dir_(std::move(output_dir)), keep_last_(keep_last) {}

std::string CheckpointManager::save(int64_t step, models::TransformerImpl& model,
                                    const AdamW& optimizer, const nlohmann::json& trainer_state,
                                    const std::string& resolved_config_yaml) {
  const fs::path root(output_dir_);
  fs::create_directories(root);
  const std::string name = "step-" + std::to_string(step);
  const fs::path final_dir = root / name;
  const fs::path tmp_dir = root / ("." + name + ".tmp-" + std::to_string(::getpid()));
  remove_tree(tmp_dir.string());
  fs::create_directories(tmp_dir);

  {
    torch::serialize::OutputArchive archive;
    for (const auto& item : model.named_parameters()) {
      archive.write(item.key(), item.value().detach().cpu());
    }
    archive.save_to((tmp_dir / kModelFile).string());
  }
  {
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    archive.save_to((tmp_dir / kOptimizerFile).string());
  }
  {
    torch::serialize::OutputArchive archive;
    archive.write("cpu", at::detail::getDefaultCPUGenerator().get_state());
    archive.save_to((tmp_dir / kRngFile).string());
  }
  write_text(tmp_dir / kStateFile, trainer_state.dump(2) + "\n");
  write_text(tmp_dir / kConfigFile, resolved_config_yaml);
  write_text(tmp_dir / kModelConfigFile, models::model_config_to_json(model.config()));
  for (const auto& entry : fs::directory_iterator(tmp_dir)) sync_path(entry.path());
  sync_path(tmp_dir);

  // Publish: an older step-N/ (same step saved again) is moved aside first,
  // then the new one takes its name with one rename.
  fs::path old_dir;
  if (fs::exists(final_dir)) {
    old_dir = root / ("." + name + ".old-" + std::to_string(::getpid()));
    remove_tree(old_dir.string());
    fs::rename(final_dir, old_dir);
  }
  fs::rename(tmp_dir, final_dir);
  sync_path(root);
  if (!old_dir.empty()) remove_tree(old_dir.string());

  if (keep_last_ > 0) {
    auto complete = list();
    while (static_cast<int64_t>(complete.size()) > keep_last_) {
      remove_tree(complete.front());
      complete.erase(complete.begin());
    }
  }
  return final_dir.string();
}

std::vector<std::string> CheckpointManager::list() const {
  std::vector<std::pair<int64_t, std::string>> found;
  if (!fs::is_directory(output_dir_)) return {};
  for (const auto& entry : fs::directory_iterator(output_dir_)) {
    const int64_t step = step_of(entry.path());
    if (step >= 0 && entry.is_directory() && fs::exists(entry.path() / kStateFile)) {
      found.emplace_back(step, entry.path().string());
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  for (auto& item : found) paths.push_back(item.second);
  return paths;
}

std::optional<std::string> CheckpointManager::resolve_resume(const std::string& resume) const {
  if (resume == "none" || resume.empty()) return std::nullopt;
  if (resume == "auto") {
    auto complete = list();
    if (complete.empty()) return std::nullopt;
    return complete.back();
  }
  if (!fs::is_directory(resume) || !fs::exists(fs::path(resume) / kStateFile)) {
    throw std::runtime_error("checkpoint.resume = '" + resume +
                             "' is not a checkpoint directory (expected a step-N/ folder with " +
                             kStateFile + "); use none, auto or a step-N/ path");
  }
  return resume;
}

nlohmann::json CheckpointManager::load(const std::string& dir, models::TransformerImpl& model,
                                       AdamW& optimizer) {
  torch::NoGradGuard no_grad;
  const fs::path root(dir);
  load_model(dir, model);
  {
    torch::serialize::InputArchive archive;
    archive.load_from((root / kOptimizerFile).string());
    optimizer.load(archive);
  }
  {
    torch::serialize::InputArchive archive;
    archive.load_from((root / kRngFile).string());
    Tensor state;
    archive.read("cpu", state);
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the global one
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(state);
  }
  std::ifstream in(root / kStateFile);
  return nlohmann::json::parse(in);
}

void CheckpointManager::load_model(const std::string& dir, models::TransformerImpl& model) {
  torch::NoGradGuard no_grad;
  const fs::path root(dir);
  {
    torch::serialize::InputArchive archive;
    archive.load_from((root / kModelFile).string());
    for (auto& item : model.named_parameters()) {
      Tensor value;
      if (!archive.try_read(item.key(), value)) {
        throw std::runtime_error("checkpoint " + dir + " has no parameter " + item.key() +
                                 ": it was made with another model config");
      }
      if (value.sizes() != item.value().sizes()) {
        throw std::runtime_error("checkpoint " + dir + ": parameter " + item.key() + " has shape " +
                                 c10::str(value.sizes()) + " but the model has " +
                                 c10::str(item.value().sizes()) +
                                 ": it was made with another model config");
      }
      item.value().copy_(value);
    }
  }
}

}  // namespace liger::trainer
