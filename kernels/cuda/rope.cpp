// The cuda backend's rotary position embedding: one autograd function over
// q and k, one launch of rope.cu each way.
#include "kernels/checks.h"
#include "kernels/composite/composite.h"
#include "kernels/cuda/binding.h"
#include "kernels/cuda/cuda_ops.h"

#include <torch/csrc/autograd/custom_function.h>

namespace liger::kernels::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Fills the launch arguments other than q/k pointers. like: q or its gradient.
launch::Rope rope_args(const Tensor& like_q, const Tensor& like_k, const Tensor& cos,
                       const Tensor& sin) {
  launch::Rope a;
  a.cos = cos.data_ptr<float>();
  a.sin = sin.data_ptr<float>();
  a.batch = like_q.size(0);
  a.seq = like_q.size(1);
  a.heads_q = like_q.size(2);
  a.heads_k = like_k.size(2);
  a.head_dim = like_q.size(3);
  a.cos_batch_stride = cos.size(0) == 1 ? 0 : cos.size(1) * cos.size(2);
  a.dtype = dtype_of("rope", like_q);
  return a;
}

// Forward: q_out, k_out in one launch. Backward (the transpose of the
// rotation, see rope.cu): dq, dk in one launch; an output nobody used gets no
// gradient and is skipped.
struct RopeFunction : public torch::autograd::Function<RopeFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& q_in, const Tensor& k_in,
                               const Tensor& cos, const Tensor& sin) {
    const Tensor q = dense(q_in), k = dense(k_in);
    const c10::cuda::CUDAGuard guard(q.device());
    Tensor q_out = at::empty(q.sizes(), q.options());
    Tensor k_out = at::empty(k.sizes(), k.options());
    launch::Rope a = rope_args(q, k, cos, sin);
    a.q_in = q.data_ptr();
    a.q_out = q_out.data_ptr();
    a.k_in = k.data_ptr();
    a.k_out = k_out.data_ptr();
    check_launch("rope", launch::rope_forward(a, current_stream()));
    ctx->save_for_backward({cos, sin});
    ctx->set_materialize_grads(false);  // an unused output gets no gradient, not zeros
    return {q_out, k_out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor dq_out = dense(grad_outputs[0]), dk_out = dense(grad_outputs[1]);
    if (!dq_out.defined() && !dk_out.defined()) return {Tensor(), Tensor(), Tensor(), Tensor()};
    const Tensor& like_q = dq_out.defined() ? dq_out : dk_out;  // sizes B, T, D only
    const Tensor& like_k = dk_out.defined() ? dk_out : dq_out;
    const c10::cuda::CUDAGuard guard(like_q.device());
    Tensor dq = dq_out.defined() ? at::empty(dq_out.sizes(), dq_out.options()) : Tensor();
    Tensor dk = dk_out.defined() ? at::empty(dk_out.sizes(), dk_out.options()) : Tensor();
    launch::Rope a = rope_args(like_q, like_k, saved[0], saved[1]);
    a.q_in = ptr(dq_out);
    a.q_out = mutable_ptr(dq);
    a.k_in = ptr(dk_out);
    a.k_out = mutable_ptr(dk);
    check_launch("rope", launch::rope_backward(a, current_stream()));
    return {dq, dk, Tensor(), Tensor()};
  }
};

}  // namespace

std::pair<Tensor, Tensor> rope(const Tensor& q, const Tensor& k, const Tensor& cos,
                               const Tensor& sin) {
  checks::rope_args(q, k, cos, sin);
  TORCH_CHECK(q.is_cuda(), "rope (cuda): q must be on a CUDA device, got ", q.device());
  check_device("rope", "k", k, q);
  check_device("rope", "cos", cos, q);
  check_device("rope", "sin", sin, q);
  dtype_of("rope", q);
  if (k.scalar_type() != q.scalar_type() || !launch::rope_head_dim_supported(q.size(3))) {
    TORCH_WARN_ONCE("rope (cuda): q ", q.scalar_type(), " and k ", k.scalar_type(),
                    " with head_dim ", q.size(3),
                    " are not taken by the kernel (one dtype, head_dim <= 2048); using the "
                    "composite backend");
    return composite::rope(q, k, cos, sin);
  }
  // cos/sin: fp32 (as ops.h says; cast otherwise), dense, and no gradient (buffers).
  const Tensor c = dense(cos.detach().to(at::kFloat));
  const Tensor s = dense(sin.detach().to(at::kFloat));
  const auto out = RopeFunction::apply(q, k, c, s);
  return {out[0], out[1]};
}

}  // namespace liger::kernels::cuda
