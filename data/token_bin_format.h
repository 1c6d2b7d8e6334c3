// The tokens_bin file format, shared by its reader (data/readers.cpp) and its
// writer (data/token_bin_writer.h).
//
// NAME.bin: llm.c's layout. A header of 256 little-endian int32:
//   [0] magic 20240520, [1] version (1: uint16 ids, 2: uint32 ids),
//   [2] token count; the rest 0. Then the token ids, little-endian.
// Without a companion file, the reader derives per token (token_flags_implied):
// a document starts at each BOS (with no BOS token in the vocabulary: after
// each EOS), and every token but BOS is a loss target.
//
// NAME.bin.mask (optional companion, written by liger-tokenize only when the
// implied flags would be wrong, e.g. for prompt_completion or chat data): a
// header of 256 little-endian int32:
//   [0] magic 20240531, [1] version 1, [2] token count (that of NAME.bin),
//   [3], [4] the low and high 32 bits of TokenHash over NAME.bin's ids;
//   the rest 0.
// Then one uint8 of flags per token: bit 0 (kTokenTarget) the token is a loss
// target, bit 1 (kTokenStartsDocument) a document starts at the token; the
// other bits 0. When present, the reader takes the loss mask and the document
// starts from it.
#pragma once

#include <cstdint>

namespace liger::data::token_bin {

constexpr int32_t kTokensMagic = 20240520;
constexpr int32_t kTokensVersionUint16 = 1;
constexpr int32_t kTokensVersionUint32 = 2;
constexpr int32_t kMaskMagic = 20240531;
constexpr int32_t kMaskVersion = 1;
constexpr int64_t kHeaderInts = 256;
constexpr int64_t kHeaderBytes = kHeaderInts * 4;
// The llm.c header counts tokens in an int32.
constexpr int64_t kMaxTokens = INT32_MAX;

constexpr uint8_t kTokenTarget = 1;
constexpr uint8_t kTokenStartsDocument = 2;

// The suffix of the companion mask file: NAME.bin -> NAME.bin.mask.
constexpr const char* kMaskSuffix = ".mask";

// The flags the reader derives for `token` without a companion file.
// `previous` is the token before it (ignored when `first`); bos / eos are the
// tokenizer's special ids, negative when it has none.
inline uint8_t token_flags_implied(int32_t token, int32_t previous, bool first, int32_t bos,
                                   int32_t eos) {
  const bool starts =
      first || (bos >= 0 && token == bos) || (bos < 0 && eos >= 0 && previous == eos);
  const bool target = !(bos >= 0 && token == bos);
  return static_cast<uint8_t>((target ? kTokenTarget : 0) | (starts ? kTokenStartsDocument : 0));
}

// A 64-bit FNV-1a hash folded over the token ids (each id as one 32-bit
// value): ties a mask file to the token file it was written with.
class TokenHash {
 public:
  void add(uint32_t id) {
    hash_ ^= id;
    hash_ *= 1099511628211ULL;  // the 64-bit FNV prime
  }
  uint64_t value() const { return hash_; }

 private:
  uint64_t hash_ = 14695981039346656037ULL;  // the 64-bit FNV offset basis
};

}  // namespace liger::data::token_bin
