#include "data/packing.h"

#include "data/data_error.h"

#include <stdexcept>

namespace liger::data {

void TokenStream::append(const Document& doc) {
  if (doc.tokens.size() != doc.loss_mask.size()) {
    throw std::logic_error("TokenStream::append: a document's tokens and loss mask differ in length");
  }
  tokens.insert(tokens.end(), doc.tokens.begin(), doc.tokens.end());
  loss_mask.insert(loss_mask.end(), doc.loss_mask.begin(), doc.loss_mask.end());
  ++num_documents;
}

PackedDataset::PackedDataset(TokenStream stream, int64_t seq_len, std::vector<std::string> files)
    : stream_(std::move(stream)), seq_len_(seq_len), num_windows_(0), files_(std::move(files)) {
  if (stream_.tokens.size() != stream_.loss_mask.size()) {
    throw std::logic_error("PackedDataset: tokens and loss mask differ in length");
  }
  if (seq_len_ < 1) {
    throw DataError("data.seq_len must be at least 1 (got " + std::to_string(seq_len_) + ")");
  }
  const int64_t tokens = num_tokens();
  if (tokens < seq_len_ + 1) {
    throw DataError("the data (" + describe_files() + ") has " + std::to_string(tokens) +
                    " tokens, fewer than the data.seq_len + 1 = " + std::to_string(seq_len_ + 1) +
                    " that one training window needs; use a smaller data.seq_len" +
                    (tokens >= 2 ? " (at most " + std::to_string(tokens - 1) + ")" : std::string()) +
                    " or add data");
  }
  // Windows start at 0, seq_len, 2*seq_len, ... and need seq_len + 1 tokens.
  num_windows_ = (tokens - 1) / seq_len_;
}

std::string PackedDataset::describe_files() const {
  constexpr size_t kShown = 3;
  if (files_.empty()) return "no files named";
  std::string text;
  for (size_t i = 0; i < files_.size() && i < kShown; ++i) {
    if (i > 0) text += ", ";
    text += files_[i];
  }
  if (files_.size() > kShown) text += " and " + std::to_string(files_.size() - kShown) + " more";
  return text;
}

void PackedDataset::fill_window(int64_t index, int64_t* input_ids, int64_t* labels) const {
  if (index < 0 || index >= num_windows_) {
    throw std::out_of_range("PackedDataset::fill_window: window " + std::to_string(index) +
                            " outside [0, " + std::to_string(num_windows_) + ")");
  }
  const int64_t start = index * seq_len_;
  for (int64_t t = 0; t < seq_len_; ++t) {
    const int64_t next = start + t + 1;
    input_ids[t] = stream_.tokens[start + t];
    labels[t] = stream_.loss_mask[next] ? static_cast<int64_t>(stream_.tokens[next]) : kIgnoreIndex;
  }
}

PackedDataset pack_documents(const std::vector<Document>& docs, int64_t seq_len,
                             std::vector<std::string> files) {
  TokenStream stream;
  for (const Document& doc : docs) stream.append(doc);
  return PackedDataset(std::move(stream), seq_len, std::move(files));
}

}  // namespace liger::data
