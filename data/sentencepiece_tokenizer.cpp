#include "data/sentencepiece_tokenizer.h"

#include "data/data_error.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <system_error>

namespace liger::data {

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path,
                                               const TokenizerOptions& options)
    : path_(model_path), processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model_path, ec)) {
    throw DataError(model_path + ": tokenizer file not found; check data.tokenizer (relative paths are "
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
  auto chosen = [&](const std::string& token, const char* key) {
    const int32_t id = token_id(token);
    if (id < 0) {
      throw DataError(std::string(key) + " = '" + token + "': the tokenizer " + model_path +
                      " has no such piece; give a piece of its vocabulary or leave " + key +
                      " empty for the model's own");
    }
    return id;
  };
  if (!options.bos_token.empty()) bos_id_ = chosen(options.bos_token, "data.bos_token");
  if (!options.eos_token.empty()) eos_id_ = chosen(options.eos_token, "data.eos_token");
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int32_t> SentencePieceTokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto status = processor_->Encode(text, &ids);
  if (!status.ok()) {
    throw DataError(path_ + ": SentencePiece could not encode the text (" + status.ToString() + ")");
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

int64_t SentencePieceTokenizer::vocab_size() const { return processor_->GetPieceSize(); }
int32_t SentencePieceTokenizer::bos_id() const { return bos_id_; }
int32_t SentencePieceTokenizer::eos_id() const { return eos_id_; }

int32_t SentencePieceTokenizer::token_id(const std::string& token) const {
  // PieceToId answers unk_id for unknown pieces: check the spelling round-trips.
  const int id = processor_->PieceToId(token);
  if (id < 0 || id >= processor_->GetPieceSize() || processor_->IdToPiece(id) != token) return -1;
  return id;
}

std::string SentencePieceTokenizer::describe() const {
  return "sentencepiece " + path_ + " (vocab " + std::to_string(vocab_size()) + ", bos " +
         std::to_string(bos_id()) + ", eos " + std::to_string(eos_id()) + ")";
}

}  // namespace liger::data
