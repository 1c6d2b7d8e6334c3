#include "data/tokenizer.h"

#include "data/data_error.h"
#include "data/sentencepiece_tokenizer.h"

#include <filesystem>
#include <system_error>

namespace liger::data {

namespace fs = std::filesystem;

std::string Tokenizer::describe() const {
  return "tokenizer (vocab " + std::to_string(vocab_size()) + ", bos " + std::to_string(bos_id()) +
         ", eos " + std::to_string(eos_id()) + ")";
}

namespace {

const char* const kAccepted =
    "data.tokenizer takes a SentencePiece .model file or a model folder that holds tokenizer.model";
const char* const kJsonPlanned = "Hugging Face tokenizer.json is not supported yet (planned: issue 7)";

bool has_suffix(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  std::error_code ec;
  if (path.empty()) {
    throw DataError(std::string("no tokenizer given; ") + kAccepted + "; " + kJsonPlanned);
  }
  if (fs::is_directory(path, ec)) {
    const fs::path model = fs::path(path) / "tokenizer.model";
    if (fs::exists(model, ec)) {
      return std::make_unique<SentencePieceTokenizer>(model.string());
    }
    const bool has_json = fs::exists(fs::path(path) / "tokenizer.json", ec);
    throw DataError(path + ": the folder has no tokenizer.model" +
                    (has_json ? std::string(", only tokenizer.json; ") + kJsonPlanned : std::string()) +
                    "; " + kAccepted);
  }
  if (has_suffix(path, ".model")) {
    return std::make_unique<SentencePieceTokenizer>(path);
  }
  if (has_suffix(path, ".json")) {
    throw DataError(path + ": " + kJsonPlanned + "; for now " + kAccepted);
  }
  throw DataError(path + ": unknown tokenizer file type '" + fs::path(path).extension().string() +
                  "'; " + kAccepted + "; " + kJsonPlanned);
}

}  // namespace liger::data
