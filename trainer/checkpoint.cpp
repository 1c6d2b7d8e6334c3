#include "trainer/checkpoint.h"

#include "trainer/file_util.h"

#include <torch/torch.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <stdexcept>
#include <system_error>
#include <unordered_map>

namespace fs = std::filesystem;

namespace liger::trainer {
namespace {

const std::string kModelStem = "model";          // model.pt, or model.rank-R.pt when sharded
const std::string kOptimizerStem = "optimizer";  // same
const std::string kRngStem = "rng";              // same
constexpr const char* kShardIndexFile = "shards.json";
constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kConfigFile = "config.yaml";
constexpr const char* kModelConfigFile =
    "model_config.json";  // the resolved ModelConfig (export, generate)

[[noreturn]] void throw_errno(int error, const std::string& what) {
  throw std::system_error(error, std::generic_category(), what);
}

// fsync a file or directory so that the rename below publishes durable data.
void sync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw_errno(errno, "cannot open " + path.string() + " to sync it");
  const int synced = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (synced != 0) throw_errno(error, "cannot sync " + path.string());
}

// Writes bytes to `path` through `produce(write)`, which calls write(data, size)
// as often as it likes. The first failure (errno) is kept and later writes are
// dropped, so the producer always finishes; then the error is thrown. torch's
// OutputArchive::save_to(path) is not used: on a full disk its writer throws
// from a destructor, which ends the process with a stack dump.
void write_file(
    const fs::path& path,
    const std::function<void(const std::function<void(const void*, size_t)>&)>& produce) {
  FILE* file = std::fopen(path.c_str(), "wb");
  if (!file) throw_errno(errno, "cannot create " + path.string());
  int error = 0;
  produce([&](const void* data, size_t size) {
    if (error == 0 && size > 0 && std::fwrite(data, 1, size, file) != size) {
      error = errno != 0 ? errno : EIO;
    }
  });
  if (std::fflush(file) != 0 && error == 0) error = errno;
  if (error == 0 && ::fsync(::fileno(file)) != 0) error = errno;
  if (std::fclose(file) != 0 && error == 0) error = errno;
  if (error != 0) throw_errno(error, "cannot write " + path.string());
}

void write_archive(const fs::path& path, torch::serialize::OutputArchive& archive) {
  write_file(path, [&archive](const std::function<void(const void*, size_t)>& write) {
    archive.save_to([&write](const void* data, size_t size) -> size_t {
      write(data, size);
      return size;  // always "written": the archive must reach its end (see write_file)
    });
  });
}

void write_text(const fs::path& path, const std::string& text) {
  write_file(path, [&text](const std::function<void(const void*, size_t)>& write) {
    write(text.data(), text.size());
  });
}

// "12.3 MiB free on DIR" (or nothing when the file system cannot say).
std::string free_space(const fs::path& dir) {
  std::error_code error;
  const fs::space_info space = fs::space(dir, error);
  if (error) return "";
  char text[64];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(space.available) / (1 << 20));
  return std::string(text) + " free on " + dir.string();
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
  NamedTensors parameters;
  for (const auto& item : model.named_parameters())
    parameters.emplace_back(item.key(), item.value());
  return save(step, parameters, model.config(), optimizer, trainer_state, resolved_config_yaml);
}

std::string CheckpointManager::save(int64_t step, const NamedTensors& parameters,
                                    const models::ModelConfig& model_config, const AdamW& optimizer,
                                    const nlohmann::json& trainer_state,
                                    const std::string& resolved_config_yaml,
                                    const CheckpointScope& scope) {
  const fs::path root(output_dir_);
  const bool leader = scope.rank == 0;
  const std::string name = "step-" + std::to_string(step);
  const fs::path final_dir = root / name;
  // Every rank of a sharded job writes into the same temporary directory.
  const fs::path tmp_dir = root / ("." + name + ".tmp");
  const fs::path old_dir = root / ("." + name + ".old");
  try {
    write_step(step, parameters, model_config, optimizer, trainer_state, resolved_config_yaml,
               scope);
  } catch (const std::exception& error) {
    // Nothing of this attempt stays: the temporary folder goes, and an older
    // step-N/ moved aside for the rename comes back.
    std::error_code ignored;
    // The free space as the write failed, before the clean-up returns some.
    const std::string space = free_space(fs::exists(root, ignored) ? root : root.parent_path());
    if (!fs::exists(final_dir, ignored) && fs::exists(old_dir, ignored))
      fs::rename(old_dir, final_dir, ignored);
    try {
      remove_tree(tmp_dir.string());
    } catch (const std::exception&) {
    }
    const std::vector<std::string> complete = list();
    std::string message = std::string("checkpoint ") + final_dir.string() + " not written: ";
    const std::string what = error.what();
    message += what.substr(0, what.find('\n'));
    if (!space.empty()) message += " (" + space + ")";
    message += complete.empty() ? "; no earlier checkpoint exists"
                                : "; the last good checkpoint is " + complete.back() +
                                      " (checkpoint.resume: auto continues from it)";
    throw CheckpointWriteError(message + "; free space or set checkpoint.output_dir elsewhere");
  }
  if (leader && keep_last_ > 0) {
    auto complete = list();
    while (static_cast<int64_t>(complete.size()) > keep_last_) {
      remove_tree(complete.front());
      complete.erase(complete.begin());
    }
  }
  scope.barrier();  // nobody goes on before the checkpoint is published
  return final_dir.string();
}

