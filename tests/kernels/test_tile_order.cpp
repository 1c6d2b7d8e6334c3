// The order of the flash attention kernels' blocks (kernels/cuda/tile_order.h),
// on the CPU: the block ids map one to one onto (tile, head, batch row) places
// for awkward sizes (a last head group with fewer heads, one tile, one head);
// batch rows and head groups come one after another; within a group each tile
// index is taken by all of the group's heads before the next, in descending
// (query tiles) or ascending (key tiles) order. And the point of it: in a
// simulation of blocks started in id order on fixed slots, causal attention's
// tiles finish sooner heaviest first than lightest first.
#include "kernels/cuda/tile_order.h"
#include "tests/catch.h"

#include <algorithm>
#include <functional>
#include <queue>
#include <string>
#include <vector>

using liger::cuda_kernels::kKeyValueHeadsPerGroup;
using liger::cuda_kernels::tile_of_block;
using liger::cuda_kernels::tile_of_block_by_rank;
using liger::cuda_kernels::TilePlace;

namespace {

// A place's index in [0, tiles * heads * batch), after checking its bounds.
size_t place_index(const TilePlace& p, int tiles, int heads, int batch) {
  REQUIRE(p.tile >= 0);
  REQUIRE(p.tile < tiles);
  REQUIRE(p.head >= 0);
  REQUIRE(p.head < heads);
  REQUIRE(p.batch >= 0);
  REQUIRE(p.batch < batch);
  return static_cast<size_t>((p.batch * heads + p.head) * tiles + p.tile);
}

void check_order(int tiles, int heads, int group_heads, int batch, bool descending) {
  INFO("tiles " << tiles << ", heads " << heads << ", group " << group_heads << ", batch " << batch
                << (descending ? ", descending" : ", ascending"));
  const int blocks = tiles * heads * batch;
  std::vector<int> seen(static_cast<size_t>(blocks), 0);
  TilePlace previous{-1, -1, -1};
  int bad_order = 0;
  for (int id = 0; id < blocks; ++id) {
    const TilePlace p =
        tile_of_block(static_cast<unsigned>(id), tiles, heads, group_heads, descending);
    ++seen[place_index(p, tiles, heads, batch)];
    if (id > 0) {
      const int group = p.head / group_heads, previous_group = previous.head / group_heads;
      // the walk order's rank of a tile: 0 for the first taken
      const auto rank = [&](int tile) { return descending ? tiles - 1 - tile : tile; };
      if (p.batch < previous.batch) ++bad_order;
      if (p.batch == previous.batch && group < previous_group) ++bad_order;
      if (p.batch == previous.batch && group == previous_group) {
        // same tile: the next head; else the next tile, from the group's first head
        const bool next_head = p.tile == previous.tile && p.head == previous.head + 1;
        const bool next_tile =
            rank(p.tile) == rank(previous.tile) + 1 && p.head == group * group_heads;
        if (!next_head && !next_tile) ++bad_order;
      }
    }
    previous = p;
  }
  CHECK(std::count(seen.begin(), seen.end(), 1) == blocks);
  CHECK(bad_order == 0);
}

// tile_of_block_by_rank: one to one, and in (rank, batch row, head) order.
void check_order_by_rank(int tiles, int heads, int batch, bool descending) {
  INFO("by rank: tiles " << tiles << ", heads " << heads << ", batch " << batch
                         << (descending ? ", descending" : ", ascending"));
  const int blocks = tiles * heads * batch;
  std::vector<int> seen(static_cast<size_t>(blocks), 0);
  int bad_order = 0;
  for (int id = 0; id < blocks; ++id) {
    const TilePlace p =
        tile_of_block_by_rank(static_cast<unsigned>(id), tiles, heads, batch, descending);
    ++seen[place_index(p, tiles, heads, batch)];
    const int rank = descending ? tiles - 1 - p.tile : p.tile;
    if (rank * heads * batch + p.batch * heads + p.head != id) ++bad_order;
  }
  CHECK(std::count(seen.begin(), seen.end(), 1) == blocks);
  CHECK(bad_order == 0);
}

// Blocks started in id order on `slots` slots, each as soon as one is free;
// a block's time is its tile count. Returns when the last one ends.
long makespan(const std::vector<int>& durations, int slots) {
  std::priority_queue<long, std::vector<long>, std::greater<long> > free_at;
  for (int s = 0; s < slots; ++s) free_at.push(0);
  long end = 0;
  for (const int d : durations) {
    const long start = free_at.top();
    free_at.pop();
    free_at.push(start + d);
    end = std::max(end, start + d);
  }
  return end;
}

}  // namespace

