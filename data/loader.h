// DataLoader: serves micro-batches of packed windows to one rank.
//
// Each epoch visits the windows in a fresh deterministic order (a permutation
// seeded by seed + epoch, identical on every platform). Rank r of W takes the
// permuted positions r, r + W, r + 2W, ... so ranks see disjoint windows and all
// see the same number, floor(num_windows / W), per epoch. next() hands out
// micro_batch_size consecutive windows of this rank's order and wraps into the
// next epoch when the current one runs out. state()/restore() let a resumed run
// continue with exactly the windows it would have seen.
#pragma once

#include "data/packing.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace liger::data {

struct LoaderOptions {
  int64_t micro_batch_size = 1;
  uint64_t seed = 0;
  int64_t rank = 0;
  int64_t world_size = 1;
};

// A micro-batch, row-major [batch_size, seq_len]; labels are kIgnoreIndex where
// nothing is predicted. position_ids and document_ids follow the dataset's
// packing mode (see data/packing.h): positions restart per document when it is
// isolated; document ids count the documents of each row from 0.
struct Batch {
  int64_t batch_size = 0;
  int64_t seq_len = 0;
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;
  std::vector<int64_t> position_ids;
  std::vector<int64_t> document_ids;

  // Labels that are trained on (not kIgnoreIndex).
  int64_t num_target_tokens() const;
};

// Where a loader stands: the next window is position `position` of this rank's
// order for epoch `epoch`. Always 0 <= position < windows_per_epoch().
struct LoaderState {
  int64_t epoch = 0;
  int64_t position = 0;

  bool operator==(const LoaderState& other) const {
    return epoch == other.epoch && position == other.position;
  }
  bool operator!=(const LoaderState& other) const { return !(*this == other); }
};

class DataLoader {
 public:
  // DataError for bad options or when a rank would get no window per epoch.
  DataLoader(std::shared_ptr<const PackedDataset> dataset, const LoaderOptions& options);

  // The next micro-batch (always micro_batch_size rows).
  Batch next();

  LoaderState state() const { return {epoch_, position_}; }
  // Continues from `state` (from state() of a loader with the same data and
  // options); DataError when it does not fit this dataset.
  void restore(const LoaderState& state);

  // Windows this rank sees per epoch: floor(num_windows / world_size).
  int64_t windows_per_epoch() const { return windows_per_epoch_; }
  const PackedDataset& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return options_; }

 private:
  // Computes this rank's window order for `epoch` and moves to its start.
  void start_epoch(int64_t epoch);

  std::shared_ptr<const PackedDataset> dataset_;
  LoaderOptions options_;
  int64_t windows_per_epoch_ = 0;
  int64_t epoch_ = 0;
  int64_t position_ = 0;
  std::vector<int64_t> rank_order_;  // window indices of this rank, for epoch_
};

// Windows [first, first + count) of `dataset` in order, as one batch of
// `count` rows (evaluation). std::out_of_range when they do not exist.
Batch batch_of_windows(const PackedDataset& dataset, int64_t first, int64_t count);

// The order in which epoch `epoch` visits windows 0..num_windows-1: a
// Fisher–Yates shuffle driven by std::mt19937_64(seed + epoch), with our own
// unbiased bounded draw, so the result is the same on every standard library.
std::vector<int64_t> epoch_permutation(int64_t num_windows, uint64_t seed, int64_t epoch);

}  // namespace liger::data
