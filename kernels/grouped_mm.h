// Grouped matrix products over rows sorted by group (the experts of the moe
// op), through at::_grouped_mm: one call for all groups. On a CUDA device of
// compute capability 9.0 with bf16 operands ATen runs it as one CUTLASS
// grouped GEMM reading the group offsets on the device; elsewhere (the CPU,
// fp32, other GPUs) ATen loops over the groups itself, after copying the
// offsets to the host.
//
// at::_grouped_mm wants every non-unit stride a multiple of 16 bytes; sizes
// that miss it (awkward test shapes) are zero-padded up to it here, which
// adds nothing to the products.
#pragma once

#include <ATen/core/Tensor.h>

namespace liger::kernels {

// out[r] = a[r] @ b[g] for every row r of group g. a [M, K] with the rows of
// group g in offsets[g-1] .. offsets[g] - 1; b [G, K, N] (any strides, e.g. a
// transposed view of [G, N, K]); offsets [G] int32, cumulative group ends,
// the last equal to M. Returns [M, N] in a's dtype (its rows may be strided).
at::Tensor grouped_mm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets);

// Sets the [K, N] blocks of out [G, K, N] (contiguous) whose group is empty
// to zero (offsets as above), leaving the others as they are.
using ZeroEmptyGroupsFn = void (*)(const at::Tensor& out, const at::Tensor& offsets);

// out[g] = a[rows of g]^T @ b[rows of g]: the per-group weight gradient.
// a [M, K], b [M, N], offsets as above. Returns [G, K, N]; an empty group
// gives zeros: ATen leaves its block unwritten on some paths, so the blocks
// of empty groups are zeroed by `zero_empty` (a device kernel touching only
// those blocks), or, without one, by a masked fill over the whole output.
at::Tensor grouped_mm_per_group(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets,
                                ZeroEmptyGroupsFn zero_empty = nullptr);

}  // namespace liger::kernels
