// The cuda backend's SwiGLU and GeGLU: one autograd function, the launchers
// of glu.cu. Backward writes the gradients into gate/up's own buffers when
// that is safe (see cuda_ops.h), so forward + backward allocate only y.
#include "kernels/checks.h"
#include "kernels/cuda/binding.h"
#include "kernels/cuda/cuda_ops.h"

#include <ATen/MemoryOverlap.h>
#include <torch/csrc/autograd/custom_function.h>

namespace liger::kernels::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const char* glu_name(launch::GluActivation a) {
  return a == launch::GluActivation::silu ? "swiglu" : "geglu";
}

// Whether backward may overwrite `dense_t` (the tensor this op saved for
// `input`) with its gradient: a copy this op made, or an intermediate the
// graph owns (not a leaf, not a view of another tensor).
bool may_overwrite(const Tensor& input, const Tensor& dense_t) {
  if (!dense_t.is_same(input)) return true;
  return !input.is_leaf() && !input.is_view();
}

// One backward launch: d_gate, d_up (either may be undefined: not wanted) and,
// when y is defined, the recomputed product. A gradient written over gate's
// (up's) own buffer bumps its version, so any other saved use of the old
// values fails autograd's check.
void launch_backward(launch::GluActivation act, const Tensor& dy, const Tensor& gate,
                     const Tensor& up, const Tensor& d_gate, const Tensor& d_up, const Tensor& y,
                     bool gate_in_place, bool up_in_place) {
  const char* op = glu_name(act);
  launch::GluBackward a;
  a.dy = dy.data_ptr();
  a.gate = gate.data_ptr();
  a.up = up.data_ptr();
  a.d_gate = mutable_ptr(d_gate);
  a.d_up = mutable_ptr(d_up);
  a.y = mutable_ptr(y);
  a.n = gate.numel();
  a.dtype = dtype_of(op, gate);
  a.activation = act;
  check_launch(op, launch::glu_backward(a, current_stream()));
  if (gate_in_place) gate.unsafeGetTensorImpl()->bump_version();
  if (up_in_place) up.unsafeGetTensorImpl()->bump_version();
}

struct GluFunction : public torch::autograd::Function<GluFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& gate_in, const Tensor& up_in,
                        int64_t activation) {
    const auto act = static_cast<launch::GluActivation>(activation);
    const char* op = glu_name(act);
    const Tensor gate = dense(gate_in), up = dense(up_in);
    const c10::cuda::CUDAGuard guard(gate.device());
    Tensor y = at::empty(gate.sizes(), gate.options());
    launch::GluForward a;
    a.gate = gate.data_ptr();
    a.up = up.data_ptr();
    a.y = y.data_ptr();
    a.n = gate.numel();
    a.dtype = dtype_of(op, gate);
    a.activation = act;
    check_launch(op, launch::glu_forward(a, current_stream()));

    ctx->save_for_backward({gate, up});
    ctx->saved_data["activation"] = activation;
    // gate and up overlapping (e.g. the same tensor twice): never in place.
    const bool apart = at::get_overlap_status(gate, up) == at::MemOverlapStatus::No;
    ctx->saved_data["gate_in_place"] = apart && may_overwrite(gate_in, gate);
    ctx->saved_data["up_in_place"] = apart && may_overwrite(up_in, up);
    return y;
  }

  // d_up = dy act(gate), d_gate = dy up act'(gate): one launch.
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto act = static_cast<launch::GluActivation>(ctx->saved_data["activation"].toInt());
    const char* op = glu_name(act);
    TORCH_CHECK(ctx->saved_data.find("consumed") == ctx->saved_data.end(), op,
                " (cuda): backward ran a second time through the same graph, but the first one "
                "wrote the gradients over gate and up (to save memory); run backward once per "
                "forward (no retain_graph), or use the composite backend for this op");
    const auto saved = ctx->get_saved_variables();
    const Tensor& gate = saved[0];
    const Tensor& up = saved[1];
    const c10::cuda::CUDAGuard guard(gate.device());
    const Tensor dy = dense(grad_outputs[0]);
    const bool gate_in_place =
        ctx->needs_input_grad(0) && ctx->saved_data["gate_in_place"].toBool();
    const bool up_in_place = ctx->needs_input_grad(1) && ctx->saved_data["up_in_place"].toBool();
    Tensor d_gate, d_up;
    if (ctx->needs_input_grad(0)) {
      d_gate = gate_in_place ? gate.detach() : at::empty(gate.sizes(), gate.options());
    }
    if (ctx->needs_input_grad(1)) {
      d_up = up_in_place ? up.detach() : at::empty(up.sizes(), up.options());
    }

    launch_backward(act, dy, gate, up, d_gate, d_up, Tensor(), gate_in_place, up_in_place);
    // gate/up now hold gradients: refuse a second backward.
    if (gate_in_place || up_in_place) ctx->saved_data["consumed"] = true;
    return {d_gate, d_up, Tensor()};
  }
};

