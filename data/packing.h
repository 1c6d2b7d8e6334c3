// Packing: documents are concatenated into one token stream (with its loss mask)
// and cut into training windows of seq_len + 1 tokens with stride seq_len, so
// every token is predicted at most once per epoch and no padding is needed.
//
// Window w starts at s = w * seq_len:
//   input_ids[t] = stream[s + t]
//   labels[t]    = stream[s + t + 1] if loss_mask[s + t + 1] else kIgnoreIndex
// for t in [0, seq_len). The last partial window is dropped.
#pragma once

#include "data/readers.h"

#include <cstdint>
#include <string>
#include <vector>

namespace liger::data {

// The label of a position that is not trained on (PyTorch's cross-entropy default).
constexpr int64_t kIgnoreIndex = -100;

// Documents concatenated in order.
struct TokenStream {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;  // 1 where tokens[i] is a prediction target
  int64_t num_documents = 0;

  void append(const Document& doc);
};

// A token stream cut into windows; immutable once built, shared by loaders.
class PackedDataset {
 public:
  // `files` name the data in messages. DataError when seq_len < 1 or the stream
  // holds fewer than seq_len + 1 tokens (not even one window).
  PackedDataset(TokenStream stream, int64_t seq_len, std::vector<std::string> files);

  int64_t seq_len() const { return seq_len_; }
  int64_t num_windows() const { return num_windows_; }
  int64_t num_tokens() const { return static_cast<int64_t>(stream_.tokens.size()); }
  int64_t num_documents() const { return stream_.num_documents; }
  const TokenStream& stream() const { return stream_; }
  const std::vector<std::string>& files() const { return files_; }
  // "a.txt, b.jsonl" (the first few, then "and N more"), for messages.
  std::string describe_files() const;

  // Writes window `index` (0 <= index < num_windows()) into seq_len() ids and
  // seq_len() labels, as in the header comment. std::out_of_range otherwise.
  void fill_window(int64_t index, int64_t* input_ids, int64_t* labels) const;

 private:
  TokenStream stream_;
  int64_t seq_len_;
  int64_t num_windows_;
  std::vector<std::string> files_;
};

// Concatenates `docs` in order and packs them (see PackedDataset).
PackedDataset pack_documents(const std::vector<Document>& docs, int64_t seq_len,
                             std::vector<std::string> files);

}  // namespace liger::data
