// Tokenizer: text <-> token ids, behind one interface so that readers and the
// trainer do not care which library tokenizes. load_tokenizer() picks the
// implementation from the path.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace liger::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`; no BOS/EOS is added (readers add them). Safe to call
  // from several threads at once (pre-tokenizing does).
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
  // The spelling of `id` in the vocabulary ("<|eot_id|>", "Ġthe", "▁the");
  // "" when the id has none.
  virtual std::string token_text(int32_t id) const;
  // One line for the start-up log: "sentencepiece data/x.model (vocab 1024, bos 1, eos 2)".
  virtual std::string describe() const;
  // Whether transformers' tokenizer of the same files puts BOS first when it
  // encodes (tokenizer.json: its post-processor; tokenizer.model:
  // tokenizer_config.json's add_bos_token); nullopt when the files do not say.
  virtual std::optional<bool> adds_bos() const;

  // The chat template the tokenizer's folder declares (Jinja source, "" for
  // none; see data/hf_tokenizer_config.h) and the file it is in.
  const std::string& chat_template() const { return chat_template_; }
  const std::string& chat_template_file() const { return chat_template_file_; }

 protected:
  std::string chat_template_;
  std::string chat_template_file_;
};

// Choices the config can make about a tokenizer (data.bos_token, data.eos_token).
struct TokenizerOptions {
  // The BOS / EOS token by its spelling ("<|begin_of_text|>"); empty = the
  // tokenizer's own: what tokenizer_config.json / special_tokens_map.json
  // beside it declare (data/hf_tokenizer_config.h), else for tokenizer.json
  // the post-processor's template, then well-known names, and for a
  // SentencePiece model its own bos/eos ids.
  std::string bos_token;
  std::string eos_token;
};

// Loads the tokenizer at `path`:
//   *.model                          -> SentencePiece
//   *.json (tokenizer.json)          -> Hugging Face byte-level BPE (GPT-2, Llama 3, Qwen style)
//   a folder (a Hugging Face model folder) -> its tokenizer.json when that is a byte-level BPE
//                                       (transformers prefers tokenizer.json too), else its
//                                       tokenizer.model (Llama 2, Mistral and Gemma ship both,
//                                       and their tokenizer.json is not byte-level)
// The special tokens and chat template come from the side files of the
// tokenizer's folder (data/hf_tokenizer_config.h) unless `options` name them.
// Anything else, a missing file, a corrupt one or an unsupported tokenizer.json
// feature -> DataError naming the path, the feature and what is accepted.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path,
                                          const TokenizerOptions& options = {});

}  // namespace liger::data
