#include "data/dataset.h"

#include "data/data_error.h"
#include "data/readers.h"

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

std::shared_ptr<const PackedDataset> build_dataset(const DataSpec& spec, const Tokenizer& tokenizer) {
  if (spec.files.empty()) {
    throw DataError("data.train lists no files; give at least one training file");
  }
  if (spec.seq_len < 1) {
    throw DataError("data.seq_len must be at least 1 (got " + std::to_string(spec.seq_len) + ")");
  }
  const DataFormat format = parse_data_format(spec.format);
  const ReadOptions options{spec.add_bos, spec.add_eos};
  const VocabLimit limit = vocab_limit(spec, tokenizer);

  TokenStream stream;
  for (const std::string& file : spec.files) {
    for_each_document(file, format, tokenizer, options, [&](Document&& doc) {
      check_token_ids(doc, limit, tokenizer);
      stream.append(doc);
    });
  }
  return std::make_shared<const PackedDataset>(std::move(stream), spec.seq_len, spec.files);
}

}  // namespace liger::data
