// The order in which the flash attention kernels' blocks take their tiles.
//
// A kernel's grid is one block per (tile, head, batch row), launched as a
// one-dimensional grid whose block ids the GPU starts roughly in order. Under
// a causal mask the tiles differ in work: the last query tile of 8192 tokens
// walks 128 key tiles and the first walks one (the key tiles of dk/dv the
// other way round). Started lightest first and head after head, the heaviest
// tiles of the last heads start last and run on alone at the end; started
// heaviest first, the grid ends on light tiles that fill the gaps
// (FlashAttention's scheduling, longest job first). Block `id` takes:
//   - batch rows one after another;
//   - within a row, heads in groups of `group_heads` (kept small, so that the
//     blocks running at once read the keys and values of a few heads: they
//     stay in L2);
//   - within a group, tiles in descending index when `descending` (the
//     forward and dq: the last query tiles are the heaviest), else ascending
//     (dk/dv: the first key tiles);
//   - within a tile index, the group's heads.
// Or, for the warp-specialized dk/dv (tile_of_block_by_rank below): tile
// rank over all heads and batch rows.
// The map is a bijection from [0, tiles * heads * batch) onto the places.
//
// Plain C++ with host and device qualifiers: the kernels decode their block
// id with it, and tests/kernels/test_tile_order.cpp checks it on the CPU.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define LIGER_TILE_ORDER_HOST_DEVICE __host__ __device__
#else
#define LIGER_TILE_ORDER_HOST_DEVICE
#endif

namespace liger::cuda_kernels {

// Key/value heads whose blocks run together (their query heads, for the
// query-tile kernels): at 8192 tokens and head_dim 128, 8 MiB of keys and
// values.
constexpr int kKeyValueHeadsPerGroup = 2;

struct TilePlace {
  int tile, head, batch;
};

// 32-bit arithmetic (the launchers keep grids under 2^31 blocks): a few
// registers and no 64-bit division in the kernels.
LIGER_TILE_ORDER_HOST_DEVICE inline TilePlace tile_of_block(unsigned id, int tiles, int heads,
                                                            int group_heads, bool descending) {
  TilePlace p;
  const unsigned per_batch = static_cast<unsigned>(tiles) * static_cast<unsigned>(heads);
  p.batch = static_cast<int>(id / per_batch);
  const unsigned in_batch = id - static_cast<unsigned>(p.batch) * per_batch;
  const unsigned per_group = static_cast<unsigned>(tiles) * static_cast<unsigned>(group_heads);
  const unsigned group = in_batch / per_group;
  const int first_head = static_cast<int>(group) * group_heads;
  // the last group may hold fewer heads
  const int heads_here = heads - first_head < group_heads ? heads - first_head : group_heads;
  const unsigned in_group = in_batch - group * per_group;
  const unsigned rank = in_group / static_cast<unsigned>(heads_here);  // place in the walk order
  p.head = first_head + static_cast<int>(in_group - rank * static_cast<unsigned>(heads_here));
  p.tile = descending ? tiles - 1 - static_cast<int>(rank) : static_cast<int>(rank);
  return p;
}

// Block `id` of a grid in pure heaviest-first order: tile rank first (every
// batch row's and head's tile of rank 0, then rank 1, ...), then batch rows,
// then heads; tiles in descending index when `descending`, else ascending.
// The warp-specialized dk/dv takes it: its blocks of a key tile walk the group's
// query heads, so there are 4x fewer of them than query tiles, each up to
// 4x heavier, and with heads in groups of kKeyValueHeadsPerGroup the last
// group's heaviest blocks start when the other groups are nearly done. In
// the makespan simulation of test_tile_order (132 slots, Llama-3-8B's 8
// key/value heads): 4096 tokens 1.49x the ideal in groups, 1.00x by rank;
// 4 rows of 2048 tokens 1.26x and 1.03x; 8192 tokens about 1.01x both.
// The head groups' L2 reuse is given up; at 8192 tokens, where the groups
// have no tail, the two orders have not been timed side by side.
LIGER_TILE_ORDER_HOST_DEVICE inline TilePlace tile_of_block_by_rank(unsigned id, int tiles,
                                                                    int heads, int batch,
                                                                    bool descending) {
  TilePlace p;
  const unsigned per_rank = static_cast<unsigned>(heads) * static_cast<unsigned>(batch);
  const unsigned rank = id / per_rank;
  const unsigned in_rank = id - rank * per_rank;
  p.batch = static_cast<int>(in_rank / static_cast<unsigned>(heads));
  p.head =
      static_cast<int>(in_rank - static_cast<unsigned>(p.batch) * static_cast<unsigned>(heads));
  p.tile = descending ? tiles - 1 - static_cast<int>(rank) : static_cast<int>(rank);
  return p;
}

}  // namespace liger::cuda_kernels
