// Zeroes the blocks of a per-group weight gradient whose group has no rows.
// A grouped GEMM over groups of rows (at::_grouped_mm with the contraction
// over rows) leaves an empty group's [K, N] block unwritten; zeroing every
// block in a full pass would read and write the whole gradient (hundreds of
// megabytes for 128 experts), so here only the empty groups' blocks are
// touched and the rest costs one read of two group ends per CUDA block.
//
// out [groups, block_elems] of `dtype`; ends [groups] int32, cumulative group
// ends (group g's rows are ends[g-1] .. ends[g] - 1, ends[-1] = 0).
#include "kernels/cuda/common.cuh"

#include <algorithm>

namespace liger::cuda_kernels {
namespace {

constexpr int kThreads = 256;

// grid: (CUDA blocks per group, groups); each CUDA block zeroes a strided
// share of its group's block in 16-byte stores where aligned.
__global__ void __launch_bounds__(kThreads)
    zero_empty_groups_kernel(unsigned char* __restrict__ out, const int* __restrict__ ends,
                             int64_t block_bytes) {
  const int group = blockIdx.y;
  const int start = group == 0 ? 0 : ends[group - 1];
  if (ends[group] != start) return;  // the group has rows: the GEMM wrote its block
  unsigned char* base = out + static_cast<int64_t>(group) * block_bytes;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (reinterpret_cast<uintptr_t>(base) % 16 == 0 && block_bytes % 16 == 0) {
    uint4* v = reinterpret_cast<uint4*>(base);
    for (int64_t i = first; i < block_bytes / 16; i += stride) v[i] = make_uint4(0, 0, 0, 0);
  } else {
    for (int64_t i = first; i < block_bytes; i += stride) base[i] = 0;
  }
}

}  // namespace

cudaError_t zero_empty_groups(void* out, const int* ends, int64_t groups, int64_t block_elems,
                              DType dtype, cudaStream_t stream) {
  if (groups == 0 || block_elems == 0) return cudaSuccess;
  if (groups > 65535) return cudaErrorInvalidValue;  // gridDim.y
  const int64_t block_bytes = block_elems * static_cast<int64_t>(dtype_size(dtype));
  // enough CUDA blocks per group to fill the GPU when a few groups are empty
  const int64_t per_group = std::min<int64_t>((block_bytes / 16 + kThreads - 1) / kThreads, 64);
  const dim3 grid(static_cast<unsigned>(std::max<int64_t>(per_group, 1)),
                  static_cast<unsigned>(groups));
  zero_empty_groups_kernel<<<grid, kThreads, 0, stream>>>(static_cast<unsigned char*>(out), ends,
                                                          block_bytes);
  return cudaGetLastError();
}

}  // namespace liger::cuda_kernels
