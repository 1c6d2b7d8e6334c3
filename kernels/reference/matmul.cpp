// Reference matrix product of the linear layers: ATen's mm / addmm.
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>

namespace liger::kernels::reference {

Tensor matmul(const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& out) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0), "matmul: a ", a.sizes(),
              " and b ", b.sizes(), " are not [m, k] and [k, n]");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "matmul: a is ", a.scalar_type(), " but b is ",
              b.scalar_type());
  if (!out.defined()) return c.defined() ? at::addmm(c, a, b) : at::mm(a, b);
  TORCH_CHECK(out.dim() == 2 && out.size(0) == a.size(0) && out.size(1) == b.size(1),
              "matmul: out ", out.sizes(), " is not [", a.size(0), ", ", b.size(1), "]");
  Tensor result = out;
  if (out.scalar_type() == a.scalar_type()) {
    if (c.defined()) {
      at::addmm_out(result, c, a, b);
    } else {
      at::mm_out(result, a, b);
    }
  } else if (out.is_cuda()) {
    // cuBLAS writes the wider dtype straight from its fp32 accumulators.
    if (c.defined()) {
      at::addmm_out(result, c, a, b, out.scalar_type());
    } else {
      at::mm_out(result, a, b, out.scalar_type());
    }
  } else {
    // cast: 16-bit operands to out's dtype (exact), then one product in it
    const Tensor wa = a.to(out.scalar_type()), wb = b.to(out.scalar_type());
    if (c.defined()) {
      at::addmm_out(result, c.to(out.scalar_type()), wa, wb);
    } else {
      at::mm_out(result, wa, wb);
    }
  }
  return out;
}

}  // namespace liger::kernels::reference
