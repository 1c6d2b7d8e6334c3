// TokenBinWriter: documents in, a tokens_bin file out (data/token_bin_format.h):
// NAME.bin with an llm.c header, and NAME.bin.mask beside it when the loss
// mask or the document starts differ from what the reader derives from the
// ids alone. Both are written to temporary files next to NAME.bin and renamed
// into place by commit(), so a reader never sees half a file.
#pragma once

#include "data/readers.h"
#include "data/token_bin_format.h"

#include <cstdint>
#include <fstream>
#include <string>

namespace liger::data {

// The narrowest id width for a vocabulary: uint16 up to 65536 ids, else uint32.
TokenDtype token_dtype_for_vocab(int64_t vocab_size);

// What commit() wrote.
struct TokenBinSummary {
  std::string path;
  std::string mask_path;  // "" when no mask file was needed
  TokenDtype dtype = TokenDtype::uint16;
  int64_t tokens = 0;
  int64_t documents = 0;  // non-empty documents appended
};

class TokenBinWriter {
 public:
  // Opens the temporary files beside `path`. `vocab_size` chooses the id
  // width; bos_id / eos_id (negative: none) are those the reader will split
  // documents with. DataError naming `path` when it cannot be written.
  TokenBinWriter(const std::string& path, int64_t vocab_size, int32_t bos_id, int32_t eos_id);
  // Removes the temporary files unless commit() renamed them.
  ~TokenBinWriter();
  TokenBinWriter(const TokenBinWriter&) = delete;
  TokenBinWriter& operator=(const TokenBinWriter&) = delete;

  // Appends `doc` (an empty one adds nothing). DataError naming doc.file:line
  // for an id outside [0, vocab_size), and naming the output when the file
  // would pass the llm.c header's 2^31 - 1 tokens or a write fails.
  void append(const Document& doc);

  int64_t tokens() const { return tokens_; }

  // Completes the headers and renames the files into place: the mask first
  // (when needed), then NAME.bin; a NAME.bin.mask left from an earlier run is
  // removed when no mask is needed. DataError when nothing was appended or a
  // write or rename fails.
  TokenBinSummary commit();

 private:
  void write_or_fail(std::ofstream& out, const char* bytes, int64_t count, const std::string& name);
  void check_written(std::ofstream& out, const std::string& name);

  std::string path_;
  std::string mask_path_;
  std::string temp_path_;
  std::string temp_mask_path_;
  int64_t vocab_size_;
  TokenDtype dtype_;
  int32_t bos_id_;
  int32_t eos_id_;
  std::ofstream out_;
  std::ofstream mask_out_;
  int64_t tokens_ = 0;
  int64_t documents_ = 0;
  int32_t previous_ = -1;
  bool mask_needed_ = false;  // some token's flags differ from the implied ones
  token_bin::TokenHash hash_;
  bool committed_ = false;
};

}  // namespace liger::data
