#include "data/sentencepiece_tokenizer.h"

#include "data/data_error.h"
#include "data/hf_tokenizer_config.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <system_error>

namespace liger::data {

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path,
                                               const TokenizerOptions& options)
    : path_(model_path), processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model_path, ec)) {
    throw DataError(model_path +
                    ": tokenizer file not found; check data.tokenizer (relative paths are "
                    "resolved against the working directory " +
                    std::filesystem::current_path(ec).string() + ")");
  }
  const auto status = processor_->Load(model_path);
  if (!status.ok()) {
    throw DataError(model_path + ": not a valid SentencePiece model (" + status.ToString() +
                    "); give the tokenizer.model file that came with the model, or recreate the "
                    "sample with scripts/make_sample_tokenizer.sh");
  }
  bos_id_ = processor_->bos_id();
  eos_id_ = processor_->eos_id();
  const HfTokenizerConfig folder = read_hf_tokenizer_config(tokenizer_folder(model_path));
  chat_template_ = folder.chat_template;
  chat_template_file_ = folder.chat_template_file;
  adds_bos_ = folder.add_bos_token;
  auto chosen = [&](const std::string& token, const char* key) {
    const int32_t id = token_id(token);
    if (id < 0) {
      throw DataError(std::string(key) + " = '" + token + "': the tokenizer " + model_path +
                      " has no such piece; give a piece of its vocabulary or leave " + key +
                      " empty for the model's own");
    }
    return id;
  };
  auto declared = [&](const HfSpecialToken& token, const char* config_key, const char* key) {
    if (token.content.empty()) return -1;  // declared null: none
    const int32_t id = token_id(token.content);
    if (id < 0) {
      throw DataError(token.file + ": " + config_key + " = \"" + token.content +
                      "\" is not a piece of " + model_path + "; fix the file or set " + key);
    }
    return id;
  };
  if (!options.bos_token.empty()) {
    bos_id_ = chosen(options.bos_token, "data.bos_token");
    bos_source_ = "data.bos_token";
  } else if (folder.bos.declared) {
    bos_id_ = declared(folder.bos, "bos_token", "data.bos_token");
    bos_source_ = std::filesystem::path(folder.bos.file).filename().string();
  }
  if (!options.eos_token.empty()) {
    eos_id_ = chosen(options.eos_token, "data.eos_token");
    eos_source_ = "data.eos_token";
  } else if (folder.eos.declared) {
    eos_id_ = declared(folder.eos, "eos_token", "data.eos_token");
    eos_source_ = std::filesystem::path(folder.eos.file).filename().string();
  }
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int32_t> SentencePieceTokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto status = processor_->Encode(text, &ids);
  if (!status.ok()) {
    throw DataError(path_ + ": SentencePiece could not encode the text (" + status.ToString() +
                    ")");
  }
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  const int64_t vocab = vocab_size();
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab) {
      throw DataError(path_ + ": cannot decode token id " + std::to_string(id) + ": outside [0, " +
                      std::to_string(vocab) + ")");
    }
  }
  std::string text;
  const auto status = processor_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  if (!status.ok()) {
    throw DataError(path_ + ": SentencePiece could not decode (" + status.ToString() + ")");
  }
  return text;
}

int64_t SentencePieceTokenizer::vocab_size() const {
  return processor_->GetPieceSize();
}
int32_t SentencePieceTokenizer::bos_id() const {
  return bos_id_;
}
int32_t SentencePieceTokenizer::eos_id() const {
  return eos_id_;
}

int32_t SentencePieceTokenizer::token_id(const std::string& token) const {
  // PieceToId answers unk_id for unknown pieces: check the spelling round-trips.
  const int id = processor_->PieceToId(token);
  if (id < 0 || id >= processor_->GetPieceSize() || processor_->IdToPiece(id) != token) return -1;
  return id;
}

std::optional<bool> SentencePieceTokenizer::adds_bos() const {
  return adds_bos_;
}

std::string SentencePieceTokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= processor_->GetPieceSize()) return "";
  return processor_->IdToPiece(id);
}

int32_t SentencePieceTokenizer::unk_id() const {
  return processor_->unk_id();
}

bool SentencePieceTokenizer::adds_dummy_prefix() const {
  // The normalizer spec is in the model's protobuf, whose header the library
  // does not install: ask the behaviour instead. "▁" is U+2581.
  const std::vector<int32_t> ids = encode("a");
  return !ids.empty() && token_text(ids[0]).rfind("\xE2\x96\x81", 0) == 0;
}

std::string SentencePieceTokenizer::describe() const {
  auto special = [&](int32_t id, const std::string& source) {
    if (id < 0) return std::string("none");
    return std::to_string(id) + (source == "the model" ? std::string() : " from " + source);
  };
  return "sentencepiece " + path_ + " (vocab " + std::to_string(vocab_size()) + ", bos " +
         special(bos_id(), bos_source_) + ", eos " + special(eos_id(), eos_source_) + ")";
}

}  // namespace liger::data
