// build_dataset: the data: section of the config in, a packed dataset out
// (read every file with its format, tokenize, check ids, pack).
#pragma once

#include "data/packing.h"
#include "data/tokenizer.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace liger::data {

// What to read and how to cut it; mirrors the data.* config keys.
struct DataSpec {
  std::vector<std::string> files;  // data.train, read in this order
  std::string format = "auto";     // data.format: auto | text | jsonl_text | prompt_completion
  int64_t seq_len = 0;             // data.seq_len (required, >= 1)
  bool add_bos = true;             // data.add_bos
  bool add_eos = true;             // data.add_eos
  // The model's vocabulary size when known: every token id must be below it
  // (and below the tokenizer's vocab_size). 0: check against the tokenizer only.
  int64_t model_vocab_size = 0;
};

// Reads, tokenizes and packs all files of `spec`. DataError (naming file:line)
// for unreadable or malformed data, a token id outside the vocabulary, or too
// little data for one window.
std::shared_ptr<const PackedDataset> build_dataset(const DataSpec& spec, const Tokenizer& tokenizer);

}  // namespace liger::data
