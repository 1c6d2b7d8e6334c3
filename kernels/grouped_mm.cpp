#include "kernels/grouped_mm.h"

#include <ATen/ATen.h>

namespace liger::kernels {
namespace {

// `size` rounded up to a multiple of 16 bytes of `t`'s elements.
int64_t aligned(int64_t size, const at::Tensor& t) {
  const int64_t per_16_bytes = 16 / static_cast<int64_t>(t.element_size());
  return (size + per_16_bytes - 1) / per_16_bytes * per_16_bytes;
}

// t with its dim `dim` zero-padded to `size` (t itself when already that long).
at::Tensor pad_dim(const at::Tensor& t, int64_t dim, int64_t size) {
  if (t.size(dim) == size) return t;
  std::vector<int64_t> shape = t.sizes().vec();
  shape[static_cast<size_t>(dim)] = size;
  at::Tensor out = at::zeros(shape, t.options());
  out.narrow(dim, 0, t.size(dim)).copy_(t);
  return out;
}

}  // namespace

at::Tensor grouped_mm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets) {
  const int64_t k = a.size(1), n = b.size(2);
  const int64_t k_pad = aligned(k, a), n_pad = aligned(n, a);
  if (k_pad == k && n_pad == n) {
    // b's non-unit strides are multiples of k or n: aligned when a contiguous copy of it is.
    const bool b_rows = b.stride(2) == 1 && b.stride(1) == n;
    const bool b_cols = b.stride(1) == 1 && b.stride(2) == k;
    return at::_grouped_mm(a.contiguous(), b_rows || b_cols ? b : b.contiguous(), offsets);
  }
  const at::Tensor a_padded = pad_dim(a.contiguous(), 1, k_pad);
  const at::Tensor b_padded = pad_dim(pad_dim(b.contiguous(), 1, k_pad), 2, n_pad);
  return at::_grouped_mm(a_padded, b_padded, offsets).narrow(1, 0, n);
}

at::Tensor grouped_mm_per_group(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets,
                                ZeroEmptyGroupsFn zero_empty) {
  const int64_t k = a.size(1), n = b.size(1);
  const at::Tensor a_padded = pad_dim(a.contiguous(), 1, aligned(k, a));
  const at::Tensor b_padded = pad_dim(b.contiguous(), 1, aligned(n, b));
  // a^T is [K, M] with strides (1, K): the group dim M is the contraction.
  at::Tensor out = at::_grouped_mm(a_padded.t(), b_padded, offsets);
  // ATen leaves an empty group's block unwritten on some paths: zero it from the counts.
  if (zero_empty != nullptr) {
    zero_empty(out, offsets);
  } else {
    const at::Tensor starts = at::cat({at::zeros({1}, offsets.options()), offsets.slice(0, 0, -1)});
    out.masked_fill_((offsets == starts).view({-1, 1, 1}), 0);  // in place: no second copy
  }
  return out.narrow(1, 0, k).narrow(2, 0, n);
}

}  // namespace liger::kernels
