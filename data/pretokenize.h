// pretokenize: text, JSONL and chat files in, one tokens_bin file out
// (data/token_bin_format.h), holding exactly the token stream, loss mask and
// document starts that build_dataset (data/dataset.h) makes from the same
// files with the same tokenizer and options. It reads with the readers'
// own functions (for_each_raw_document, DocumentTokenizer) and tokenizes
// batches of documents on several threads; the documents are written in
// input order, so the output's bytes do not depend on the thread count.
#pragma once

#include "data/readers.h"
#include "data/token_bin_writer.h"
#include "data/tokenizer.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace liger::data {

struct PretokenizeOptions {
  std::vector<std::string> files;               // read in this order, as data.train
  DataFormat format = DataFormat::auto_detect;  // data.format; auto: per file
  ReadOptions read;                             // data.add_bos, add_eos, chat_template
  int threads = 1;                              // tokenizing threads, >= 1
  // A batch (this many documents, or this many bytes of raw text, whichever
  // comes first) is tokenized in parallel, then written.
  int64_t batch_documents = 4096;
  int64_t batch_bytes = int64_t{16} << 20;
};

// How far it got; handed to the progress callback after each batch.
struct PretokenizeProgress {
  int64_t documents = 0;
  int64_t tokens = 0;
  int64_t bytes_read = 0;   // input bytes done (raw text of the written documents)
  int64_t total_bytes = 0;  // all input files together
  double seconds = 0;       // since the start
  std::string file;         // the file being read
};

// Writes the tokens of `options.files` to `out`, and `out`.mask when the
// loss mask or document starts need it. Every input file is checked (exists,
// format known) and the output opened before any tokenizing. DataError
// naming the file (and line) for a missing file, an unknown format, malformed
// data or an output that cannot be written; the output is then untouched.
TokenBinSummary pretokenize(
    const Tokenizer& tokenizer, const PretokenizeOptions& options, const std::string& out,
    const std::function<void(const PretokenizeProgress&)>& progress = nullptr);

}  // namespace liger::data
