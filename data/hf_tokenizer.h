// HfBpeTokenizer: a Tokenizer over a Hugging Face tokenizer.json whose model is
// a byte-level BPE (GPT-2, Llama 3, Qwen style). It reproduces what the Python
// `tokenizers` package does for encode(text, add_special_tokens=False) and
// decode(ids, skip_special_tokens=False); tests/data/bpe_oracle.py checks that.
//
// Supported (anything else is a DataError naming the feature and the file):
//   model          BPE: vocab, merges as "a b" strings or ["a", "b"] pairs,
//                  ignore_merges, unk_token (+ fuse_unk); no dropout, no
//                  byte_fallback, no continuing_subword_prefix/end_of_word_suffix
//   added_tokens   matched before pre-tokenization, longest match first, with
//                  single_word / lstrip / rstrip / normalized as HF does
//   normalizer     none, NFC (Qwen), or a Sequence of those
//   pre_tokenizer  ByteLevel (add_prefix_space, use_regex: the GPT-2 pattern),
//                  Split (Regex via PCRE2 or String pattern; every behavior;
//                  invert), Digits, and Sequence of these; it must contain
//                  ByteLevel (the byte <-> unicode mapping)
//   post_processor none, ByteLevel, TemplateProcessing with at most one special
//                  token before $A (BOS) and one after (EOS), Sequence of these;
//                  encode() never adds them (readers add BOS/EOS)
//   decoder        ByteLevel (invalid UTF-8 becomes U+FFFD, as from_utf8_lossy)
//
// BOS/EOS: data.bos_token/eos_token when given; else what the side files
// beside the file declare (tokenizer_config.json, special_tokens_map.json: see
// data/hf_tokenizer_config.h; null means none); else the TemplateProcessing's
// special tokens; else well-known names (<|begin_of_text|>, <s>, <bos>,
// <|startoftext|> / <|end_of_text|>, </s>, <eos>, <|endoftext|>).
#pragma once

#include "data/tokenizer.h"

#include <memory>
#include <string>
#include <vector>

namespace liger::data {

class HfBpeTokenizer : public Tokenizer {
 public:
  // Loads `json_path`; DataError naming the file (and the feature) when it is
  // missing, not JSON, not a byte-level BPE, or uses what is not supported.
  explicit HfBpeTokenizer(const std::string& json_path, const TokenizerOptions& options = {});
  ~HfBpeTokenizer() override;

  // DataError when `text` is not valid UTF-8 (naming the byte offset).
  std::vector<int32_t> encode(const std::string& text) const override;
  // Special tokens are kept (their spelling appears in the text).
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  int32_t token_id(const std::string& token) const override;
  std::string describe() const override;
  std::optional<bool> adds_bos() const override;

  // The spelling of `id` as stored in the file ("Ġthe", "<|eot_id|>"); empty
  // when the id has no token.
  std::string token_text(int32_t id) const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Whether the tokenizer.json at `json_path` is one HfBpeTokenizer is made for:
// a BPE whose pre-tokenizer has a ByteLevel step (Llama 3, GPT-2, Qwen; not
// the SentencePiece-style BPE of Llama 2, Mistral and Gemma). False for a file
// that is missing or not JSON.
bool is_byte_level_bpe(const std::string& json_path);

}  // namespace liger::data
