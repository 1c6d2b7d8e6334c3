// Hopper's tensor memory accelerator (TMA) for tiles of rows of a [B, T, H, D]
// tensor: a tensor map that describes the tensor to the copy engine (made on
// the host), the copy of one 64-column panel of rows into shared memory in
// the 128-byte swizzle (chunk ^ row % 8: the panel layout the warpgroup-MMA
// descriptors read), and the transaction barriers (mbarrier) that count its
// bytes in. One thread issues a tile's copies and the bytes they bring; every
// thread waits on the barrier's phase. Rows past T arrive as zeros.
//
// A barrier completes a phase when its expected arrivals (the issuing
// thread's, one per tile copied, each with the tile's byte count) and all the
// bytes have come; its phase bit then flips, so a waiter tracks the parity it
// waits for (0 first).
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace liger::cuda_kernels {

#if defined(__CUDACC__)

// A generic pointer to shared memory as the 32-bit shared-window address PTX takes.
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// A barrier that completes a phase on `arrivals` arrivals (each a
// tma_copy_rows, which also tells it its bytes) and the bytes they expect.
__device__ __forceinline__ void barrier_init(uint64_t* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(bar)), "r"(arrivals)
               : "memory");
}
// Makes initialized barriers visible to the copy engine (then a block barrier
// makes them visible to the other threads).
__device__ __forceinline__ void barrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// The issuing thread's arrival, and the bytes the phase waits for; only
// where `issue` holds (a predicate, not a branch: see tma_copy_rows).
__device__ __forceinline__ void barrier_expect_bytes(uint64_t* bar, uint32_t bytes, bool issue) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %2, 0;\n"
      "@p mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n}\n" ::"r"(shared_address(bar)),
      "r"(bytes), "r"(static_cast<int>(issue))
      : "memory");
}
// One arrival on a barrier that counts arrivals only (no bytes): a
// consumer's release of a buffer; only where `arrive` holds (a predicate).
__device__ __forceinline__ void barrier_arrive(uint64_t* bar, bool arrive) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %1, 0;\n"
      "@p mbarrier.arrive.shared::cta.b64 _, [%0];\n}\n" ::"r"(shared_address(bar)),
      "r"(static_cast<int>(arrive))
      : "memory");
}
// Returns once the phase with this parity has completed (the retry loop
// inside the asm: no branch the compiler sees).
__device__ __forceinline__ void barrier_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_FOR_PHASE:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_FOR_PHASE;\n}\n" ::"r"(shared_address(bar)),
      "r"(parity)
      : "memory");
}
// One box of `map` (64 columns x the map's rows, of one head and batch row)
// at (col, head, row, batch) into `dst` (1024-byte aligned), counted on
// `bar`; only where `issue` holds.
__device__ __forceinline__ void tma_copy_box(void* dst, const CUtensorMap* map, int col, int head,
                                             int row, int batch, uint64_t* bar, bool issue) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %7, 0;\n"
      "@p cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5}], [%6];\n}\n" ::"r"(shared_address(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(col), "r"(head), "r"(row), "r"(batch),
      "r"(shared_address(bar)), "r"(static_cast<int>(issue))
      : "memory");
}
#else
__device__ __forceinline__ void barrier_init(uint64_t*, uint32_t) {
  __trap();  // built without sm_90a: the launcher never selects these kernels
}
__device__ __forceinline__ void barrier_init_fence() {
  __trap();
}
__device__ __forceinline__ void barrier_expect_bytes(uint64_t*, uint32_t, bool) {
  __trap();
}
__device__ __forceinline__ void barrier_arrive(uint64_t*, bool) {
  __trap();
}
__device__ __forceinline__ void barrier_wait(uint64_t*, uint32_t) {
  __trap();
}
__device__ __forceinline__ void tma_copy_box(void*, const CUtensorMap*, int, int, int, int,
                                             uint64_t*, bool) {
  __trap();
}
#endif

// Rows [first, first + R) of one head and batch row into a panel tile [R, D]
// (D / 64 boxes, panel p at tile + p R 64), the barrier told their bytes,
// issued by the one thread where `issue` holds. Every thread of the warp
// calls it: a predicate instead of a branch keeps the warp converged, so a
// warpgroup-MMA product in flight meanwhile is not serialized.
template <typename T, int D, int R>
__device__ __forceinline__ void tma_copy_rows(T* tile, const CUtensorMap* map, int head, int first,
                                              int batch, uint64_t* bar, bool issue) {
  barrier_expect_bytes(bar, static_cast<uint32_t>(R * D * sizeof(T)), issue);
#pragma unroll
  for (int p = 0; p < D / 64; ++p) {
    tma_copy_box(tile + p * R * 64, map, p * 64, head, first, batch, bar, issue);
  }
}

#endif  // __CUDACC__

// The driver's cuTensorMapEncodeTiled (through the runtime, so nothing links
// libcuda), or nullptr where the driver lacks it.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();  // not sticky: clear it
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// A map of the contiguous [batch, t, heads, d] tensor at `base` (bf16 or f16,
// 16-byte aligned, d a multiple of 64) in boxes of 64 columns x box_rows rows
// of one head, 128-byte swizzled, rows past t read as zeros. False where the
// driver refuses it (the caller then copies without the TMA).
inline bool rows_tensor_map(CUtensorMap& map, const void* base, bool bf16, int64_t batch, int64_t t,
                            int64_t heads, int64_t d, int box_rows) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr || d % 64 != 0) return false;
  constexpr cuuint64_t kElement = 2;  // bytes of bf16 / f16
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(d), static_cast<cuuint64_t>(heads),
                              static_cast<cuuint64_t>(t), static_cast<cuuint64_t>(batch)};
  // bytes between consecutive heads, rows and batch rows (dimension 0 is contiguous)
  const cuuint64_t strides[3] = {dims[0] * kElement, dims[0] * dims[1] * kElement,
                                 dims[0] * dims[1] * dims[2] * kElement};
  const cuuint32_t box[4] = {64, 1, static_cast<cuuint32_t>(box_rows), 1};
  const cuuint32_t steps[4] = {1, 1, 1, 1};
  const CUresult r =
      encode(&map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
             const_cast<void*>(base), dims, strides, box, steps, CU_TENSOR_MAP_INTERLEAVE_NONE,
             CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

}  // namespace liger::cuda_kernels
