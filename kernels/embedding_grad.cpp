// add_embedding_grad: the ATen path (a reference on any device) and the
// dispatch to the CUDA kernel, which takes the ids sorted stably.
#include "kernels/embedding_grad.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#ifdef LIGER_WITH_CUDA
#include "kernels/cuda/binding.h"
#endif

namespace liger::kernels {
namespace {

bool floating_kernel_dtype(const Tensor& t) {
  const auto s = t.scalar_type();
  return s == at::kFloat || s == at::kBFloat16 || s == at::kHalf;
}

void check_args(const Tensor& weight_grad, const Tensor& ids, const Tensor& grad_out) {
  TORCH_CHECK(weight_grad.defined() && ids.defined() && grad_out.defined(),
              "add_embedding_grad: weight_grad, ids and grad_out must all be given");
  TORCH_CHECK(weight_grad.dim() == 2 && weight_grad.is_contiguous(),
              "add_embedding_grad: weight_grad must be a contiguous [vocab, hidden] tensor, got ",
              weight_grad.sizes());
  TORCH_CHECK(ids.scalar_type() == at::kLong, "add_embedding_grad: ids must be int64, got ",
              ids.scalar_type());
  TORCH_CHECK(
      floating_kernel_dtype(weight_grad) && floating_kernel_dtype(grad_out),
      "add_embedding_grad: weight_grad and grad_out must be float32, bfloat16 or float16, got ",
      weight_grad.scalar_type(), " and ", grad_out.scalar_type());
  TORCH_CHECK(grad_out.dim() == ids.dim() + 1 &&
                  grad_out.sizes().slice(0, ids.dim()) == ids.sizes() &&
                  grad_out.size(-1) == weight_grad.size(1),
              "add_embedding_grad: grad_out must be [ids..., hidden] = ", ids.sizes(), " x ",
              weight_grad.size(1), ", got ", grad_out.sizes());
  TORCH_CHECK(ids.device() == weight_grad.device() && grad_out.device() == weight_grad.device(),
              "add_embedding_grad: weight_grad, ids and grad_out must be on one device, got ",
              weight_grad.device(), ", ", ids.device(), " and ", grad_out.device());
}

// ATen: the fp32 sum of each distinct id's rows (index_add_ into a
// [distinct, hidden] buffer), added to those rows of weight_grad in fp32 and
// rounded once. On the CPU index_add_ adds in token order; on CUDA it uses
// atomics (not deterministic: the reference, not the fast path).
void add_embedding_grad_aten(const Tensor& weight_grad, const Tensor& ids, const Tensor& grad_out) {
  const Tensor flat_ids = ids.reshape({-1});
  if (flat_ids.numel() == 0) return;
  if (!flat_ids.is_cuda()) {
    const int64_t vocab = weight_grad.size(0);
    TORCH_CHECK(flat_ids.min().item<int64_t>() >= 0 && flat_ids.max().item<int64_t>() < vocab,
                "add_embedding_grad: ids must lie in [0, ", vocab, ")");
  }
  const Tensor rows = grad_out.reshape({-1, weight_grad.size(1)});
  Tensor distinct, inverse;
  std::tie(distinct, inverse, std::ignore) =
      at::_unique2(flat_ids, /*sorted=*/true, /*return_inverse=*/true);
  // cast: grad_out to fp32, summed per distinct id
  Tensor sums = at::zeros({distinct.numel(), rows.size(1)}, rows.options().dtype(at::kFloat));
  sums.index_add_(0, inverse, rows.to(at::kFloat));
  // cast: the touched rows to fp32, plus the sums, rounded once to weight_grad's dtype
  sums.add_(weight_grad.index_select(0, distinct).to(at::kFloat));
  weight_grad.index_copy_(0, distinct, sums.to(weight_grad.scalar_type()));
}

#ifdef LIGER_WITH_CUDA
void add_embedding_grad_cuda(const Tensor& weight_grad, const Tensor& ids, const Tensor& grad_out) {
  namespace launch = ::liger::cuda_kernels;
  const c10::cuda::CUDAGuard guard(weight_grad.device());
  const Tensor flat_ids = ids.reshape({-1}).contiguous();
  if (flat_ids.numel() == 0) return;
  // A stable sort: each id's tokens stay in their order, which fixes the
  // order of the kernel's additions. On the device, no synchronisation.
  Tensor sorted_ids, order;
  std::tie(sorted_ids, order) =
      at::sort(flat_ids, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const Tensor rows = grad_out.reshape({-1, weight_grad.size(1)}).contiguous();
  launch::EmbeddingGradAdd a;
  a.sorted_ids = sorted_ids.data_ptr<int64_t>();
  a.order = order.data_ptr<int64_t>();
  a.grad_out = rows.data_ptr();
  a.weight_grad = weight_grad.data_ptr();
  const Tensor partial =
      at::empty({launch::embedding_grad_partial_floats(flat_ids.numel(), weight_grad.size(1))},
                weight_grad.options().dtype(at::kFloat));
  a.partial = partial.data_ptr<float>();
  a.tokens = flat_ids.numel();
  a.hidden = weight_grad.size(1);
  a.grad_dtype = cuda::dtype_of("add_embedding_grad", rows);
  a.weight_dtype = cuda::dtype_of("add_embedding_grad", weight_grad);
  cuda::check_launch("add_embedding_grad", launch::embedding_grad_add(a, cuda::current_stream()));
}
#endif

}  // namespace

void add_embedding_grad(const Tensor& weight_grad, const Tensor& ids, const Tensor& grad_out,
                        OptimPath path) {
  check_args(weight_grad, ids, grad_out);
#ifdef LIGER_WITH_CUDA
  if (path == OptimPath::automatic && weight_grad.is_cuda()) {
    add_embedding_grad_cuda(weight_grad, ids, grad_out);
    return;
  }
#endif
  add_embedding_grad_aten(weight_grad, ids, grad_out);
}

}  // namespace liger::kernels
