// The cuda backend's rotary position embedding: one autograd function over
// q and k, one launch of rope.cu each way.
#include "kernels/checks.h"
#include "kernels/composite/composite.h"
#include "kernels/cuda/binding.h"
#include "kernels/cuda/cuda_ops.h"

#include <torch/csrc/autograd/custom_function.h>

#include <array>
#include <utility>

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

// The packed form: forward reads qkv [B, T, Hq + 2 Hk, D] with its packed
// token stride and writes dense q, k (rotated) and v (copied); backward reads
// dq, dk, dv and writes the packed d_qkv, each in one launch.
struct RopeQkvFunction : public torch::autograd::Function<RopeQkvFunction> {
  static launch::RopeQkv args(const Tensor& qkv_like, int64_t heads_q, int64_t heads_k,
                              const Tensor& cos, const Tensor& sin) {
    launch::RopeQkv a;
    a.cos = cos.data_ptr<float>();
    a.sin = sin.data_ptr<float>();
    a.batch = qkv_like.size(0);
    a.seq = qkv_like.size(1);
    a.head_dim = qkv_like.size(3);
    a.cos_batch_stride = cos.size(0) == 1 ? 0 : cos.size(1) * cos.size(2);
    a.dtype = dtype_of("rope_qkv", qkv_like);
    const int64_t d = a.head_dim, packed = (heads_q + 2 * heads_k) * d;
    a.q = {nullptr, nullptr, heads_q, packed, heads_q * d};
    a.k = {nullptr, nullptr, heads_k, packed, heads_k * d};
    a.v = {nullptr, nullptr, heads_k, packed, heads_k * d};
    return a;
  }

  // The q, k and v groups inside a packed [B, T, Hq + 2 Hk, D] buffer.
  template <typename Byte>
  static std::array<Byte*, 3> packed_groups(Byte* base, int64_t heads_q, int64_t heads_k,
                                            size_t head_bytes) {
    return {base, base + heads_q * head_bytes, base + (heads_q + heads_k) * head_bytes};
  }

  static variable_list forward(AutogradContext* ctx, const Tensor& qkv_in, int64_t heads_q,
                               int64_t heads_k, const Tensor& cos, const Tensor& sin) {
    const Tensor qkv = dense(qkv_in);
    const c10::cuda::CUDAGuard guard(qkv.device());
    const int64_t b = qkv.size(0), t = qkv.size(1), d = qkv.size(3);
    Tensor q = at::empty({b, t, heads_q, d}, qkv.options());
    Tensor k = at::empty({b, t, heads_k, d}, qkv.options());
    Tensor v = at::empty({b, t, heads_k, d}, qkv.options());
    launch::RopeQkv a = args(qkv, heads_q, heads_k, cos, sin);
    const auto in = packed_groups(static_cast<const char*>(qkv.data_ptr()), heads_q, heads_k,
                                  static_cast<size_t>(d) * qkv.element_size());
    a.q.in = in[0];
    a.k.in = in[1];
    a.v.in = in[2];
    a.q.out = q.data_ptr();
    a.k.out = k.data_ptr();
    a.v.out = v.data_ptr();
    check_launch("rope_qkv", launch::rope_qkv_forward(a, current_stream()));
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["heads_q"] = heads_q;
    ctx->saved_data["heads_k"] = heads_k;
    return {q, k, v};
  }

  // Autograd materialises an unused output's gradient as zeros, so every
  // group of d_qkv is written.
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const int64_t heads_q = ctx->saved_data["heads_q"].toInt();
    const int64_t heads_k = ctx->saved_data["heads_k"].toInt();
    const Tensor dq = dense(grad_outputs[0]), dk = dense(grad_outputs[1]),
                 dv = dense(grad_outputs[2]);
    const c10::cuda::CUDAGuard guard(dq.device());
    const int64_t b = dq.size(0), t = dq.size(1), d = dq.size(3);
    Tensor d_qkv = at::empty({b, t, heads_q + 2 * heads_k, d}, dq.options());
    launch::RopeQkv a = args(d_qkv, heads_q, heads_k, saved[0], saved[1]);
    // Backward reads the dense gradients and writes the packed one: the
    // strides of forward, swapped.
    for (launch::RopeHeads* h : {&a.q, &a.k, &a.v})
      std::swap(h->in_token_stride, h->out_token_stride);
    const auto out = packed_groups(static_cast<char*>(d_qkv.data_ptr()), heads_q, heads_k,
                                   static_cast<size_t>(d) * d_qkv.element_size());
    a.q.in = dq.data_ptr();
    a.k.in = dk.data_ptr();
    a.v.in = dv.data_ptr();
    a.q.out = out[0];
    a.k.out = out[1];
    a.v.out = out[2];
    check_launch("rope_qkv", launch::rope_qkv_backward(a, current_stream()));
    return {d_qkv, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

QkvHeads rope_qkv(const Tensor& qkv, int64_t heads_q, int64_t heads_k, const Tensor& cos,
                  const Tensor& sin) {
  checks::rope_qkv_args(qkv, heads_q, heads_k);
  const int64_t d = qkv.size(3);
  TORCH_CHECK(qkv.is_cuda(), "rope_qkv (cuda): qkv must be on a CUDA device, got ", qkv.device());
  check_device("rope_qkv", "cos", cos, qkv);
  check_device("rope_qkv", "sin", sin, qkv);
  dtype_of("rope_qkv", qkv);
  if (!launch::rope_head_dim_supported(d)) {
    TORCH_WARN_ONCE("rope_qkv (cuda): head_dim ", d,
                    " is not taken by the kernel (even, <= 2048); using the composite backend");
    return composite::rope_qkv(qkv, heads_q, heads_k, cos, sin);
  }
  // Shapes of q's part checked as the plain op does (cos/sin against [B, T, D]).
  checks::rope_args(qkv.narrow(2, 0, heads_q), qkv.narrow(2, heads_q, heads_k), cos, sin);
  // cos/sin: fp32, dense, and no gradient (buffers).
  const Tensor c = dense(cos.detach().to(at::kFloat));
  const Tensor s = dense(sin.detach().to(at::kFloat));
  const auto out = RopeQkvFunction::apply(qkv, heads_q, heads_k, c, s);
  return {out[0], out[1], out[2]};
}

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
