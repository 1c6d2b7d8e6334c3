// Preference pairs: reading (see preference.h), packing and the loader.
#include "data/preference.h"

#include "data/data_error.h"
#include "data/loader.h"
#include "data/packing.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <stdexcept>

namespace liger::data {
namespace {

using json = nlohmann::json;

const char* const kPairExample = R"({"prompt": "...", "chosen": "...", "rejected": "..."})";

// Field `name` of the record: a string or a list of messages.
const json& response_field(const json& record, const char* name, const std::string& path,
                           int64_t line) {
  const auto it = record.find(name);
  if (it == record.end()) {
    throw DataError(path, line,
                    std::string("missing field \"") + name +
                        "\"; every line of a preference file needs \"chosen\" and \"rejected\" "
                        "(and \"prompt\" unless they are message lists), e.g. " +
                        kPairExample);
  }
  if (!it->is_string() && !it->is_array()) {
    throw DataError(path, line,
                    std::string("field \"") + name +
                        "\" must be a string or a list of messages, got " + it->type_name());
  }
  return *it;
}

// The tokens of a message-list pair member: prompt + response rendered as a
// chat, then only the response's assistant turns kept as targets.
Document chat_sequence(const json& prompt, const json& response, const char* name,
                       const std::string& path, int64_t line,
                       const std::function<const DocumentTokenizer&()>& chat) {
  int64_t assistant_turns = 0;
  for (const json& message : response) {
    if (message.is_object() && message.value("role", "") == "assistant") ++assistant_turns;
  }
  if (assistant_turns == 0) {
    throw DataError(path, line,
                    std::string("the \"") + name +
                        "\" response is empty: it has no assistant message after the prompt; "
                        "every pair needs a non-empty chosen and rejected response");
  }
  json messages = prompt;
  for (const json& message : response) messages.push_back(message);
  json record;
  record["messages"] = messages;
  Document doc = chat().tokenize(RawDocument{record.dump(), path, line});
  // The targets come in runs, one per assistant turn: keep the last
  // `assistant_turns` runs (the response's), clear the prompt's.
  int64_t runs_seen = 0;
  for (size_t i = doc.loss_mask.size(); i-- > 0;) {
    const bool run_starts_here = doc.loss_mask[i] == 1 && (i == 0 || doc.loss_mask[i - 1] == 0);
    if (runs_seen >= assistant_turns) doc.loss_mask[i] = 0;
    if (run_starts_here) ++runs_seen;
  }
  return doc;
}

// The tokens of a string pair member: [BOS] prompt response [EOS].
Document text_sequence(const std::string& prompt, const std::string& response, const char* name,
                       const std::string& path, int64_t line, const DocumentTokenizer& text) {
  if (response.empty()) {
    throw DataError(path, line,
                    std::string("the \"") + name +
                        "\" response is an empty string; every pair needs a non-empty chosen and "
                        "rejected response");
  }
  json record;
  record["prompt"] = prompt;
  record["completion"] = response;
  return text.tokenize(RawDocument{record.dump(), path, line});
}

// The number of leading messages two lists share.
size_t common_prefix(const json& a, const json& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

json slice(const json& list, size_t begin, size_t end) {
  json out = json::array();
  for (size_t i = begin; i < end; ++i) out.push_back(list[i]);
  return out;
}

int64_t count_targets(const Document& doc) {
  int64_t n = 0;
  // A token is a label target when it is not the sequence's first (nothing predicts it).
  for (size_t i = 1; i < doc.loss_mask.size(); ++i) n += doc.loss_mask[i];
  return n;
}

void check_sequence(const Document& doc, const char* name, int64_t seq_len) {
  if (count_targets(doc) == 0) {
    throw DataError(doc.file, doc.line,
                    std::string("the \"") + name +
                        "\" response has no token to train on; every pair needs a non-empty "
                        "chosen and rejected response");
  }
  if (static_cast<int64_t>(doc.tokens.size()) > seq_len) {
    throw DataError(doc.file, doc.line,
                    std::string("the \"") + name + "\" sequence (prompt + response) is " +
                        std::to_string(doc.tokens.size()) + " tokens but data.seq_len = " +
                        std::to_string(seq_len) + "; raise data.seq_len or shorten the pair");
  }
}

// `chat` gives the chat reader, made at the first message-list pair: its
// template may not resolve for a tokenizer without one, which string pairs
// do not need.
PreferencePair read_pair(const RawDocument& raw, const DocumentTokenizer& text,
                         const std::function<const DocumentTokenizer&()>& chat, int64_t seq_len) {
  json record;
  try {
    record = json::parse(raw.text);
  } catch (const json::parse_error&) {
    throw DataError(
        raw.file, raw.line,
        std::string("not valid JSON; each line must be one complete JSON object, e.g. ") +
            kPairExample);
  }
  if (!record.is_object()) {
    throw DataError(raw.file, raw.line,
                    std::string("expected a JSON object, e.g. ") + kPairExample);
  }
  const json& chosen = response_field(record, "chosen", raw.file, raw.line);
  const json& rejected = response_field(record, "rejected", raw.file, raw.line);
  if (chosen.is_string() != rejected.is_string()) {
    throw DataError(raw.file, raw.line,
                    "\"chosen\" and \"rejected\" must both be strings or both message lists");
  }
  const auto prompt_it = record.find("prompt");
  PreferencePair pair;
  if (chosen.is_string()) {
    if (prompt_it == record.end() || !prompt_it->is_string()) {
      throw DataError(raw.file, raw.line,
                      std::string(prompt_it == record.end() ? "missing field \"prompt\""
                                                            : "field \"prompt\" must be a string") +
                          " (chosen and rejected are strings), e.g. " + kPairExample);
    }
    const std::string& prompt = prompt_it->get_ref<const std::string&>();
    pair.chosen =
        text_sequence(prompt, chosen.get<std::string>(), "chosen", raw.file, raw.line, text);
    pair.rejected =
        text_sequence(prompt, rejected.get<std::string>(), "rejected", raw.file, raw.line, text);
  } else {
    json prompt = json::array();
    json chosen_response = chosen, rejected_response = rejected;
    if (prompt_it != record.end()) {
      if (!prompt_it->is_array()) {
        throw DataError(raw.file, raw.line,
                        "field \"prompt\" must be a list of messages when chosen and rejected are");
      }
      prompt = *prompt_it;
    } else {  // implicit prompt: the messages both lists start with
      const size_t shared = common_prefix(chosen, rejected);
      prompt = slice(chosen, 0, shared);
      chosen_response = slice(chosen, shared, chosen.size());
      rejected_response = slice(rejected, shared, rejected.size());
    }
    pair.chosen = chat_sequence(prompt, chosen_response, "chosen", raw.file, raw.line, chat);
    pair.rejected = chat_sequence(prompt, rejected_response, "rejected", raw.file, raw.line, chat);
  }
  check_sequence(pair.chosen, "chosen", seq_len);
  check_sequence(pair.rejected, "rejected", seq_len);
  return pair;
}

}  // namespace

std::vector<PreferencePair> read_preference_pairs(const std::string& path,
                                                  const Tokenizer& tokenizer,
                                                  const ReadOptions& options, int64_t seq_len) {
  const DocumentTokenizer text(DataFormat::prompt_completion, tokenizer, options);
  std::unique_ptr<DocumentTokenizer> chat;
  const auto chat_reader = [&]() -> const DocumentTokenizer& {
    if (!chat) chat = std::make_unique<DocumentTokenizer>(DataFormat::chat, tokenizer, options);
    return *chat;
  };
  std::vector<PreferencePair> pairs;
  for_each_raw_document(path, DataFormat::prompt_completion, [&](RawDocument&& raw) {
    pairs.push_back(read_pair(raw, text, chat_reader, seq_len));
  });
  return pairs;
}

PreferenceBatch pack_preference_pairs(const std::vector<const PreferencePair*>& pairs,
                                      int64_t seq_len) {
  PreferenceBatch batch;
  batch.num_pairs = static_cast<int64_t>(pairs.size());
  batch.seq_len = seq_len;
  std::vector<const Document*> sequences;
  for (const PreferencePair* pair : pairs) sequences.push_back(&pair->chosen);
  for (const PreferencePair* pair : pairs) sequences.push_back(&pair->rejected);

  std::vector<int64_t> row_used;  // tokens placed in each row
  std::vector<int64_t> row_documents;
  auto grow = [&] {
    const size_t size = (row_used.size() + 1) * static_cast<size_t>(seq_len);
    batch.input_ids.resize(size, 0);
    batch.labels.resize(size, kIgnoreIndex);
    batch.position_ids.resize(size, 0);
    batch.document_ids.resize(size, -1);
    batch.sequence.resize(size, -1);
    row_used.push_back(0);
    row_documents.push_back(0);
  };
  for (size_t s = 0; s < sequences.size(); ++s) {
    const Document& doc = *sequences[s];
    const auto length = static_cast<int64_t>(doc.tokens.size());
    if (length > seq_len) {  // read_preference_pairs checks this for the user
      throw std::logic_error("pack_preference_pairs: a sequence is longer than seq_len");
    }
    size_t row = 0;
    while (row < row_used.size() && row_used[row] + length > seq_len) ++row;  // first fit
    if (row == row_used.size()) grow();
    const int64_t start = static_cast<int64_t>(row) * seq_len + row_used[row];
    for (int64_t t = 0; t < length; ++t) {
      const size_t at = static_cast<size_t>(start + t);
      batch.input_ids[at] = doc.tokens[t];
      const bool target = t + 1 < length && doc.loss_mask[t + 1] != 0;
      batch.labels[at] = target ? doc.tokens[t + 1] : kIgnoreIndex;
      batch.position_ids[at] = t;
      batch.document_ids[at] = row_documents[row];
      batch.sequence[at] = static_cast<int64_t>(s);
      if (target) {
        (static_cast<int64_t>(s) < batch.num_pairs ? batch.chosen_targets
                                                   : batch.rejected_targets) += 1;
      }
    }
    row_used[row] += length;
    row_documents[row] += 1;
  }
  // Padding: a document of its own in each row, positions counting from 0.
  for (size_t row = 0; row < row_used.size(); ++row) {
    for (int64_t t = row_used[row]; t < seq_len; ++t) {
      const size_t at = row * static_cast<size_t>(seq_len) + static_cast<size_t>(t);
      batch.document_ids[at] = row_documents[row];
      batch.position_ids[at] = t - row_used[row];
    }
  }
  batch.rows = static_cast<int64_t>(row_used.size());
  for (const int64_t documents_in_row : row_documents) {
    if (documents_in_row > 1) batch.rows_share_sequences = true;
  }
  return batch;
}

PreferenceLoader::PreferenceLoader(std::shared_ptr<const std::vector<PreferencePair>> pairs,
                                   int64_t micro_batch_size, uint64_t seed, int64_t seq_len)
    : pairs_(std::move(pairs)),
      micro_batch_size_(micro_batch_size),
      seed_(seed),
      seq_len_(seq_len) {
  if (micro_batch_size_ < 1) {
    throw DataError("training.micro_batch_size must be at least 1 (got " +
                    std::to_string(micro_batch_size_) + ")");
  }
  if (static_cast<int64_t>(pairs_->size()) < micro_batch_size_) {
    throw DataError(
        "the preference data holds " + std::to_string(pairs_->size()) +
        " pairs, fewer than training.micro_batch_size = " + std::to_string(micro_batch_size_) +
        " (pairs per micro-batch); add pairs or lower training.micro_batch_size");
  }
  order_ = epoch_permutation(static_cast<int64_t>(pairs_->size()), seed_, 0);
}

int64_t PreferenceLoader::batches_per_epoch() const {
  return static_cast<int64_t>(pairs_->size()) / micro_batch_size_;
}

PreferenceBatch PreferenceLoader::next() {
  if (position_ + micro_batch_size_ > static_cast<int64_t>(pairs_->size())) {
    ++epoch_;
    position_ = 0;
    order_ = epoch_permutation(static_cast<int64_t>(pairs_->size()), seed_, epoch_);
  }
  std::vector<const PreferencePair*> picked;
  std::vector<int64_t> indices;
  for (int64_t i = 0; i < micro_batch_size_; ++i) {
    indices.push_back(order_[static_cast<size_t>(position_ + i)]);
    picked.push_back(&(*pairs_)[static_cast<size_t>(indices.back())]);
  }
  position_ += micro_batch_size_;
  PreferenceBatch batch = pack_preference_pairs(picked, seq_len_);
  batch.pair_index = std::move(indices);
  return batch;
}

void PreferenceLoader::restore(const PreferenceLoaderState& state) {
  if (state.epoch < 0 || state.position < 0 ||
      state.position > static_cast<int64_t>(pairs_->size())) {
    throw DataError("the checkpoint's preference loader position (epoch " +
                    std::to_string(state.epoch) + ", pair " + std::to_string(state.position) +
                    ") does not fit the " + std::to_string(pairs_->size()) +
                    " pairs of data.train; resume with the data the run started with");
  }
  epoch_ = state.epoch;
  position_ = state.position;
  order_ = epoch_permutation(static_cast<int64_t>(pairs_->size()), seed_, epoch_);
}

}  // namespace liger::data
