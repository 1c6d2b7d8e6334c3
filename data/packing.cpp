#include "data/packing.h"

#include "data/data_error.h"

#include <algorithm>
#include <stdexcept>

namespace liger::data {

PackingMode parse_packing_mode(const std::string& name) {
  if (name == "cross_document") return PackingMode::cross_document;
  if (name == "isolated") return PackingMode::isolated;
  throw DataError("data.packing: unknown mode '" + name +
                  "'; choose one of: cross_document, isolated");
}

const char* packing_mode_name(PackingMode mode) {
  return mode == PackingMode::isolated ? "isolated" : "cross_document";
}

void TokenStream::append(const Document& doc) {
  if (doc.tokens.size() != doc.loss_mask.size()) {
    throw std::logic_error(
        "TokenStream::append: a document's tokens and loss mask differ in length");
  }
  if (!doc.tokens.empty()) doc_starts.push_back(static_cast<int64_t>(tokens.size()));
  tokens.insert(tokens.end(), doc.tokens.begin(), doc.tokens.end());
  loss_mask.insert(loss_mask.end(), doc.loss_mask.begin(), doc.loss_mask.end());
  ++num_documents;
}

PackedDataset::PackedDataset(TokenStream stream, int64_t seq_len, std::vector<std::string> files,
                             PackingMode packing)
    : stream_(std::make_shared<const TokenStream>(std::move(stream))),
      seq_len_(seq_len),
      num_windows_(0),
      files_(std::move(files)),
      packing_(packing) {
  if (stream_->tokens.size() != stream_->loss_mask.size()) {
    throw std::logic_error("PackedDataset: tokens and loss mask differ in length");
  }
  if (seq_len_ < 1) {
    throw DataError("data.seq_len must be at least 1 (got " + std::to_string(seq_len_) + ")");
  }
  const int64_t tokens = num_tokens();
  if (tokens < seq_len_ + 1) {
    throw DataError(
        "the data (" + describe_files() + ") has " + std::to_string(tokens) +
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

PackedDataset PackedDataset::windows(int64_t first, int64_t count) const {
  if (first < 0 || count < 1 || first + count > num_windows_) {
    throw std::out_of_range("PackedDataset::windows: [" + std::to_string(first) + ", " +
                            std::to_string(first + count) + ") is not inside [0, " +
                            std::to_string(num_windows_) + ")");
  }
  PackedDataset view = *this;
  view.first_window_ = first_window_ + first;
  view.num_windows_ = count;
  return view;
}

void PackedDataset::fill_window(int64_t index, const WindowRows& rows) const {
  if (index < 0 || index >= num_windows_) {
    throw std::out_of_range("PackedDataset::fill_window: window " + std::to_string(index) +
                            " outside [0, " + std::to_string(num_windows_) + ")");
  }
  const TokenStream& stream = *stream_;
  const int64_t start = (first_window_ + index) * seq_len_;
  const bool isolated = packing_ == PackingMode::isolated;
  // The first document start after `start`, and where the current document
  // begins inside the window (0 for the one already open at `start`).
  auto next_start = std::upper_bound(stream.doc_starts.begin(), stream.doc_starts.end(), start);
  int64_t document = 0, document_begin = 0;
  for (int64_t t = 0; t < seq_len_; ++t) {
    const int64_t at = start + t;
    if (next_start != stream.doc_starts.end() && *next_start == at) {
      if (t > 0) ++document;
      document_begin = t;
      ++next_start;
    }
    const int64_t next = at + 1;
    // In isolated mode the token after a document's last one starts another
    // document: nothing to predict across that boundary.
    const bool crosses = isolated && next_start != stream.doc_starts.end() && *next_start == next;
    rows.input_ids[t] = stream.tokens[at];
    rows.labels[t] = stream.loss_mask[next] && !crosses ? static_cast<int64_t>(stream.tokens[next])
                                                        : kIgnoreIndex;
    if (rows.position_ids) rows.position_ids[t] = isolated ? t - document_begin : t;
    if (rows.document_ids) rows.document_ids[t] = document;
  }
}

PackedDataset pack_documents(const std::vector<Document>& docs, int64_t seq_len,
                             std::vector<std::string> files, PackingMode packing) {
  TokenStream stream;
  for (const Document& doc : docs) stream.append(doc);
  return PackedDataset(std::move(stream), seq_len, std::move(files), packing);
}

}  // namespace liger::data
