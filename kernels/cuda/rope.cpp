// The cuda backend's rotary position embedding: one autograd function over
// q and k, one launch of rope.cu each way; the packed q|k|v form, alone or
// with Qwen3's per-head q/k RMSNorm (rope_norm.cu).
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

// The packed form with the per-head q/k RMSNorm: forward reads qkv once and
// writes dense normed-and-rotated q, k and a copy of v, saving rstd per head
// (fp32 [B * T, Hq + Hk]); backward writes the packed d_qkv and the two
// weight gradients (rope_norm.cu). Saves qkv, the weights, rstd and cos/sin.
struct RopeQkvNormFunction : public torch::autograd::Function<RopeQkvNormFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& qkv_in,
                               const Tensor& q_weight_in, const Tensor& k_weight_in,
                               int64_t heads_q, int64_t heads_k, const Tensor& cos,
                               const Tensor& sin, double eps, double offset) {
    const Tensor qkv = dense(qkv_in), q_weight = dense(q_weight_in), k_weight = dense(k_weight_in);
    const c10::cuda::CUDAGuard guard(qkv.device());
    const int64_t b = qkv.size(0), t = qkv.size(1), d = qkv.size(3);
    Tensor q = at::empty({b, t, heads_q, d}, qkv.options());
    Tensor k = at::empty({b, t, heads_k, d}, qkv.options());
    Tensor v = at::empty({b, t, heads_k, d}, qkv.options());
    Tensor rstd = at::empty({b * t, heads_q + heads_k}, qkv.options().dtype(at::kFloat));
    launch::RopeQkvNormForward a;
    a.qkv = qkv.data_ptr();
    a.q = q.data_ptr();
    a.k = k.data_ptr();
    a.v = v.data_ptr();
    a.q_weight = q_weight.data_ptr();
    a.k_weight = k_weight.data_ptr();
    a.rstd = rstd.data_ptr<float>();
    a.cos = cos.data_ptr<float>();
    a.sin = sin.data_ptr<float>();
    a.batch = b;
    a.seq = t;
    a.heads_q = heads_q;
    a.heads_k = heads_k;
    a.head_dim = d;
    a.cos_batch_stride = cos.size(0) == 1 ? 0 : cos.size(1) * cos.size(2);
    a.x_dtype = dtype_of("rope_qkv_norm", qkv);
    a.w_dtype = dtype_of("rope_qkv_norm", q_weight);
    a.eps = static_cast<float>(eps);
    a.offset = static_cast<float>(offset);
    check_launch("rope_qkv_norm", launch::rope_qkv_norm_forward(a, current_stream()));
    ctx->save_for_backward({qkv, q_weight, k_weight, rstd, cos, sin});
    ctx->saved_data["heads_q"] = heads_q;
    ctx->saved_data["heads_k"] = heads_k;
    ctx->saved_data["offset"] = offset;
    return {q, k, v};
  }

  // Autograd materialises an unused output's gradient as zeros, so every
  // group of d_qkv is written.
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &qkv = saved[0], &q_weight = saved[1], &k_weight = saved[2], &rstd = saved[3],
                 &cos = saved[4], &sin = saved[5];
    const Tensor dq = dense(grad_outputs[0]), dk = dense(grad_outputs[1]),
                 dv = dense(grad_outputs[2]);
    const c10::cuda::CUDAGuard guard(qkv.device());
    const bool want_dw = ctx->needs_input_grad(1) || ctx->needs_input_grad(2);
    Tensor d_qkv = at::empty(qkv.sizes(), qkv.options());
    Tensor d_weights = want_dw ? at::empty({2, qkv.size(3)}, q_weight.options()) : Tensor();
    Tensor workspace;
    if (want_dw) {
      const auto floats = static_cast<int64_t>(
          launch::rope_qkv_norm_workspace_floats(qkv.size(0) * qkv.size(1), qkv.size(3)));
      workspace = at::empty({floats}, qkv.options().dtype(at::kFloat));
    }
    launch::RopeQkvNormBackward a;
    a.dq = dq.data_ptr();
    a.dk = dk.data_ptr();
    a.dv = dv.data_ptr();
    a.qkv = qkv.data_ptr();
    a.q_weight = q_weight.data_ptr();
    a.k_weight = k_weight.data_ptr();
    a.rstd = rstd.data_ptr<float>();
    a.cos = cos.data_ptr<float>();
    a.sin = sin.data_ptr<float>();
    a.d_qkv = d_qkv.data_ptr();
    a.d_weights = mutable_ptr(d_weights);
    a.workspace = workspace.defined() ? workspace.data_ptr<float>() : nullptr;
    a.batch = qkv.size(0);
    a.seq = qkv.size(1);
    a.heads_q = ctx->saved_data["heads_q"].toInt();
    a.heads_k = ctx->saved_data["heads_k"].toInt();
    a.head_dim = qkv.size(3);
    a.cos_batch_stride = cos.size(0) == 1 ? 0 : cos.size(1) * cos.size(2);
    a.x_dtype = dtype_of("rope_qkv_norm", qkv);
    a.w_dtype = dtype_of("rope_qkv_norm", q_weight);
    a.offset = static_cast<float>(ctx->saved_data["offset"].toDouble());
    check_launch("rope_qkv_norm", launch::rope_qkv_norm_backward(a, current_stream()));
    return {d_qkv,
            want_dw ? d_weights[0] : Tensor(),
            want_dw ? d_weights[1] : Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor(),
            Tensor()};
  }
};

}  // namespace

