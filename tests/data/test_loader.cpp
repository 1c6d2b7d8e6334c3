// DataLoader: deterministic epochs, sharding by rank, wrapping, micro-batch
// independence and exact resume.
#include "tests/catch.h"
#include "tests/data/data_test_helpers.h"

#include "data/loader.h"
#include "data/loader_state_json.h"

#include <algorithm>
#include <set>

using namespace liger::data;
using namespace liger::data::testing;

namespace {

constexpr int64_t kSeqLen = 4;

// A dataset of `num_windows` windows whose token at stream position p is p, so
// a row's first input id / kSeqLen is the window it came from.
std::shared_ptr<const PackedDataset> counting_dataset(int64_t num_windows) {
  TokenStream stream;
  Document doc;
  for (int64_t p = 0; p < num_windows * kSeqLen + 1; ++p) {
    doc.tokens.push_back(static_cast<int32_t>(p));
    doc.loss_mask.push_back(1);
  }
  stream.append(doc);
  return std::make_shared<const PackedDataset>(std::move(stream), kSeqLen,
                                               std::vector<std::string>{"counting"});
}

// The windows of a batch, row by row.
std::vector<int64_t> windows_of(const Batch& batch) {
  std::vector<int64_t> windows;
  for (int64_t row = 0; row < batch.batch_size; ++row) {
    windows.push_back(batch.input_ids[row * batch.seq_len] / kSeqLen);
  }
  return windows;
}

// The windows of the next `batches` batches of `loader`, in order.
std::vector<int64_t> take_windows(DataLoader& loader, int64_t batches) {
  std::vector<int64_t> windows;
  for (int64_t i = 0; i < batches; ++i) {
    for (const int64_t w : windows_of(loader.next())) windows.push_back(w);
  }
  return windows;
}

LoaderOptions options(int64_t micro_batch, uint64_t seed, int64_t rank = 0, int64_t world = 1) {
  return LoaderOptions{micro_batch, seed, rank, world};
}

}  // namespace

TEST_CASE("epoch_permutation is a seeded permutation, fixed across platforms", "[data][loader]") {
  const std::vector<int64_t> order = epoch_permutation(10, 42, 0);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(epoch_permutation(10, 42, 0) == order);
  CHECK(epoch_permutation(10, 43, 0) != order);
  CHECK(epoch_permutation(10, 42, 1) != order);
  // Pinned: std::mt19937_64's output is fixed by the standard and the draw is our
  // own, so this holds on every platform. A change here breaks checkpoint resume.
  CHECK(order == std::vector<int64_t>{1, 7, 9, 0, 3, 8, 4, 2, 5, 6});
  CHECK(epoch_permutation(0, 1, 0).empty());
  CHECK(epoch_permutation(1, 1, 0) == std::vector<int64_t>{0});
}

TEST_CASE("batches are row-major windows with their labels", "[data][loader]") {
  DataLoader loader(counting_dataset(5), options(2, 7));
  const Batch batch = loader.next();
  REQUIRE(batch.batch_size == 2);
  REQUIRE(batch.seq_len == kSeqLen);
  REQUIRE(batch.input_ids.size() == 8);
  REQUIRE(batch.labels.size() == 8);
  for (int64_t row = 0; row < 2; ++row) {
    const int64_t start = batch.input_ids[row * kSeqLen];
    for (int64_t t = 0; t < kSeqLen; ++t) {
      CHECK(batch.input_ids[row * kSeqLen + t] == start + t);
      CHECK(batch.labels[row * kSeqLen + t] == start + t + 1);
    }
  }
  CHECK(batch.num_target_tokens() == 8);
  // One document: positions 0..T-1 and document 0 in every row.
  CHECK(batch.position_ids == std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 3});
  CHECK(batch.document_ids == std::vector<int64_t>(8, 0));
  Batch masked = batch;
  masked.labels[0] = kIgnoreIndex;
  CHECK(masked.num_target_tokens() == 7);
}

TEST_CASE("same seed, same order; another seed, another order", "[data][loader]") {
  const auto data = counting_dataset(50);
  DataLoader a(data, options(3, 11)), b(data, options(3, 11)), c(data, options(3, 12));
  const auto order_a = take_windows(a, 20);
  CHECK(take_windows(b, 20) == order_a);
  CHECK(take_windows(c, 20) != order_a);
}

TEST_CASE("ranks take disjoint, equally many windows that cover floor(N/W)*W per epoch",
          "[data][loader]") {
  const int64_t num_windows = 23;
  const auto data = counting_dataset(num_windows);
  for (const int64_t world : {1, 2, 3, 4, 7}) {
    INFO("world size " << world);
    const int64_t per_rank = num_windows / world;
    std::set<int64_t> seen;
    for (int64_t rank = 0; rank < world; ++rank) {
      DataLoader loader(data, options(1, 5, rank, world));
      CHECK(loader.windows_per_epoch() == per_rank);
      const auto windows = take_windows(loader, per_rank);
      CHECK(loader.state() == LoaderState{1, 0});
      // Rank r holds permuted positions r, r + W, ...
      const auto permutation = epoch_permutation(num_windows, 5, 0);
      for (int64_t i = 0; i < per_rank; ++i) CHECK(windows[i] == permutation[rank + i * world]);
      seen.insert(windows.begin(), windows.end());
    }
    CHECK(static_cast<int64_t>(seen.size()) == per_rank * world);
  }
}

