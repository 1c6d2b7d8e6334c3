#include "data/hf_tokenizer_config.h"

#include "data/data_error.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

namespace liger::data {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path.string() + ": cannot read the file; check its permissions");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The JSON object in `path`, or null when the file does not exist.
json read_object(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return json();
  json root;
  try {
    root = json::parse(read_text(path));
  } catch (const json::parse_error& error) {
    throw DataError(path.string() + ": not valid JSON (" + error.what() +
                    "); give the file exactly as the model ships it, or remove it");
  }
  if (!root.is_object()) {
    throw DataError(path.string() +
                    ": expected a JSON object; give the file exactly as the model ships it");
  }
  return root;
}

// "bos_token": "<s>" | {"content": "<s>", ...} | null; anything else is a DataError.
void read_special(const json& root, const char* key, const fs::path& file, HfSpecialToken& out) {
  const auto it = root.find(key);
  if (it == root.end()) return;
  HfSpecialToken token;
  token.declared = true;
  token.file = file.string();
  if (it->is_string()) {
    token.content = it->get<std::string>();
  } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    token.content = (*it)["content"].get<std::string>();
  } else if (!it->is_null()) {
    throw DataError(file.string() + ": " + key + " = " + it->dump() +
                    " is not a token; expected a string, {\"content\": ...} or null");
  }
  out = token;
}

std::optional<bool> read_flag(const json& root, const char* key, const fs::path& file) {
  const auto it = root.find(key);
  if (it == root.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) {
    throw DataError(file.string() + ": " + key + " = " + it->dump() + " is not true or false");
  }
  return it->get<bool>();
}

// tokenizer_config.json's chat_template: a string, or [{"name", "template"}] (the "default" one).
std::string read_chat_template(const json& root) {
  const auto it = root.find("chat_template");
  if (it == root.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const json& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
  }
  return "";
}

}  // namespace

std::string tokenizer_folder(const std::string& tokenizer_path) {
  std::error_code ec;
  if (fs::is_directory(tokenizer_path, ec)) return tokenizer_path;
  const fs::path parent = fs::path(tokenizer_path).parent_path();
  return parent.empty() ? "." : parent.string();
}

HfTokenizerConfig read_hf_tokenizer_config(const std::string& folder) {
  HfTokenizerConfig out;
  out.folder = folder;
  const fs::path config_path = fs::path(folder) / "tokenizer_config.json";
  const json config = read_object(config_path);
  if (config.is_object()) {
    read_special(config, "bos_token", config_path, out.bos);
    read_special(config, "eos_token", config_path, out.eos);
    read_special(config, "pad_token", config_path, out.pad);
    out.add_bos_token = read_flag(config, "add_bos_token", config_path);
    out.add_eos_token = read_flag(config, "add_eos_token", config_path);
    out.chat_template = read_chat_template(config);
    if (!out.chat_template.empty()) out.chat_template_file = config_path.string();
  }
  // transformers merges special_tokens_map.json only into configs without added_tokens_decoder.
  if (!config.is_object() || !config.contains("added_tokens_decoder")) {
    const fs::path map_path = fs::path(folder) / "special_tokens_map.json";
    const json map = read_object(map_path);
    if (map.is_object()) {
      read_special(map, "bos_token", map_path, out.bos);
      read_special(map, "eos_token", map_path, out.eos);
      read_special(map, "pad_token", map_path, out.pad);
    }
  }
  const fs::path jinja_path = fs::path(folder) / "chat_template.jinja";
  std::error_code ec;
  if (fs::is_regular_file(jinja_path, ec)) {
    out.chat_template = read_text(jinja_path);
    out.chat_template_file = jinja_path.string();
  }
  return out;
}

}  // namespace liger::data