QkvHeads rope_qkv_norm(const Tensor& qkv, int64_t heads_q, int64_t heads_k, const Tensor& q_weight,
                       const Tensor& k_weight, const RmsNormOptions& norm, const Tensor& cos,
                       const Tensor& sin) {
  const char* op = "rope_qkv_norm";
  checks::rope_qkv_args(qkv, heads_q, heads_k);
  TORCH_CHECK(qkv.is_cuda(), op, " (cuda): qkv must be on a CUDA device, got ", qkv.device());
  const int64_t d = qkv.size(3);
  for (const Tensor* w : {&q_weight, &k_weight}) {
    TORCH_CHECK(w->defined() && w->dim() == 1 && w->size(0) == d, op,
                " (cuda): the norm weights must be [head_dim] = [", d, "]");
    check_device(op, "norm weight", *w, qkv);
  }
  check_device(op, "cos", cos, qkv);
  check_device(op, "sin", sin, qkv);
  const launch::DType dtype = dtype_of(op, qkv);
  if (norm.casting != RmsNormCasting::llama || !launch::rope_qkv_norm_supported(d, dtype)) {
    TORCH_WARN_ONCE(op, " (cuda): head_dim ", d, " in ", qkv.scalar_type(),
                    " with this norm casting is not taken by the kernel (it takes Llama "
                    "casting and a power-of-two head_dim: 16 to 512 in bf16/fp16, 8 to 256 in "
                    "fp32); using the composite backend");
    return composite::rope_qkv_norm(qkv, heads_q, heads_k, q_weight, k_weight, norm, cos, sin);
  }
  checks::rope_args(qkv.narrow(2, 0, heads_q), qkv.narrow(2, heads_q, heads_k), cos, sin);
  // The weights as the kernel takes them: both in qkv's dtype, or both fp32
  // (cast here, outside the autograd function, so the gradients flow back
  // through the cast).
  const bool both_f32 =
      q_weight.scalar_type() == at::kFloat && k_weight.scalar_type() == at::kFloat;
  const at::ScalarType w_type = both_f32 ? at::kFloat : qkv.scalar_type();
  const Tensor qw = q_weight.to(w_type), kw = k_weight.to(w_type);  // cast: see above
  // cos/sin: fp32, dense, and no gradient (buffers).
  const Tensor c = dense(cos.detach().to(at::kFloat));
  const Tensor s = dense(sin.detach().to(at::kFloat));
  const auto out =
      RopeQkvNormFunction::apply(qkv, qw, kw, heads_q, heads_k, c, s, norm.eps, norm.offset);
  return {out[0], out[1], out[2]};
}

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