void CheckpointManager::write_step(int64_t step, const NamedTensors& parameters,
                                   const models::ModelConfig& model_config, const AdamW& optimizer,
                                   const nlohmann::json& trainer_state,
                                   const std::string& resolved_config_yaml,
                                   const CheckpointScope& scope) const {
  const fs::path root(output_dir_);
  const bool leader = scope.rank == 0;
  const std::string name = "step-" + std::to_string(step);
  const fs::path final_dir = root / name;
  const fs::path tmp_dir = root / ("." + name + ".tmp");
  if (leader) {
    fs::create_directories(root);
    remove_tree(tmp_dir.string());
    fs::create_directories(tmp_dir);
  }
  scope.barrier();

  const std::string suffix =
      scope.sharded() ? ".rank-" + std::to_string(scope.rank) + ".pt" : ".pt";
  {
    torch::serialize::OutputArchive archive;
    for (const auto& [key, value] : parameters) archive.write(key, value.detach().cpu());
    write_archive(tmp_dir / (kModelStem + suffix), archive);
  }
  {
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    write_archive(tmp_dir / (kOptimizerStem + suffix), archive);
  }
  {
    torch::serialize::OutputArchive archive;
    archive.write("cpu", at::detail::getDefaultCPUGenerator().get_state());
    write_archive(tmp_dir / (kRngStem + suffix), archive);
  }
  scope.barrier();  // every rank's files are on disk (write_file syncs each)

  if (leader) {
    if (scope.sharded()) write_text(tmp_dir / kShardIndexFile, scope.shard_index.dump(1) + "\n");
    write_text(tmp_dir / kStateFile, trainer_state.dump(2) + "\n");
    write_text(tmp_dir / kConfigFile, resolved_config_yaml);
    write_text(tmp_dir / kModelConfigFile, models::model_config_to_json(model_config));
    sync_path(tmp_dir);  // the files are synced as written (write_file)

    // Publish: an older step-N/ (same step saved again) is moved aside first,
    // then the new one takes its name with one rename.
    const fs::path old_dir = root / ("." + name + ".old");
    const bool replaces = fs::exists(final_dir);
    if (replaces) {
      remove_tree(old_dir.string());
      fs::rename(final_dir, old_dir);
    }
    fs::rename(tmp_dir, final_dir);
    sync_path(root);
    if (replaces) remove_tree(old_dir.string());
  }
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

std::optional<std::string> CheckpointManager::resolve_resume(const config::Resume& resume) const {
  if (resume.mode == config::ResumeMode::none) return std::nullopt;
  if (resume.mode == config::ResumeMode::auto_) {
    auto complete = list();
    if (complete.empty()) return std::nullopt;
    return complete.back();
  }
  if (!fs::is_directory(resume.path) || !fs::exists(fs::path(resume.path) / kStateFile)) {
    throw std::runtime_error("checkpoint.resume = '" + resume.path +
                             "' is not a checkpoint directory (expected a step-N/ folder with " +
                             kStateFile + "); use none, auto or a step-N/ path");
  }
  return resume.path;
}

nlohmann::json CheckpointManager::load(const std::string& dir, models::TransformerImpl& model,
                                       AdamW& optimizer) {
  NamedTensors parameters;
  for (const auto& item : model.named_parameters())
    parameters.emplace_back(item.key(), item.value());
  return load(dir, parameters, optimizer);
}

namespace {

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return nlohmann::json::parse(in);
}

// Copies each archived tensor into its parameter, checking names and shapes.
void read_parameters(const std::string& dir, const fs::path& file, const NamedTensors& parameters) {
  torch::serialize::InputArchive archive;
  archive.load_from(file.string());
  for (const auto& [key, target] : parameters) {
    Tensor value;
    if (!archive.try_read(key, value)) {
      throw std::runtime_error("checkpoint " + dir + " has no parameter " + key +
                               ": it was made with another model config");
    }
    if (value.sizes() != target.sizes()) {
      throw std::runtime_error("checkpoint " + dir + ": parameter " + key + " has shape " +
                               c10::str(value.sizes()) + " but the model has " +
                               c10::str(target.sizes()) +
                               ": it was made with another model config");
    }
    target.detach().copy_(value);
  }
}

}  // namespace

