#include "trainer/export_tokenizer.h"

#include "data/data_error.h"
#include "data/hf_tokenizer_config.h"
#include "data/sentencepiece_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace liger::trainer {
namespace {

// The side files of a tokenizer, copied when its folder has them.
const char* const kSideFiles[] = {"tokenizer_config.json", "special_tokens_map.json",
                                  "chat_template.jinja"};

bool is_file(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

// Byte copies through streams (see trainer/file_util.h on std::filesystem).
void copy_bytes(const std::string& from, const fs::path& to) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  out << in.rdbuf();
  if (!in || !out) throw std::runtime_error("cannot copy " + from + " to " + to.string());
}

json read_json(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  json root = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!root.is_object()) {
    throw data::DataError(path.string() +
                          ": not a JSON object; give the file exactly as the model ships it");
  }
  return root;
}

void write_json(const fs::path& path, const json& value) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << value.dump(2) << "\n";
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

TokenizerExport::TokenizerExport(const config::TrainConfig& config, models::ModelFamily family)
    : config_(config), family_(family) {
  const std::string& path = config.data.tokenizer;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    throw config::ConfigError(
        "the run's tokenizer data.tokenizer = '" + path + "' is not found from " +
        fs::current_path(ec).string() +
        "; run liger-export where the run was started (relative paths are resolved "
        "against the working directory), so that the export gets its tokenizer");
  }
  data::TokenizerOptions options;
  options.bos_token = config.data.bos_token;
  options.eos_token = config.data.eos_token;
  tokenizer_ = data::load_tokenizer(path, options);

  const fs::path folder = data::tokenizer_folder(path);
  if (fs::is_directory(path, ec)) {
    for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
      if (is_file(folder / name)) copies_.push_back({(folder / name).string(), name});
    }
  } else {
    const bool sentencepiece =
        dynamic_cast<const data::SentencePieceTokenizer*>(tokenizer_.get()) != nullptr;
    copies_.push_back({path, sentencepiece ? "tokenizer.model" : "tokenizer.json"});
  }
  for (const char* name : kSideFiles) {
    if (is_file(folder / name)) copies_.push_back({(folder / name).string(), name});
  }
  std::vector<fs::path> generation_sources;
  if (!config.model.hf_path.empty())
    generation_sources.push_back(fs::path(config.model.hf_path) / "generation_config.json");
  generation_sources.push_back(folder / "generation_config.json");
  for (const fs::path& candidate : generation_sources) {
    if (is_file(candidate)) {
      generation_source_ = candidate.string();
      break;
    }
  }
}

TokenizerExport::~TokenizerExport() = default;

std::string TokenizerExport::write(const std::string& out_dir) const {
  std::vector<std::string> copied;
  bool has_config = false;
  for (const Copy& copy : copies_) {
    copy_bytes(copy.from, fs::path(out_dir) / copy.name);
    copied.push_back(copy.name);
    has_config |= copy.name == "tokenizer_config.json";
  }
  std::string out = "tokenizer: " + join(copied) + " copied";
  const std::string config_note = write_tokenizer_config(out_dir, has_config);
  if (!config_note.empty()) out += "; " + config_note;
  return out + "; " + write_generation_config(out_dir);
}

// data.bos_token / data.eos_token into the copied files, or a whole
// tokenizer_config.json where none was copied. Returns what it did ("" = nothing).
std::string TokenizerExport::write_tokenizer_config(const std::string& out_dir, bool copied) const {
  const data::Tokenizer& tok = *tokenizer_;
  const fs::path config_path = fs::path(out_dir) / "tokenizer_config.json";
  if (copied) {
    if (config_.data.bos_token.empty() && config_.data.eos_token.empty()) return "";
    // special_tokens_map.json overrides tokenizer_config.json in transformers' legacy merge: both.
    for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
      const fs::path file = fs::path(out_dir) / name;
      if (!is_file(file)) continue;
      json root = read_json(file);
      const bool is_config = std::string(name) == "tokenizer_config.json";
      if (!config_.data.bos_token.empty() && (is_config || root.contains("bos_token"))) {
        root["bos_token"] = config_.data.bos_token;
      }
      if (!config_.data.eos_token.empty() && (is_config || root.contains("eos_token"))) {
        root["eos_token"] = config_.data.eos_token;
      }
      write_json(file, root);
    }
    return "data.bos_token/eos_token written into tokenizer_config.json";
  }
  json root = json::object();
  auto special = [&](const char* key, int32_t id) {
    root[key] = id >= 0 ? json(tok.token_text(id)) : json(nullptr);
  };
  if (const auto* sp = dynamic_cast<const data::SentencePieceTokenizer*>(&tok)) {
    // What transformers' LlamaTokenizer needs to encode as SentencePiece does.
    root["tokenizer_class"] = "LlamaTokenizer";
    special("unk_token", sp->unk_id());
    root["add_bos_token"] = config_.data.add_bos;
    root["add_eos_token"] = false;
    root["add_prefix_space"] = sp->adds_dummy_prefix();
    root["legacy"] = false;
  } else {
    root["tokenizer_class"] = "PreTrainedTokenizerFast";
  }
  special("bos_token", tok.bos_id());
  special("eos_token", tok.eos_id());
  root["clean_up_tokenization_spaces"] = false;
  write_json(config_path, root);
  return "tokenizer_config.json written (" + root["tokenizer_class"].get<std::string>() + ")";
}

std::string TokenizerExport::write_generation_config(const std::string& out_dir) const {
  const data::Tokenizer& tok = *tokenizer_;
  json root = json::object();
  if (!generation_source_.empty()) {
    root = read_json(generation_source_);
  } else {
    if (family_ == models::ModelFamily::llama) {
      root["do_sample"] = true;
      root["temperature"] = 0.6;
      root["top_p"] = 0.9;
    }
    const data::HfSpecialToken pad =
        data::read_hf_tokenizer_config(data::tokenizer_folder(config_.data.tokenizer)).pad;
    if (!pad.content.empty() && tok.token_id(pad.content) >= 0)
      root["pad_token_id"] = tok.token_id(pad.content);
  }
  if (!root.contains("bos_token_id") && tok.bos_id() >= 0) root["bos_token_id"] = tok.bos_id();

  // The stop tokens: the file's, then the tokenizer's EOS and end-of-turn token.
  std::vector<int64_t> stops;
  const json eos = root.value("eos_token_id", json());
  if (eos.is_number_integer()) stops.push_back(eos.get<int64_t>());
  if (eos.is_array()) {
    for (const json& id : eos) {
      if (id.is_number_integer()) stops.push_back(id.get<int64_t>());
    }
  }
  std::vector<int64_t> wanted = {tok.eos_id(), tok.token_id("<|eot_id|>"),
                                 tok.token_id("<end_of_turn>"), tok.token_id("<|im_end|>")};
  for (const int64_t id : wanted) {
    if (id >= 0 && std::find(stops.begin(), stops.end(), id) == stops.end()) stops.push_back(id);
  }
  if (stops.size() == 1) root["eos_token_id"] = stops[0];
  if (stops.size() > 1) root["eos_token_id"] = stops;
  write_json(fs::path(out_dir) / "generation_config.json", root);
  std::string ids;
  for (const int64_t id : stops) ids += (ids.empty() ? "" : " ") + std::to_string(id);
  return std::string("generation_config.json ") +
         (generation_source_.empty() ? "written" : "copied") + " (eos " + ids + ")";
}

}  // namespace liger::trainer