TEST_CASE("tile order: a bijection in batch, group, tile, head order") {
  for (const bool descending : {true, false}) {
    check_order(128, 32, 8, 1, descending);  // Llama-3-8B at 8192 tokens
    check_order(7, 12, 8, 3, descending);    // a last group of 4 heads
    check_order(5, 3, 2, 2, descending);     // a last group of 1 head
    check_order(1, 1, 1, 4, descending);     // one tile, one head
    check_order(9, 4, 4, 1, descending);     // one group
    check_order(3, 5, 8, 2, descending);     // a group wider than the heads
  }
}

TEST_CASE("tile order by rank: a bijection in rank, batch, head order") {
  for (const bool descending : {true, false}) {
    check_order_by_rank(32, 8, 1, descending);  // Llama-3-8B's key tiles at 4096 tokens
    check_order_by_rank(7, 3, 5, descending);
    check_order_by_rank(1, 1, 4, descending);  // one tile, one head
    check_order_by_rank(5, 1, 1, descending);
  }
}

TEST_CASE("tile order: dk/dv's key tiles end sooner by rank than in head groups") {
  // dk/dv's blocks of 128 keys at 4096 tokens: key tile i walks the 4 query
  // heads of its key/value head over 64-query tiles from its own keys on,
  // (4096 - 128 i) / 64 * 4 steps; 8 key/value heads, one block per SM.
  const int tiles = 32, heads = 8, slots = 132;
  const auto steps = [&](const TilePlace& p) { return (4096 - 128 * p.tile) / 64 * 4; };
  std::vector<int> grouped, by_rank;
  long work = 0;
  for (int id = 0; id < tiles * heads; ++id) {
    const unsigned u = static_cast<unsigned>(id);
    grouped.push_back(steps(tile_of_block(u, tiles, heads, kKeyValueHeadsPerGroup, false)));
    by_rank.push_back(steps(tile_of_block_by_rank(u, tiles, heads, 1, false)));
    work += by_rank.back();
  }
  const long in_groups = makespan(grouped, slots), ranked = makespan(by_rank, slots);
  const double ideal = static_cast<double>(work) / slots;
  INFO("head groups " << in_groups << ", by rank " << ranked << ", ideal " << ideal);
  CHECK(ranked <= 1.03 * ideal);
  CHECK(in_groups > 1.3 * ideal);  // the last group's heaviest tiles start late
}

TEST_CASE("tile order: causal tiles end sooner heaviest first") {
  // The forward's query tiles of 8192 tokens (query tile i walks i + 1 key
  // tiles), 32 query heads over 8 key/value heads, 3 blocks on each of 132 SMs.
  const int tiles = 128, heads = 32, slots = 3 * 132;
  const int group = kKeyValueHeadsPerGroup * (heads / 8);
  std::vector<int> lightest_first, heaviest_first;
  long work = 0;
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < tiles; ++i) lightest_first.push_back(i + 1);  // the grid before
  }
  for (int id = 0; id < tiles * heads; ++id) {
    const TilePlace p = tile_of_block(static_cast<unsigned>(id), tiles, heads, group, true);
    heaviest_first.push_back(p.tile + 1);
    work += p.tile + 1;
  }
  const long before = makespan(lightest_first, slots), after = makespan(heaviest_first, slots);
  const double ideal = static_cast<double>(work) / slots;
  INFO("lightest first " << before << ", heaviest first " << after << ", ideal " << ideal);
  CHECK(after < before);
  CHECK(after <= 1.03 * ideal);  // within 3% of perfectly even slots (lightest first: 12% over)
}
