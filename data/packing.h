// Packing: documents are concatenated into one token stream (with its loss mask)
// and cut into training windows of seq_len + 1 tokens with stride seq_len, so
// every token is predicted at most once per epoch and no padding is needed.
//
// Window w starts at s = w * seq_len:
//   input_ids[t] = stream[s + t]
//   labels[t]    = stream[s + t + 1] if loss_mask[s + t + 1] else kIgnoreIndex
// for t in [0, seq_len). The last partial window is dropped.
//
// Each window also says where its documents lie:
//   document_ids[t]  0 for the document that holds stream[s], then 1, 2, ...
//                    at each document start inside the window
//   position_ids[t]  cross_document: t (the window is one sequence);
//                    isolated: t minus the start of token t's document within
//                    the window, so positions restart at 0 for every document
// In isolated mode a label that would cross into the next document is
// kIgnoreIndex too (the last token of a document does not predict the first
// of the next one). The attention must also stay inside each document (a
// block-diagonal mask over document_ids); that is the model's side.
#pragma once

#include "data/readers.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace liger::data {

// The label of a position that is not trained on (PyTorch's cross-entropy default).
constexpr int64_t kIgnoreIndex = -100;

// data.packing: whether packed documents may see each other.
enum class PackingMode { cross_document, isolated };
PackingMode parse_packing_mode(const std::string& name);  // cross_document, isolated
const char* packing_mode_name(PackingMode mode);

// Documents concatenated in order.
struct TokenStream {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;   // 1 where tokens[i] is a prediction target
  std::vector<int64_t> doc_starts;  // offset of each non-empty document, ascending
  int64_t num_documents = 0;

  void append(const Document& doc);
};

// Where one window's tokens sit: seq_len entries each (row-major in a batch).
struct WindowRows {
  int64_t* input_ids = nullptr;
  int64_t* labels = nullptr;
  int64_t* position_ids = nullptr;  // may be null: not filled
  int64_t* document_ids = nullptr;  // may be null: not filled
};

// A token stream cut into windows; immutable once built, shared by loaders.
// It may be a view of a contiguous range of another dataset's windows (see
// windows()), sharing its stream.
class PackedDataset {
 public:
  // `files` name the data in messages. DataError when seq_len < 1 or the stream
  // holds fewer than seq_len + 1 tokens (not even one window).
  PackedDataset(TokenStream stream, int64_t seq_len, std::vector<std::string> files,
                PackingMode packing = PackingMode::cross_document);

  int64_t seq_len() const { return seq_len_; }
  int64_t num_windows() const { return num_windows_; }
  int64_t num_tokens() const { return static_cast<int64_t>(stream_->tokens.size()); }
  int64_t num_documents() const { return stream_->num_documents; }
  PackingMode packing() const { return packing_; }
  const TokenStream& stream() const { return *stream_; }
  const std::vector<std::string>& files() const { return files_; }
  // "a.txt, b.jsonl" (the first few, then "and N more"), for messages.
  std::string describe_files() const;

  // Windows [first, first + count) of this dataset as a dataset of their own
  // (window 0 of the result is window `first` here). std::out_of_range when
  // the range is empty or does not fit.
  PackedDataset windows(int64_t first, int64_t count) const;

  // Writes window `index` (0 <= index < num_windows()) as in the header
  // comment. std::out_of_range otherwise.
  void fill_window(int64_t index, const WindowRows& rows) const;
  void fill_window(int64_t index, int64_t* input_ids, int64_t* labels) const {
    fill_window(index, WindowRows{input_ids, labels, nullptr, nullptr});
  }

 private:
  std::shared_ptr<const TokenStream> stream_;
  int64_t seq_len_;
  int64_t first_window_ = 0;  // window 0 of this dataset in the stream
  int64_t num_windows_;
  std::vector<std::string> files_;
  PackingMode packing_;
};

// Concatenates `docs` in order and packs them (see PackedDataset).
PackedDataset pack_documents(const std::vector<Document>& docs, int64_t seq_len,
                             std::vector<std::string> files,
                             PackingMode packing = PackingMode::cross_document);

}  // namespace liger::data
