// Tokenizer: text <-> token ids, behind one interface so that readers and the
// trainer do not care which library tokenizes. load_tokenizer() picks the
// implementation from the path.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace liger::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`; no BOS/EOS is added (readers add them).
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  // Text of `ids`; throws DataError for an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  // Special ids; negative when the tokenizer has none.
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  // One line for the start-up log: "sentencepiece data/x.model (vocab 1024, bos 1, eos 2)".
  virtual std::string describe() const;
};

// Loads the tokenizer at `path`:
//   *.model                        -> SentencePiece
//   a directory with tokenizer.model -> SentencePiece (a Hugging Face model folder)
// Anything else, a missing file or a corrupt one -> DataError naming the path and
// what is accepted. (HF tokenizer.json support is planned: issue 7.)
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace liger::data
