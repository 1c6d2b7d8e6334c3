// The phase arithmetic of the warp-specialized attention passes' ring of
// shared-memory stages (kernels/cuda/attention.cu: attention_forward_ws_kernel,
// attention_dkdv_ws_kernel).
//
// A producer fills tiles 0, 1, 2, ... of a walk into a ring of `stages`
// stages: tile i goes to stage i % stages as that stage's use i / stages.
// Each stage has two transaction barriers (mbarrier): "landed", completed
// once per use when the tile's copies (and the producer's stores) have come,
// and "free", completed once per use when every consumer has released it. A
// barrier counts its completed phases; a wait for parity p returns once the
// phase with parity p has completed, that is while the number of completed
// phases has the other parity (so a wait for parity 1 on a fresh barrier
// returns at once). Hence:
//   - a consumer waits for tile i's landed barrier with parity (i / stages) & 1
//     (its (i / stages)-th completion, counted from 0);
//   - the producer fills tile i into a stage that held tile i - stages only
//     after that tile's release, the (i / stages - 1)-th completion of the
//     stage's free barrier: parity (i / stages - 1) & 1; the first use waits
//     for nothing.
// Neither side can get two phases ahead of a waiter (a refill needs every
// release of the previous use, a release follows the consumer's own wait), so
// the parity names the phase exactly.
//
// Plain C++ with host and device qualifiers: the kernels take their parities
// from it, and tests/kernels/test_stage_ring.cpp runs the protocol on the CPU
// against a model of the barriers, in random interleavings.
#pragma once

#ifdef __CUDACC__
#define LIGER_STAGE_RING_HOST_DEVICE __host__ __device__
#else
#define LIGER_STAGE_RING_HOST_DEVICE
#endif

namespace liger::cuda_kernels {

// The stage that tile i of a walk occupies.
LIGER_STAGE_RING_HOST_DEVICE inline int ring_stage(int i, int stages) {
  return i % stages;
}
// The parity a consumer waits for on the landed barrier of tile i's stage.
LIGER_STAGE_RING_HOST_DEVICE inline unsigned ring_landed_parity(int i, int stages) {
  return static_cast<unsigned>(i / stages) & 1u;
}
// Whether the producer must wait for the stage's release before filling tile
// i, and the parity it waits for on the stage's free barrier.
LIGER_STAGE_RING_HOST_DEVICE inline bool ring_reuses_stage(int i, int stages) {
  return i >= stages;
}
LIGER_STAGE_RING_HOST_DEVICE inline unsigned ring_free_parity(int i, int stages) {
  return static_cast<unsigned>(i / stages - 1) & 1u;
}

}  // namespace liger::cuda_kernels
