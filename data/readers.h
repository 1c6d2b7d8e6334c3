// Dataset readers: turn one file into tokenized documents with a loss mask.
//
//   text               a whole file is one document; every token is a target
//   jsonl_text         one JSON object per line, its "text" is a document
//   prompt_completion  one JSON object per line; "prompt" tokens are context
//                      (mask 0), "completion" tokens are targets (mask 1)
//   chat               one JSON object per line with "messages": [{role, content}];
//                      rendered with the chat template (data/chat.h); only the
//                      assistant turns and their end-of-turn tokens are targets
//   tokens_jsonl       pre-tokenized: one JSON object per line with "input_ids"
//                      and optionally "labels" (Hugging Face style: unshifted,
//                      -100 where not trained); without labels every token but
//                      BOS is a target
//   tokens_bin         pre-tokenized: a flat little-endian array of uint16 or
//                      uint32 token ids (nanoGPT / llm.c). An llm.c header (int32
//                      magic 20240520, version 1 = uint16, 2 = uint32, token
//                      count, 256 int32 in all) is recognised; without one
//                      data.token_dtype says the width. A document starts at
//                      each BOS token (else ends after each EOS token); every
//                      token but BOS is a target. A companion NAME.bin.mask
//                      (written by liger-tokenize for prompt_completion and
//                      chat data) gives the loss mask and document starts
//                      instead (layout: data/token_bin_format.h).
//   auto               .txt -> text; .bin -> tokens_bin; .jsonl/.json -> decided by
//                      the first non-empty line ("messages" -> chat, "input_ids" ->
//                      tokens_jsonl, "prompt"+"completion", or "text")
//
// Text documents are [BOS] tokens [EOS] (see ReadOptions); BOS is never a target,
// EOS always is (the model learns where a document ends). Chat documents get BOS
// but no EOS (the template ends each turn). Pre-tokenized documents are taken as
// they are. Empty JSONL lines are skipped. Problems are DataErrors naming
// "file:line" (or the byte offset in a .bin file).
#pragma once

#include "data/chat.h"
#include "data/tokenizer.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace liger::data {

enum class DataFormat {
  auto_detect,
  text,
  jsonl_text,
  prompt_completion,
  chat,
  tokens_jsonl,
  tokens_bin
};

// The config spelling ("auto", "text", "jsonl_text", "prompt_completion",
// "chat", "tokens_jsonl", "tokens_bin"); DataError listing the choices for
// anything else.
DataFormat parse_data_format(const std::string& name);
const char* data_format_name(DataFormat format);

// The width of a token id in a tokens_bin file (data.token_dtype); auto_detect
// reads an llm.c header.
enum class TokenDtype { auto_detect, uint16, uint32 };
TokenDtype parse_token_dtype(const std::string& name);  // auto, uint16, uint32
const char* token_dtype_name(TokenDtype dtype);

struct ReadOptions {
  bool add_bos = true;  // BOS before each document (not a target)
  bool add_eos = true;  // EOS after each document (a target; separates packed documents)
  ChatTemplate chat_template = ChatTemplate::auto_detect;  // chat: auto = from the tokenizer
  TokenDtype token_dtype = TokenDtype::auto_detect;        // tokens_bin
  // Pre-tokenized data: every id must be below vocab_limit (0 = the
  // tokenizer's vocab_size()); vocab_owner names that vocabulary in messages.
  int64_t vocab_limit = 0;
  std::string vocab_owner = "the tokenizer's vocabulary";
};

// One tokenized document and where it came from.
struct Document {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;  // 1 where the token is a prediction target
  std::string file;
  int64_t line = 1;  // 1-based; 1 for a whole-file document
};

// A document before tokenization: the whole text of a text file (its UTF-8
// byte order mark dropped), or one non-empty line of a JSONL file (not yet
// parsed; its '\r' dropped).
struct RawDocument {
  std::string text;
  std::string file;
  int64_t line = 1;
};

// Reading is two steps, so that the second can run on several threads:
// for_each_raw_document splits a file into raw documents (in file order), and
// a DocumentTokenizer turns each into a Document. for_each_document is the
// two in sequence; tokens_bin files are read by for_each_document only.

// The raw documents of `path` (format text or a JSONL format; not auto_detect
// or tokens_bin). DataError when the file is missing or has no document.
void for_each_raw_document(const std::string& path, DataFormat format,
                           const std::function<void(RawDocument&&)>& sink);

// Tokenizes raw documents of one format as the readers do. Construction checks
// the tokenizer's special tokens against the options and resolves
// chat_template auto (DataErrors). tokenize() may run on several threads at
// once (Tokenizer::encode is thread-safe); DataError naming file:line for a
// malformed record.
class DocumentTokenizer {
 public:
  DocumentTokenizer(DataFormat format, const Tokenizer& tokenizer, const ReadOptions& options);
  Document tokenize(const RawDocument& raw) const;

 private:
  DataFormat format_;
  const Tokenizer& tokenizer_;
  ReadOptions options_;  // chat_template resolved
};

// The format `auto` resolves to for `path` (never auto_detect).
DataFormat detect_format(const std::string& path);

// Reads `path` and hands each document, in file order, to `sink`; `format`
// auto_detect means detect_format(path). DataError when the file has no document.
void for_each_document(const std::string& path, DataFormat format, const Tokenizer& tokenizer,
                       const ReadOptions& options, const std::function<void(Document&&)>& sink);

// The same, collected into a vector.
std::vector<Document> read_documents(const std::string& path, DataFormat format,
                                     const Tokenizer& tokenizer, const ReadOptions& options = {});

}  // namespace liger::data
