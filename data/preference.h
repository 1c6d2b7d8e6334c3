// Preference data (DPO, ORPO, SimPO): JSONL pairs of a prompt and two
// responses, one preferred. Each line is one of
//
//   {"prompt": "...", "chosen": "...", "rejected": "..."}         strings
//   {"prompt": [messages], "chosen": [messages], "rejected": [messages]}
//   {"chosen": [messages], "rejected": [messages]}                implicit prompt
//
// where [messages] is a list of {"role", "content"} rendered with the chat
// template (data/chat.h). Strings read like prompt_completion records:
// [BOS] prompt response [EOS], only response and EOS trained. Message lists
// read like chat records: the prompt's messages, then the response's (its
// assistant turns); an implicit prompt is the longest common prefix of the
// two lists. Only the response's assistant turns are targets (an assistant
// turn inside the prompt is context).
//
// A pair's two sequences are kept together: a micro-batch holds whole pairs.
// Its sequences (every chosen, then every rejected) are packed first-fit into
// rows of seq_len tokens with the isolated packing of data/packing.h:
// positions restart at each sequence, document ids separate them (the model's
// attention stays inside a sequence) and no label crosses a boundary.
#pragma once

#include "data/readers.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace liger::data {

// One pair: two documents (tokens and loss mask over the response).
struct PreferencePair {
  Document chosen;
  Document rejected;
};

// Reads every pair of `path`. DataError naming file:line for malformed JSON,
// a missing field, an empty response, a sequence longer than seq_len, or no
// pair at all.
std::vector<PreferencePair> read_preference_pairs(const std::string& path,
                                                  const Tokenizer& tokenizer,
                                                  const ReadOptions& options, int64_t seq_len);

// A micro-batch of P pairs, row-major [rows, seq_len]. Sequence s in [0, P)
// is pair s's chosen response, s in [P, 2P) pair s - P's rejected one.
struct PreferenceBatch {
  int64_t num_pairs = 0;
  int64_t rows = 0;
  int64_t seq_len = 0;
  std::vector<int64_t> input_ids;     // padding: 0
  std::vector<int64_t> labels;        // the next token where it is a response target, else -100
  std::vector<int64_t> position_ids;  // restart at 0 for every sequence
  std::vector<int64_t> document_ids;  // per row: 0, 1, ... per sequence, then one for padding
  std::vector<int64_t> sequence;      // which sequence each position belongs to; -1 for padding
  // Whether some row holds two or more sequences, so attention needs the
  // document mask. With one sequence a row (then padding), the causal mask
  // alone gives every response token the same keys: padding comes after it.
  bool rows_share_sequences = false;
  // Each pair's index in the loader's pairs (PreferenceLoader::next; empty
  // from pack_preference_pairs alone).
  std::vector<int64_t> pair_index;
  // Response targets of chosen and of rejected sequences.
  int64_t chosen_targets = 0;
  int64_t rejected_targets = 0;
};

// Packs `pairs` (each at most seq_len tokens a sequence) first-fit, in order.
PreferenceBatch pack_preference_pairs(const std::vector<const PreferencePair*>& pairs,
                                      int64_t seq_len);

// Where a preference loader stands (as LoaderState for windows).
struct PreferenceLoaderState {
  int64_t epoch = 0;
  int64_t position = 0;
};

// Serves micro-batches of micro_batch_size pairs in a fresh deterministic
// order each epoch (epoch_permutation of data/loader.h), one process.
class PreferenceLoader {
 public:
  // DataError when there are fewer pairs than micro_batch_size.
  PreferenceLoader(std::shared_ptr<const std::vector<PreferencePair>> pairs,
                   int64_t micro_batch_size, uint64_t seed, int64_t seq_len);
  PreferenceBatch next();
  PreferenceLoaderState state() const { return {epoch_, position_}; }
  // DataError when `state` does not fit these pairs.
  void restore(const PreferenceLoaderState& state);
  const std::vector<PreferencePair>& pairs() const { return *pairs_; }
  // Pairs per epoch served: floor(pairs / micro_batch_size) micro-batches' worth.
  int64_t batches_per_epoch() const;

 private:
  std::shared_ptr<const std::vector<PreferencePair>> pairs_;
  int64_t micro_batch_size_;
  uint64_t seed_;
  int64_t seq_len_;
  int64_t epoch_ = 0;
  int64_t position_ = 0;
  std::vector<int64_t> order_;
};

}  // namespace liger::data