nlohmann::json CheckpointManager::load(const std::string& dir, const NamedTensors& parameters,
                                       AdamW& optimizer, const CheckpointScope& scope) {
  torch::NoGradGuard no_grad;
  const fs::path root(dir);
  const bool saved_sharded = fs::exists(root / kShardIndexFile);
  std::string suffix = ".pt";
  if (saved_sharded || scope.sharded()) {
    const int64_t saved_world =
        saved_sharded ? read_json(root / kShardIndexFile).at("world_size").get<int64_t>() : 1;
    if (!saved_sharded || !scope.sharded() || saved_world != scope.world_size) {
      throw std::runtime_error(
          "checkpoint " + dir + " was written by " + std::to_string(saved_world) + " rank(s)" +
          (saved_sharded ? " (sharded)" : "") + " but this job has " +
          std::to_string(scope.world_size) + ": resume it with " + std::to_string(saved_world) +
          " rank(s), or export it (liger-export) and start from the export with model.hf_path");
    }
    suffix = ".rank-" + std::to_string(scope.rank) + ".pt";
  }
  read_parameters(dir, root / (kModelStem + suffix), parameters);
  {
    torch::serialize::InputArchive archive;
    archive.load_from((root / (kOptimizerStem + suffix)).string());
    optimizer.load(archive);
  }
  {
    torch::serialize::InputArchive archive;
    archive.load_from((root / (kRngStem + suffix)).string());
    Tensor state;
    archive.read("cpu", state);
    at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle to the global one
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(state);
  }
  return read_json(root / kStateFile);
}

NamedTensors CheckpointManager::read_whole_parameters(const std::string& dir) {
  const fs::path root(dir);
  NamedTensors out;
  if (!fs::exists(root / kShardIndexFile)) {
    torch::serialize::InputArchive archive;
    archive.load_from((root / (kModelStem + ".pt")).string());
    for (const auto& key : archive.keys()) {
      Tensor value;
      archive.read(key, value);
      out.emplace_back(key, value);
    }
    return out;
  }
  // Sharded: parameter p is the concatenation on dim 0 of every rank's shard,
  // without the padding rows at the end (shards.json has the full shapes).
  const nlohmann::json index = read_json(root / kShardIndexFile);
  const int64_t world = index.at("world_size").get<int64_t>();
  std::vector<torch::serialize::InputArchive> archives(static_cast<size_t>(world));
  for (int64_t r = 0; r < world; ++r) {
    const fs::path file = root / (kModelStem + ".rank-" + std::to_string(r) + ".pt");
    if (!fs::exists(file)) {
      throw std::runtime_error("checkpoint " + dir + " is sharded over " + std::to_string(world) +
                               " ranks but " + file.filename().string() + " is missing");
    }
    archives[static_cast<size_t>(r)].load_from(file.string());
  }
  for (const auto& [key, entry] : index.at("parameters").items()) {
    const auto shape = entry.at("shape").get<std::vector<int64_t>>();
    std::vector<Tensor> shards;
    for (auto& archive : archives) {
      Tensor shard;
      if (!archive.try_read(key, shard)) {
        throw std::runtime_error("checkpoint " + dir + ": a rank file has no shard of " + key);
      }
      shards.push_back(shard);
    }
    out.emplace_back(key, at::cat(shards, 0).narrow(0, 0, shape[0]).contiguous());
  }
  return out;
}

void CheckpointManager::load_model(const std::string& dir, models::TransformerImpl& model) {
  torch::NoGradGuard no_grad;
  std::unordered_map<std::string, Tensor> saved;
  for (auto& [key, value] : read_whole_parameters(dir)) saved.emplace(key, value);
  for (auto& item : model.named_parameters()) {
    const auto found = saved.find(item.key());
    if (found == saved.end()) {
      throw std::runtime_error("checkpoint " + dir + " has no parameter " + item.key() +
                               ": it was made with another model config");
    }
    if (found->second.sizes() != item.value().sizes()) {
      throw std::runtime_error("checkpoint " + dir + ": parameter " + item.key() + " has shape " +
                               c10::str(found->second.sizes()) + " but the model has " +
                               c10::str(item.value().sizes()) +
                               ": it was made with another model config");
    }
    item.value().copy_(found->second);
  }
}

}  // namespace liger::trainer
