// build_dataset: the data: section of the config in, a packed dataset out
// (read every file with its format, tokenize, check ids, pack).
#pragma once

#include "data/packing.h"
#include "data/tokenizer.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace liger::data {

// What to read and how to cut it; mirrors the data.* config keys.
struct DataSpec {
  std::vector<std::string> files;  // data.train (or data.eval), read in this order
  // data.format: auto | text | jsonl_text | prompt_completion | chat | tokens_jsonl | tokens_bin
  std::string format = "auto";
  std::string chat_template = "auto";      // data.chat_template: auto | llama3 | mistral | gemma
  std::string token_dtype = "auto";        // data.token_dtype: auto | uint16 | uint32
  std::string packing = "cross_document";  // data.packing: cross_document | isolated
  int64_t seq_len = 0;                     // data.seq_len (required, >= 1)
  bool add_bos = true;                     // data.add_bos
  bool add_eos = true;                     // data.add_eos
  // The model's vocabulary size when known: every token id must be below it
  // (and below the tokenizer's vocab_size). 0: check against the tokenizer only.
  int64_t model_vocab_size = 0;
};

// Reads, tokenizes and packs all files of `spec`. DataError (naming file:line)
// for unreadable or malformed data, a token id outside the vocabulary, or too
// little data for one window.
std::shared_ptr<const PackedDataset> build_dataset(const DataSpec& spec,
                                                   const Tokenizer& tokenizer);

// Holds out the LAST ceil(fraction * num_windows) windows of `dataset` for
// evaluation (data.eval_fraction): {training windows, evaluation windows}.
// Contiguous at the end, so at most one document is shared by both parts;
// shuffle data that is sorted before using it. DataError when either part
// would be empty or fraction is outside (0, 1).
std::pair<std::shared_ptr<const PackedDataset>, std::shared_ptr<const PackedDataset>>
hold_out_windows(const std::shared_ptr<const PackedDataset>& dataset, double fraction);

}  // namespace liger::data
