#include "data/loader.h"

#include "data/data_error.h"

#include <random>
#include <stdexcept>
#include <utility>

namespace liger::data {

namespace {

// A uniform draw from [0, bound) for bound >= 1. Rejects the lowest
// 2^64 mod bound raw values so every result is equally likely; only the
// generator's (standardised) raw output is used.
uint64_t uniform_below(std::mt19937_64& generator, uint64_t bound) {
  const uint64_t reject_below = (0 - bound) % bound;  // == 2^64 mod bound
  uint64_t raw = 0;
  do {
    raw = generator();
  } while (raw < reject_below);
  return raw % bound;
}

void check_options(const LoaderOptions& options) {
  if (options.micro_batch_size < 1) {
    throw DataError("training.micro_batch_size must be at least 1 (got " +
                    std::to_string(options.micro_batch_size) + ")");
  }
  if (options.world_size < 1) {
    throw DataError("the world size must be at least 1 (got " + std::to_string(options.world_size) +
                    ")");
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    throw DataError("rank " + std::to_string(options.rank) + " is outside [0, world size " +
                    std::to_string(options.world_size) + ")");
  }
}

}  // namespace

int64_t Batch::num_target_tokens() const {
  int64_t count = 0;
  for (const int64_t label : labels) count += label != kIgnoreIndex;
  return count;
}

std::vector<int64_t> epoch_permutation(int64_t num_windows, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(num_windows));
  for (int64_t i = 0; i < num_windows; ++i) order[i] = i;
  std::mt19937_64 generator(seed + static_cast<uint64_t>(epoch));
  for (int64_t i = num_windows - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(uniform_below(generator, static_cast<uint64_t>(i) + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

DataLoader::DataLoader(std::shared_ptr<const PackedDataset> dataset, const LoaderOptions& options)
    : dataset_(std::move(dataset)), options_(options) {
  if (!dataset_) throw std::invalid_argument("DataLoader: no dataset");
  check_options(options_);
  windows_per_epoch_ = dataset_->num_windows() / options_.world_size;
  if (windows_per_epoch_ == 0) {
    throw DataError(
        "the data (" + dataset_->describe_files() + ") makes " +
        std::to_string(dataset_->num_windows()) + " windows of data.seq_len " +
        std::to_string(dataset_->seq_len()) + " tokens, fewer than the " +
        std::to_string(options_.world_size) +
        " ranks that each need one; add data, use a smaller data.seq_len or fewer ranks");
  }
  start_epoch(0);
}

void DataLoader::start_epoch(int64_t epoch) {
  const std::vector<int64_t> order =
      epoch_permutation(dataset_->num_windows(), options_.seed, epoch);
  rank_order_.resize(static_cast<size_t>(windows_per_epoch_));
  for (int64_t i = 0; i < windows_per_epoch_; ++i) {
    rank_order_[i] = order[options_.rank + i * options_.world_size];
  }
  epoch_ = epoch;
  position_ = 0;
}

namespace {

// A batch of `rows` rows of `seq_len`, every vector sized.
Batch empty_batch(int64_t rows, int64_t seq_len) {
  Batch batch;
  batch.batch_size = rows;
  batch.seq_len = seq_len;
  const auto cells = static_cast<size_t>(rows * seq_len);
  batch.input_ids.resize(cells);
  batch.labels.resize(cells);
  batch.position_ids.resize(cells);
  batch.document_ids.resize(cells);
  return batch;
}

WindowRows row_of(Batch& batch, int64_t row) {
  const int64_t offset = row * batch.seq_len;
  return {batch.input_ids.data() + offset, batch.labels.data() + offset,
          batch.position_ids.data() + offset, batch.document_ids.data() + offset};
}

}  // namespace

Batch batch_of_windows(const PackedDataset& dataset, int64_t first, int64_t count) {
  if (first < 0 || count < 1 || first + count > dataset.num_windows()) {
    throw std::out_of_range("batch_of_windows: [" + std::to_string(first) + ", " +
                            std::to_string(first + count) + ") is not inside [0, " +
                            std::to_string(dataset.num_windows()) + ")");
  }
  Batch batch = empty_batch(count, dataset.seq_len());
  for (int64_t row = 0; row < count; ++row) dataset.fill_window(first + row, row_of(batch, row));
  return batch;
}

Batch DataLoader::next() {
  Batch batch = empty_batch(options_.micro_batch_size, dataset_->seq_len());
  for (int64_t row = 0; row < batch.batch_size; ++row) {
    dataset_->fill_window(rank_order_[position_], row_of(batch, row));
    // Keep the state normalised: position always points at a window still to come.
    if (++position_ == windows_per_epoch_) start_epoch(epoch_ + 1);
  }
  return batch;
}

void DataLoader::restore(const LoaderState& state) {
  if (state.epoch < 0 || state.position < 0 || state.position >= windows_per_epoch_) {
    throw DataError("the saved data loader state (epoch " + std::to_string(state.epoch) +
                    ", position " + std::to_string(state.position) +
                    ") does not fit this data: each epoch has " +
                    std::to_string(windows_per_epoch_) +
                    " windows per rank. Resume with the data, data.seq_len and number of ranks the "
                    "checkpoint was made with");
  }
  if (state.epoch != epoch_) start_epoch(state.epoch);
  position_ = state.position;
}

}  // namespace liger::data
