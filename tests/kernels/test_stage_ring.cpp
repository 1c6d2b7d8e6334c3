// The stage ring's phase arithmetic (kernels/cuda/stage_ring.h) on the CPU:
// a producer and the consumer warps of the warp-specialized attention passes
// run the protocol against a model of mbarrier (arrivals complete a phase; a
// wait for parity p returns once the phase of parity p has completed), one
// step of a randomly chosen runnable agent at a time. Every consumer must read
// each tile exactly when it holds that tile (not the previous use's, not one
// refilled under it), the walk's end must reach every consumer, and nothing
// may deadlock: for walks of 0 to 3 x stages + 1 tiles, rings of 1 to 4
// stages, one or eight consumers, and many interleavings. A ring with a
// wrong parity (off by one use) is caught by the same check.
#include "kernels/cuda/stage_ring.h"
#include "tests/catch.h"

#include <functional>
#include <random>
#include <string>
#include <vector>

using liger::cuda_kernels::ring_free_parity;
using liger::cuda_kernels::ring_landed_parity;
using liger::cuda_kernels::ring_reuses_stage;
using liger::cuda_kernels::ring_stage;

namespace {

// mbarrier as the PTX ISA describes it, arrivals only (the copies' bytes are
// part of the producer's one arrival here).
struct Barrier {
  int expected = 1, pending = 1, completed = 0;
  void arrive() {
    if (--pending == 0) {
      ++completed;
      pending = expected;
    }
  }
  // try_wait.parity: the phase with this parity has completed.
  bool ready(unsigned parity) const { return static_cast<unsigned>(completed & 1) != parity; }
};

struct Ring {
  std::vector<Barrier> landed, free;
  std::vector<int> content;  // the tile a stage holds (-1: the walk's end)
};

// The parities a protocol uses: the header's, or a deliberately wrong one.
struct Parities {
  std::function<unsigned(int, int)> landed, free;
};

// Runs a walk of `tiles` tiles through `stages` stages to `consumers`
// consumers; returns "" or what went wrong.
std::string run(int tiles, int stages, int consumers, unsigned seed, const Parities& parities) {
  Ring ring;
  ring.landed.assign(static_cast<size_t>(stages), Barrier{});
  ring.free.assign(static_cast<size_t>(stages), Barrier{consumers, consumers, 0});
  ring.content.assign(static_cast<size_t>(stages), -2);
  std::mt19937 rng(seed);
  int produced = 0;  // the producer's next tile (tiles: the end marker)
  bool producer_done = false;
  std::vector<int> next(static_cast<size_t>(consumers), 0);  // each consumer's next tile
  std::vector<bool> done(static_cast<size_t>(consumers), false);
  // A consumer holding a stage releases it a step later (its products running).
  std::vector<int> holding(static_cast<size_t>(consumers), -1);
  for (int step = 0; step < 100000; ++step) {
    std::vector<int> runnable;  // -1: the producer; c: consumer c
    if (!producer_done) {
      const int s = ring_stage(produced, stages);
      if (!ring_reuses_stage(produced, stages) ||
          ring.free[static_cast<size_t>(s)].ready(parities.free(produced, stages))) {
        runnable.push_back(-1);
      }
    }
    for (int c = 0; c < consumers; ++c) {
      if (done[static_cast<size_t>(c)]) continue;
      const int i = next[static_cast<size_t>(c)];
      if (holding[static_cast<size_t>(c)] >= 0 ||
          ring.landed[static_cast<size_t>(ring_stage(i, stages))].ready(
              parities.landed(i, stages))) {
        runnable.push_back(c);
      }
    }
    if (runnable.empty()) {
      bool all_done = producer_done;
      for (int c = 0; c < consumers; ++c) all_done = all_done && done[static_cast<size_t>(c)];
      return all_done ? "" : "deadlock at step " + std::to_string(step);
    }
    const int agent = runnable[rng() % runnable.size()];
    if (agent < 0) {  // fill the next tile (or the end marker) and arrive
      const size_t s = static_cast<size_t>(ring_stage(produced, stages));
      ring.content[s] = produced < tiles ? produced : -1;
      ring.landed[s].arrive();
      if (produced == tiles) producer_done = true;
      ++produced;
      continue;
    }
    const size_t c = static_cast<size_t>(agent);
    const int i = next[c];
    const size_t s = static_cast<size_t>(ring_stage(i, stages));
    if (holding[c] >= 0) {  // the products done: release the stage
      ring.free[s].arrive();
      holding[c] = -1;
      ++next[c];
      continue;
    }
    const int held = ring.content[s];
    if (i == tiles) {
      if (held != -1) {
        return "consumer " + std::to_string(agent) + " expected the end, read " +
               std::to_string(held);
      }
      done[c] = true;
      continue;
    }
    if (held != i) {
      return "consumer " + std::to_string(agent) + " expected tile " + std::to_string(i) +
             ", read " + std::to_string(held);
    }
    holding[c] = i;
  }
  return "did not finish";
}

const Parities kHeader{[](int i, int stages) { return ring_landed_parity(i, stages); },
                       [](int i, int stages) { return ring_free_parity(i, stages); }};

}  // namespace

TEST_CASE("stage ring: every consumer reads every tile in its turn, and the walk ends") {
  for (int stages = 1; stages <= 4; ++stages) {
    for (int tiles = 0; tiles <= 3 * stages + 1; ++tiles) {
      for (const int consumers : {1, 8}) {
        for (unsigned seed = 0; seed < 40; ++seed) {
          INFO("stages " << stages << ", tiles " << tiles << ", consumers " << consumers
                         << ", seed " << seed);
          CHECK(run(tiles, stages, consumers, seed, kHeader).empty());
        }
      }
    }
  }
}

TEST_CASE("stage ring: a parity off by one use is caught") {
  // Consumers waiting for the next use's landing deadlock or read a refill;
  // a producer not waiting for the previous use's release overwrites it.
  const Parities late_landed{
      [](int i, int stages) { return ring_landed_parity(i + stages, stages); },
      [](int i, int stages) { return ring_free_parity(i, stages); }};
  const Parities early_free{[](int i, int stages) { return ring_landed_parity(i, stages); },
                            [](int i, int stages) { return ring_free_parity(i - stages, stages); }};
  int late_caught = 0, early_caught = 0;
  for (unsigned seed = 0; seed < 40; ++seed) {
    late_caught += !run(9, 2, 8, seed, late_landed).empty();
    early_caught += !run(9, 2, 8, seed, early_free).empty();
  }
  CHECK(late_caught == 40);
  CHECK(early_caught > 0);
}
