#include "data/dataset.h"

#include "data/data_error.h"
#include "data/readers.h"

#include <cmath>

namespace liger::data {

namespace {

// The largest id + 1 the tokens may use, and whose vocabulary that is (for messages).
struct VocabLimit {
  int64_t size;
  std::string owner;
};

VocabLimit vocab_limit(const DataSpec& spec, const Tokenizer& tokenizer) {
  const int64_t tokenizer_vocab = tokenizer.vocab_size();
  if (spec.model_vocab_size > 0 && spec.model_vocab_size < tokenizer_vocab) {
    return {spec.model_vocab_size, "the model's vocabulary"};
  }
  return {tokenizer_vocab, "the tokenizer's vocabulary"};
}

// Every id of `doc` must lie in [0, limit.size).
void check_token_ids(const Document& doc, const VocabLimit& limit, const Tokenizer& tokenizer) {
  for (const int32_t id : doc.tokens) {
    if (id < 0 || id >= limit.size) {
      throw DataError(doc.file, doc.line,
                      "token id " + std::to_string(id) + " is outside " + limit.owner + " [0, " +
                          std::to_string(limit.size) + ") (tokenizer: " + tokenizer.describe() +
                          "); use the tokenizer the model was trained with (data.tokenizer)");
    }
  }
}

}  // namespace

std::shared_ptr<const PackedDataset> build_dataset(const DataSpec& spec,
                                                   const Tokenizer& tokenizer) {
  if (spec.files.empty()) {
    throw DataError("data.train lists no files; give at least one training file");
  }
  if (spec.seq_len < 1) {
    throw DataError("data.seq_len must be at least 1 (got " + std::to_string(spec.seq_len) + ")");
  }
  const DataFormat format = parse_data_format(spec.format);
  const PackingMode packing = parse_packing_mode(spec.packing);
  const VocabLimit limit = vocab_limit(spec, tokenizer);
  ReadOptions options;
  options.add_bos = spec.add_bos;
  options.add_eos = spec.add_eos;
  options.chat_template = parse_chat_template(spec.chat_template);
  options.token_dtype = parse_token_dtype(spec.token_dtype);
  options.vocab_limit = limit.size;
  options.vocab_owner = limit.owner;

  TokenStream stream;
  for (const std::string& file : spec.files) {
    for_each_document(file, format, tokenizer, options, [&](Document&& doc) {
      check_token_ids(doc, limit, tokenizer);
      stream.append(doc);
    });
  }
  return std::make_shared<const PackedDataset>(std::move(stream), spec.seq_len, spec.files,
                                               packing);
}

std::pair<std::shared_ptr<const PackedDataset>, std::shared_ptr<const PackedDataset>>
hold_out_windows(const std::shared_ptr<const PackedDataset>& dataset, double fraction) {
  if (!(fraction > 0.0 && fraction < 1.0)) {
    throw DataError("data.eval_fraction must be in (0, 1) to hold out windows (got " +
                    std::to_string(fraction) + ")");
  }
  const int64_t total = dataset->num_windows();
  const auto held = static_cast<int64_t>(std::ceil(fraction * static_cast<double>(total)));
  if (held >= total) {
    throw DataError(
        "data.eval_fraction = " + std::to_string(fraction) + " of the " + std::to_string(total) +
        " windows of " + dataset->describe_files() +
        " leaves no training window; use a smaller fraction, a smaller data.seq_len, more data, "
        "or a separate data.eval file");
  }
  auto train = std::make_shared<const PackedDataset>(dataset->windows(0, total - held));
  auto eval = std::make_shared<const PackedDataset>(dataset->windows(total - held, held));
  return {train, eval};
}

}  // namespace liger::data
