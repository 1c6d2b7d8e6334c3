// Dataset readers: turn one file into tokenized documents with a loss mask.
//
//   text               a whole file is one document; every token is a target
//   jsonl_text         one JSON object per line, its "text" is a document
//   prompt_completion  one JSON object per line; "prompt" tokens are context
//                      (mask 0), "completion" tokens are targets (mask 1)
//   auto               .txt -> text; .jsonl/.json -> decided by the first
//                      non-empty line ("prompt"+"completion" or "text")
//
// Every document is [BOS] tokens [EOS] (see ReadOptions); BOS is never a target,
// EOS always is (the model learns where a document ends). Empty JSONL lines are
// skipped. Problems are DataErrors naming "file:line".
#pragma once

#include "data/tokenizer.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace liger::data {

enum class DataFormat { auto_detect, text, jsonl_text, prompt_completion };

// The config spelling ("auto", "text", "jsonl_text", "prompt_completion");
// DataError listing the choices for anything else.
DataFormat parse_data_format(const std::string& name);
const char* data_format_name(DataFormat format);

struct ReadOptions {
  bool add_bos = true;  // BOS before each document (not a target)
  bool add_eos = true;  // EOS after each document (a target; separates packed documents)
};

// One tokenized document and where it came from.
struct Document {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;  // 1 where the token is a prediction target
  std::string file;
  int64_t line = 1;  // 1-based; 1 for a whole-file document
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
