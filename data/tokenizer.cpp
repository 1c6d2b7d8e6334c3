#include "data/tokenizer.h"

#include "data/data_error.h"
#include "data/hf_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"

#include <filesystem>
#include <system_error>

namespace liger::data {

namespace fs = std::filesystem;

std::string Tokenizer::describe() const {
  return "tokenizer (vocab " + std::to_string(vocab_size()) + ", bos " + std::to_string(bos_id()) +
         ", eos " + std::to_string(eos_id()) + ")";
}

int32_t Tokenizer::token_id(const std::string&) const {
  return -1;
}

std::string Tokenizer::token_text(int32_t) const {
  return "";
}

std::optional<bool> Tokenizer::adds_bos() const {
  return std::nullopt;
}

namespace {

const char* const kAccepted =
    "data.tokenizer takes a SentencePiece .model file, a Hugging Face tokenizer.json (byte-level "
    "BPE: "
    "GPT-2, Llama 3, Qwen style) or a model folder that holds tokenizer.model or tokenizer.json";

bool has_suffix(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path,
                                          const TokenizerOptions& options) {
  std::error_code ec;
  if (path.empty()) {
    throw DataError(std::string("no tokenizer given; ") + kAccepted);
  }
  if (fs::is_directory(path, ec)) {
    // A model folder: tokenizer.json, as transformers prefers, when it is a
    // byte-level BPE; else tokenizer.model (Llama 2, Mistral and Gemma ship
    // both files, and their tokenizer.json is not byte-level).
    const fs::path model = fs::path(path) / "tokenizer.model";
    const fs::path json = fs::path(path) / "tokenizer.json";
    const bool has_model = fs::exists(model, ec);
    const bool has_json = fs::exists(json, ec);
    if (has_json && (!has_model || is_byte_level_bpe(json.string()))) {
      return std::make_unique<HfBpeTokenizer>(json.string(), options);
    }
    if (has_model) {
      return std::make_unique<SentencePieceTokenizer>(model.string(), options);
    }
    throw DataError(path + ": the folder has neither tokenizer.model nor tokenizer.json; " +
                    kAccepted);
  }
  if (has_suffix(path, ".model")) {
    return std::make_unique<SentencePieceTokenizer>(path, options);
  }
  if (has_suffix(path, ".json")) {
    return std::make_unique<HfBpeTokenizer>(path, options);
  }
  throw DataError(path + ": unknown tokenizer file type '" + fs::path(path).extension().string() +
                  "'; " + kAccepted);
}

}  // namespace liger::data
