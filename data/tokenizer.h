// Tokenizer: text <-> token ids, behind one interface so that readers and the
// trainer do not care which library tokenizes. load_tokenizer() picks the
// implementation from the path.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace liger::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`; no BOS/EOS is added (readers add them).
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  // Text of `ids`; throws DataError for an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  // Special ids; negative when the tokenizer has none.
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  // The id of the token spelled `token` ("<|eot_id|>", "<start_of_turn>"),
  // or -1 when the vocabulary has no such token. Chat templates use it to
  // place special tokens by id instead of tokenizing their spelling.
  virtual int32_t token_id(const std::string& token) const;
  // One line for the start-up log: "sentencepiece data/x.model (vocab 1024, bos 1, eos 2)".
  virtual std::string describe() const;
};

// Choices the config can make about a tokenizer (data.bos_token, data.eos_token).
struct TokenizerOptions {
  // The BOS / EOS token by its spelling ("<|begin_of_text|>"); empty = the
  // tokenizer's own (for tokenizer.json: tokenizer_config.json beside it, else
  // the post-processor's template, else well-known names).
  std::string bos_token;
  std::string eos_token;
};

// Loads the tokenizer at `path`:
//   *.model                          -> SentencePiece
//   *.json (tokenizer.json)          -> Hugging Face byte-level BPE (GPT-2, Llama 3, Qwen style)
//   a folder with tokenizer.model    -> SentencePiece (a Hugging Face model folder)
//   a folder with only tokenizer.json -> Hugging Face byte-level BPE
// Anything else, a missing file, a corrupt one or an unsupported tokenizer.json
// feature -> DataError naming the path, the feature and what is accepted.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path, const TokenizerOptions& options = {});

}  // namespace liger::data
