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
  // BOS/EOS: the options' tokens, else those the side files beside the model
  // declare (tokenizer_config.json, special_tokens_map.json: a Hugging Face
  // folder; data/hf_tokenizer_config.h), else the model's own ids.
  explicit SentencePieceTokenizer(const std::string& model_path,
                                  const TokenizerOptions& options = {});
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  int32_t token_id(const std::string& token) const override;
  std::string token_text(int32_t id) const override;
  std::string describe() const override;
  std::optional<bool> adds_bos() const override;

  // The model's unknown-piece id (-1 when it has none).
  int32_t unk_id() const;
  // Whether the model puts "▁" before the text (SentencePiece's
  // add_dummy_prefix; transformers' add_prefix_space).
  bool adds_dummy_prefix() const;

 private:
  std::string path_;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  std::string bos_source_ = "the model", eos_source_ = "the model";
  std::optional<bool> adds_bos_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace liger::data