TEST_CASE("a rank that would get no window is an error", "[data][loader]") {
  const std::string message =
      data_error_message([] { DataLoader(counting_dataset(3), options(1, 0, 0, 4)); });
  CHECK_HAS(message, "3 windows");
  CHECK_HAS(message, "4 ranks");
  CHECK_HAS(message, "data.seq_len");
  CHECK_HAS(data_error_message([] { DataLoader(counting_dataset(3), options(0, 0)); }),
            "micro_batch_size");
  CHECK_HAS(data_error_message([] { DataLoader(counting_dataset(3), options(1, 0, 2, 2)); }),
            "rank 2");
}

TEST_CASE("epochs wrap: each visits every window once, in a new order", "[data][loader]") {
  const int64_t num_windows = 10;
  DataLoader loader(counting_dataset(num_windows), options(1, 99));
  const auto epoch0 = take_windows(loader, num_windows);
  CHECK(loader.state() == LoaderState{1, 0});
  const auto epoch1 = take_windows(loader, num_windows);
  CHECK(epoch0 == epoch_permutation(num_windows, 99, 0));
  CHECK(epoch1 == epoch_permutation(num_windows, 99, 1));
  CHECK(epoch0 != epoch1);

  // A micro-batch may straddle two epochs.
  DataLoader straddling(counting_dataset(num_windows), options(3, 99));
  const auto straddled = take_windows(straddling, 4);  // 12 windows
  CHECK(std::vector<int64_t>(straddled.begin(), straddled.begin() + 10) == epoch0);
  CHECK(std::vector<int64_t>(straddled.begin() + 10, straddled.end()) ==
        std::vector<int64_t>(epoch1.begin(), epoch1.begin() + 2));
  CHECK(straddling.state() == LoaderState{1, 2});
}

TEST_CASE("micro-batches of 8x1 and 2x4 yield the same windows in the same order",
          "[data][loader]") {
  const auto data = counting_dataset(13);
  for (const int64_t rank : {0, 1}) {
    DataLoader ones(data, options(1, 3, rank, 2)), fours(data, options(4, 3, rank, 2));
    for (int step = 0; step < 5; ++step) {  // crosses epochs (6 windows per rank)
      CHECK(take_windows(ones, 8) == take_windows(fours, 2));
      CHECK(ones.state() == fours.state());
    }
  }
}

TEST_CASE("a restored loader continues exactly where the saved one was", "[data][loader]") {
  const auto data = counting_dataset(17);
  for (const int64_t already : {0, 1, 5, 8, 9, 23}) {
    INFO("batches before the save: " << already);
    DataLoader original(data, options(2, 77, 1, 2));
    take_windows(original, already);
    // Through JSON, as a checkpoint would store it.
    const nlohmann::json saved = loader_state_to_json(original.state());

    DataLoader resumed(data, options(2, 77, 1, 2));
    resumed.restore(loader_state_from_json(saved));
    CHECK(resumed.state() == original.state());
    for (int step = 0; step < 12; ++step) {
      const Batch expected = original.next();
      const Batch got = resumed.next();
      CHECK(got.input_ids == expected.input_ids);
      CHECK(got.labels == expected.labels);
    }
  }
}

TEST_CASE("restore rejects a state that does not fit the data", "[data][loader]") {
  DataLoader loader(counting_dataset(6), options(1, 0));
  const std::string message = data_error_message([&] { loader.restore(LoaderState{0, 6}); });
  CHECK_HAS(message, "position 6");
  CHECK_HAS(message, "6 windows per rank");
  CHECK_HAS(data_error_message([&] { loader.restore(LoaderState{-1, 0}); }), "epoch -1");
  loader.restore(LoaderState{4, 5});
  CHECK(loader.state() == LoaderState{4, 5});
  CHECK(windows_of(loader.next()).front() == epoch_permutation(6, 0, 4)[5]);
  CHECK(loader.state() == LoaderState{5, 0});
}

TEST_CASE("loader state JSON round-trips and explains damage", "[data][loader]") {
  const LoaderState state{3, 17};
  const nlohmann::json json = state;  // nlohmann's to_json hook
  CHECK(json == nlohmann::json::parse(R"({"epoch": 3, "position": 17})"));
  CHECK(json.get<LoaderState>() == state);
  CHECK(loader_state_from_json(loader_state_to_json(state)) == state);

  CHECK_HAS(
      data_error_message([] { loader_state_from_json(nlohmann::json::parse(R"({"epoch": 1})")); }),
      "\"position\"");
  CHECK_HAS(data_error_message([] {
              loader_state_from_json(nlohmann::json::parse(R"({"epoch": "1", "position": 0})"));
            }),
            "\"epoch\" must be a non-negative integer");
  CHECK_HAS(data_error_message([] { loader_state_from_json(nlohmann::json::parse("[1, 2]")); }),
            "JSON object");
}