Tensor glu(launch::GluActivation act, const Tensor& gate, const Tensor& up) {
  const char* op = glu_name(act);
  checks::glu_args(op, gate, up);
  TORCH_CHECK(gate.is_cuda(), op, " (cuda): gate must be on a CUDA device, got ", gate.device());
  check_device(op, "up", up, gate);
  dtype_of(op, gate);
  return GluFunction::apply(gate, up, static_cast<int64_t>(act));
}

// The recomputing backward: h, d_gate, d_up from one launch (no autograd).
GluRecomputed glu_recompute(launch::GluActivation act, const Tensor& gate_in, const Tensor& up_in,
                            const Tensor& dh_in, bool overwrite_inputs) {
  const char* op = glu_name(act);
  checks::glu_args(op, gate_in, up_in);
  TORCH_CHECK(dh_in.sizes() == gate_in.sizes(), op, " backward: dh has shape ", dh_in.sizes(),
              " but gate has shape ", gate_in.sizes());
  TORCH_CHECK(gate_in.is_cuda(), op, " (cuda): gate must be on a CUDA device, got ",
              gate_in.device());
  check_device(op, "up", up_in, gate_in);
  check_device(op, "dh", dh_in, gate_in);
  const Tensor gate = dense(gate_in), up = dense(up_in), dh = dense(dh_in.to(gate.scalar_type()));
  const c10::cuda::CUDAGuard guard(gate.device());
  // Over the inputs' own buffers only where they are the caller's (not copies
  // made above, which would be thrown away) and do not overlap each other.
  const bool apart = at::get_overlap_status(gate, up) == at::MemOverlapStatus::No;
  const bool gate_in_place = overwrite_inputs && apart && gate.is_same(gate_in);
  const bool up_in_place = overwrite_inputs && apart && up.is_same(up_in);
  GluRecomputed out;
  out.h = at::empty(gate.sizes(), gate.options());
  out.d_gate = gate_in_place ? gate : at::empty(gate.sizes(), gate.options());
  out.d_up = up_in_place ? up : at::empty(up.sizes(), up.options());
  launch_backward(act, dh, gate, up, out.d_gate, out.d_up, out.h, gate_in_place, up_in_place);
  return out;
}

}  // namespace

GluRecomputed swiglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh,
                               bool overwrite_inputs) {
  return glu_recompute(launch::GluActivation::silu, gate, up, dh, overwrite_inputs);
}

GluRecomputed geglu_recompute(const Tensor& gate, const Tensor& up, const Tensor& dh,
                              bool overwrite_inputs) {
  return glu_recompute(launch::GluActivation::gelu_tanh, gate, up, dh, overwrite_inputs);
}

Tensor swiglu(const Tensor& gate, const Tensor& up) {
  return glu(launch::GluActivation::silu, gate, up);
}

Tensor geglu(const Tensor& gate, const Tensor& up) {
  return glu(launch::GluActivation::gelu_tanh, gate, up);
}

}  // namespace liger::kernels::cuda
