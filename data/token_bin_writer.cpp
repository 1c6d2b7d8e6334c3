#include "data/token_bin_writer.h"

#include "data/data_error.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

namespace liger::data {

namespace {

namespace fs = std::filesystem;

std::string errno_text() {
  return std::strerror(errno);
}

// NAME.tmp-PID: beside the target, so that the rename stays on one file system.
std::string temporary_name(const std::string& path) {
  return path + ".tmp-" + std::to_string(static_cast<long>(::getpid()));
}

// Opens `temp` for writing; the DataError names `target`, the file the user asked for.
std::ofstream open_for_writing(const std::string& temp, const std::string& target) {
  std::ofstream out(temp, std::ios::binary | std::ios::trunc);
  if (!out) {
    throw DataError(target + ": cannot be written (" + errno_text() +
                    "); check that its folder exists and is writable");
  }
  return out;
}

// 256 little-endian int32 (this writer runs on little-endian hosts only, as the reader).
using Header = std::array<int32_t, token_bin::kHeaderInts>;

}  // namespace

TokenDtype token_dtype_for_vocab(int64_t vocab_size) {
  return vocab_size <= 65536 ? TokenDtype::uint16 : TokenDtype::uint32;
}

TokenBinWriter::TokenBinWriter(const std::string& path, int64_t vocab_size, int32_t bos_id,
                               int32_t eos_id)
    : path_(path),
      mask_path_(path + token_bin::kMaskSuffix),
      temp_path_(temporary_name(path)),
      temp_mask_path_(temporary_name(mask_path_)),
      vocab_size_(vocab_size),
      dtype_(token_dtype_for_vocab(vocab_size)),
      bos_id_(bos_id),
      eos_id_(eos_id) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    throw DataError(path + ": is a folder; give the output file's name, e.g. " +
                    (fs::path(path) / "data.bin").string());
  }
  out_ = open_for_writing(temp_path_, path_);
  try {
    mask_out_ = open_for_writing(temp_mask_path_, mask_path_);
    // Room for the headers; commit() writes them once the counts are known.
    const Header zeros{};
    write_or_fail(out_, reinterpret_cast<const char*>(zeros.data()), token_bin::kHeaderBytes,
                  path_);
    write_or_fail(mask_out_, reinterpret_cast<const char*>(zeros.data()), token_bin::kHeaderBytes,
                  mask_path_);
  } catch (...) {
    // No destructor runs for a throwing constructor: remove what was opened.
    out_.close();
    mask_out_.close();
    std::remove(temp_path_.c_str());
    std::remove(temp_mask_path_.c_str());
    throw;
  }
}

TokenBinWriter::~TokenBinWriter() {
  if (committed_) return;
  out_.close();
  mask_out_.close();
  std::remove(temp_path_.c_str());
  std::remove(temp_mask_path_.c_str());
}

void TokenBinWriter::write_or_fail(std::ofstream& out, const char* bytes, int64_t count,
                                   const std::string& name) {
  out.write(bytes, count);
  check_written(out, name);
}

void TokenBinWriter::check_written(std::ofstream& out, const std::string& name) {
  if (!out) {
    throw DataError(name + ": writing failed (" + errno_text() +
                    "); check the free space and the folder's permissions");
  }
}

