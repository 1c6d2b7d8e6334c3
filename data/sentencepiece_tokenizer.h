// SentencePieceTokenizer: a Tokenizer over a SentencePiece .model file (Llama 2,
// Mistral, Gemma, the shipped Shakespeare sample). The library's headers stay in
// the .cpp so that users of this header do not need them.
#pragma once

#include "data/tokenizer.h"

#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace liger::data {

class SentencePieceTokenizer : public Tokenizer {
 public:
  // Loads `model_path`; DataError naming the path when it is missing or not a
  // model, or when options name a BOS/EOS token the model does not have.
  explicit SentencePieceTokenizer(const std::string& model_path, const TokenizerOptions& options = {});
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  int32_t token_id(const std::string& token) const override;
  std::string describe() const override;

 private:
  std::string path_;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace liger::data