void TokenBinWriter::append(const Document& doc) {
  const auto count = static_cast<int64_t>(doc.tokens.size());
  if (count == 0) return;
  if (tokens_ + count > token_bin::kMaxTokens) {
    throw DataError(path_ + ": more than " + std::to_string(token_bin::kMaxTokens) +
                    " tokens, the most an llm.c header counts; split the input over several "
                    "output files (data.train takes a list of them)");
  }
  std::vector<uint16_t> narrow;
  std::vector<uint32_t> wide;
  std::vector<uint8_t> flags(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const int32_t id = doc.tokens[static_cast<size_t>(i)];
    if (id < 0 || id >= vocab_size_) {
      throw DataError(doc.file, doc.line,
                      "token id " + std::to_string(id) +
                          " is outside the tokenizer's vocabulary [0, " +
                          std::to_string(vocab_size_) +
                          "); pre-tokenize with the tokenizer the model is trained with");
    }
    // Lossless: the width was chosen so that every id below vocab_size_ fits.
    if (dtype_ == TokenDtype::uint16) {
      narrow.push_back(static_cast<uint16_t>(id));
    } else {
      wide.push_back(static_cast<uint32_t>(id));
    }
    const bool target = doc.loss_mask[static_cast<size_t>(i)] != 0;
    const auto own = static_cast<uint8_t>((target ? token_bin::kTokenTarget : 0) |
                                          (i == 0 ? token_bin::kTokenStartsDocument : 0));
    const uint8_t implied =
        token_bin::token_flags_implied(id, previous_, tokens_ + i == 0, bos_id_, eos_id_);
    mask_needed_ = mask_needed_ || own != implied;
    flags[static_cast<size_t>(i)] = own;
    hash_.add(static_cast<uint32_t>(id));
    previous_ = id;
  }
  if (dtype_ == TokenDtype::uint16) {
    write_or_fail(out_, reinterpret_cast<const char*>(narrow.data()), count * 2, path_);
  } else {
    write_or_fail(out_, reinterpret_cast<const char*>(wide.data()), count * 4, path_);
  }
  write_or_fail(mask_out_, reinterpret_cast<const char*>(flags.data()), count, mask_path_);
  tokens_ += count;
  ++documents_;
}

TokenBinSummary TokenBinWriter::commit() {
  if (tokens_ == 0) {
    throw DataError(path_ +
                    ": no tokens to write (every document was empty); check the input files and "
                    "the BOS/EOS options");
  }
  Header header{};
  header[0] = token_bin::kTokensMagic;
  header[1] = dtype_ == TokenDtype::uint16 ? token_bin::kTokensVersionUint16
                                           : token_bin::kTokensVersionUint32;
  header[2] = static_cast<int32_t>(tokens_);  // at most kMaxTokens (append checks)
  out_.seekp(0);
  write_or_fail(out_, reinterpret_cast<const char*>(header.data()), token_bin::kHeaderBytes, path_);
  out_.close();
  check_written(out_, path_);

  Header mask_header{};
  mask_header[0] = token_bin::kMaskMagic;
  mask_header[1] = token_bin::kMaskVersion;
  mask_header[2] = static_cast<int32_t>(tokens_);
  // The hash's two halves, stored as int32 bit patterns.
  mask_header[3] = static_cast<int32_t>(static_cast<uint32_t>(hash_.value() & 0xffffffffu));
  mask_header[4] = static_cast<int32_t>(static_cast<uint32_t>(hash_.value() >> 32));
  mask_out_.seekp(0);
  write_or_fail(mask_out_, reinterpret_cast<const char*>(mask_header.data()),
                token_bin::kHeaderBytes, mask_path_);
  mask_out_.close();
  check_written(mask_out_, mask_path_);

  // The mask goes first: a stop between the two renames leaves a new mask
  // beside an old token file, which the reader rejects (count and hash).
  auto rename_into_place = [](const std::string& from, const std::string& to) {
    if (std::rename(from.c_str(), to.c_str()) != 0) {
      throw DataError(to + ": cannot be written (renaming " + from + " failed: " + errno_text() +
                      ")");
    }
  };
  if (mask_needed_) {
    rename_into_place(temp_mask_path_, mask_path_);
  } else {
    std::remove(temp_mask_path_.c_str());
  }
  rename_into_place(temp_path_, path_);
  committed_ = true;
  if (!mask_needed_ && std::remove(mask_path_.c_str()) != 0 && errno != ENOENT) {
    throw DataError(mask_path_ + ": an earlier run's mask file cannot be removed (" + errno_text() +
                    "), and the reader would take it for " + path_ + "'s; remove it by hand");
  }

  TokenBinSummary summary;
  summary.path = path_;
  summary.mask_path = mask_needed_ ? mask_path_ : "";
  summary.dtype = dtype_;
  summary.tokens = tokens_;
  summary.documents = documents_;
  return summary;
}

}  // namespace liger::data
