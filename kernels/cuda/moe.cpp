// The cuda backend's MoE block: the routing of kernels/moe_routing.h (ATen,
// with autograd), then one autograd function over the launchers of moe.cu
// and the grouped GEMMs of kernels/grouped_mm.h:
//   rows        the expert-sorted layout on the device (no sort, no read-back)
//   xs          = x[token of each row]                 gather          [N k, H]
//   [g | u]     = xs @ gate_up[e]^T                    grouped GEMM    [N k, 2F]
//   h           = silu(g) * u                          one kernel      [N k, F]
//   o           = h @ down[e]^T                        grouped GEMM    [N k, H]
//   y[t]        = sum of w * o over t's rows           per-token combine, no atomics
// Backward keeps [g | u] (not h): dy_rows gather, dh = dy_rows @ down[e], one
// kernel for h, d[g | u] (times w), dL/dw = <dh, h> and w dy_rows; dx is a
// grouped GEMM and a per-token sum; the weight gradients are per-expert
// GEMMs. The same values as the composite (kernels/composite/moe.cpp): y
// bitwise where the composite's index_add adds in the same order (top_k <= 2).
#include "kernels/composite/composite.h"
#include "kernels/cuda/binding.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/moe.h"
#include "kernels/grouped_mm.h"
#include "kernels/moe_routing.h"

#include <torch/csrc/autograd/custom_function.h>

#include <limits>

namespace liger::kernels::cuda {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr const char* kOp = "moe";

// [rows, cols] with unit column stride (a grouped GEMM's output may have
// padded rows): `t` itself, else a contiguous copy.
Tensor unit_columns(const Tensor& t) {
  return t.stride(1) == 1 ? t : t.contiguous();
}

// grouped_mm_per_group's hook: the blocks of the experts without rows set to
// zero by a kernel that touches only those blocks (a masked fill would read
// and write the whole gradient: 0.8 GB at 128 experts of hidden 2048).
void zero_empty_experts(const Tensor& out, const Tensor& ends) {
  TORCH_CHECK(out.is_contiguous() && ends.is_contiguous() && ends.scalar_type() == at::kInt, kOp,
              " (cuda): a contiguous weight gradient and int32 expert ends expected");
  const int64_t experts = out.size(0);
  check_launch(kOp, launch::zero_empty_groups(out.data_ptr(), ends.data_ptr<int>(), experts,
                                              experts == 0 ? 0 : out.numel() / experts,
                                              dtype_of(kOp, out), current_stream()));
}

// dst[r] = src[token of row r]: [rows, H] in src's dtype.
Tensor gather_rows(const Tensor& src, const MoeRows& rows, int64_t top_k) {
  const Tensor s = dense(src);
  const int64_t n = rows.choice_of_row.numel();
  Tensor dst = at::empty({n, s.size(1)}, s.options());
  launch::MoeGatherRows a;
  a.src = s.data_ptr();
  a.choice_of_row = rows.choice_of_row.data_ptr<int>();
  a.dst = dst.data_ptr();
  a.rows = n;
  a.cols = s.size(1);
  a.top_k = static_cast<int>(top_k);
  a.dtype = dtype_of(kOp, s);
  check_launch(kOp, launch::moe_gather_rows(a, current_stream()));
  return dst;
}

// out[t] = the sum over token t's rows of `in` (weighted and rounded as
// index_add in the dtype when `weights` is defined; else fp32, one cast).
Tensor combine(const Tensor& in_rows, const MoeRows& rows, const Tensor& weights, int64_t tokens,
               int64_t top_k) {
  const Tensor in = unit_columns(in_rows);
  Tensor out = at::empty({tokens, in.size(1)}, in.options());
  launch::MoeCombine a;
  a.in = in.data_ptr();
  a.in_stride = in.stride(0);
  a.row_of_choice = rows.row_of_choice.data_ptr<int>();
  a.weights = weights.defined() ? weights.data_ptr<float>() : nullptr;
  a.out = out.data_ptr();
  a.tokens = tokens;
  a.cols = in.size(1);
  a.top_k = static_cast<int>(top_k);
  a.dtype = dtype_of(kOp, in);
  check_launch(kOp, launch::moe_combine(a, current_stream()));
  return out;
}

struct ExpertsFunction : public torch::autograd::Function<ExpertsFunction> {
  // x [N, H], weights [N, k] fp32, experts [N, k] int64 (no gradient),
  // gate_up [E, 2F, H], down [E, H, F]. Returns y [N, H] in x's dtype.
  static Tensor forward(AutogradContext* ctx, const Tensor& x_in, const Tensor& weights_in,
                        const Tensor& experts, const Tensor& gate_up, const Tensor& down) {
    const c10::cuda::CUDAGuard guard(x_in.device());
    const Tensor x = dense(x_in);
    const Tensor weights = weights_in.contiguous();  // fp32, indexed by choice
    const int64_t top_k = experts.size(1), ffn = down.size(2);
    const MoeRows rows = moe_rows(experts, gate_up.size(0));

    const Tensor xs = gather_rows(x, rows, top_k);
    const Tensor gate_up_rows =
        unit_columns(grouped_mm(xs, gate_up.transpose(1, 2), rows.expert_ends));
    Tensor h = at::empty({xs.size(0), ffn}, x.options());
    launch::MoeSwiglu s;
    s.gate_up = gate_up_rows.data_ptr();
    s.gate_up_stride = gate_up_rows.stride(0);
    s.h = h.data_ptr();
    s.rows = xs.size(0);
    s.ffn = ffn;
    s.dtype = dtype_of(kOp, x);
    check_launch(kOp, launch::moe_swiglu(s, current_stream()));
    const Tensor o = grouped_mm(h, down.transpose(1, 2), rows.expert_ends);
    const Tensor y = combine(o, rows, weights, x.size(0), top_k);

    ctx->save_for_backward({x, gate_up, down, gate_up_rows, weights, rows.row_of_choice,
                            rows.choice_of_row, rows.expert_ends});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& gate_up = saved[1];
    const Tensor& down = saved[2];
    const Tensor& gate_up_rows = saved[3];
    const Tensor& weights = saved[4];  // [N, k] fp32
    const MoeRows rows{saved[5], saved[6], saved[7]};
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t tokens = x.size(0), top_k = weights.size(1), ffn = down.size(2);
    const int64_t n_rows = rows.choice_of_row.numel();
    const bool want_dx = ctx->needs_input_grad(0), want_dw = ctx->needs_input_grad(1);
    const bool want_d_gate_up = ctx->needs_input_grad(3), want_d_down = ctx->needs_input_grad(4);

    // cast: the upstream gradient in x's dtype, the GEMMs' operand (as the composite)
    Tensor dy_rows = gather_rows(grad_outputs[0].to(x.scalar_type()), rows, top_k);  // [N k, H]
    // dL/dh before the routing weight: dy @ down[e]  [N k, F]
    Tensor dh = unit_columns(grouped_mm(dy_rows, down, rows.expert_ends));

    Tensor d_gate_up_rows = at::empty({n_rows, 2 * ffn}, x.options());
    Tensor h = want_d_down ? at::empty({n_rows, ffn}, x.options()) : Tensor();
    Tensor d_weights = want_dw ? at::empty(weights.sizes(), weights.options()) : Tensor();  // fp32
    launch::MoeSwigluBackward b;
    b.gate_up = gate_up_rows.data_ptr();
    b.gate_up_stride = gate_up_rows.stride(0);
    b.dh = dh.data_ptr();
    b.dh_stride = dh.stride(0);
    b.weights = weights.data_ptr<float>();
    b.choice_of_row = rows.choice_of_row.data_ptr<int>();
    b.d_gate_up = d_gate_up_rows.data_ptr();
    b.h = mutable_ptr(h);
    b.d_weights = d_weights.defined() ? d_weights.data_ptr<float>() : nullptr;
    // dy_rows becomes w dy_rows in place: dh above has read it already (stream order).
    b.dy_rows = want_d_down ? dy_rows.data_ptr() : nullptr;
    b.rows = n_rows;
    b.ffn = ffn;
    b.hidden = x.size(1);
    b.dtype = dtype_of(kOp, x);
    check_launch(kOp, launch::moe_swiglu_backward(b, current_stream()));

    // The products in the order that frees the [N k, .] buffers soonest (the
    // allocator reuses a freed block in stream order): peak memory is the
    // weight gradients plus about three of them.
    dh = Tensor();
    Tensor dx, d_gate_up, d_down;
    if (want_d_down) {
      d_down = grouped_mm_per_group(dy_rows, h, rows.expert_ends, &zero_empty_experts);
    }
    dy_rows = Tensor();
    h = Tensor();
    if (want_dx) {
      // dxs = d[g | u] @ gate_up[e]  [N k, H]; a token's k rows summed in fp32, one cast
      const Tensor dxs = grouped_mm(d_gate_up_rows, gate_up, rows.expert_ends);
      dx = combine(dxs, rows, Tensor(), tokens, top_k);
    }
    if (want_d_gate_up) {
      d_gate_up = grouped_mm_per_group(d_gate_up_rows, gather_rows(x, rows, top_k),
                                       rows.expert_ends, &zero_empty_experts);
    }
    return {dx, d_weights, Tensor(), d_gate_up, d_down};
  }
};

// Whether the kernels take these inputs: CUDA tensors of fp32, bf16 or fp16,
// at least one token, at most kMoeMaxExperts experts (the routing scan is
// one block) and fewer than 2^31 choices (int32 rows).
bool kernels_take(const Tensor& x, const Tensor& gate_up, int64_t top_k) {
  return x.is_cuda() && is_kernel_dtype(x) && x.size(0) > 0 &&
         gate_up.size(0) <= launch::kMoeMaxExperts &&
         x.size(0) * top_k <= std::numeric_limits<int>::max();
}

}  // namespace

MoeRows moe_rows(const Tensor& experts_in, int64_t num_experts) {
  TORCH_CHECK(experts_in.is_cuda() && experts_in.scalar_type() == at::kLong, kOp,
              " (cuda): experts must be int64 on a CUDA device, got ", experts_in.scalar_type(),
              " on ", experts_in.device());
  TORCH_CHECK(num_experts >= 1 && num_experts <= launch::kMoeMaxExperts, kOp,
              " (cuda): the routing kernels take 1 to ", launch::kMoeMaxExperts, " experts, got ",
              num_experts);
  TORCH_CHECK(experts_in.numel() <= std::numeric_limits<int>::max(), kOp,
              " (cuda): too many choices for int32 rows: ", experts_in.numel());
  const c10::cuda::CUDAGuard guard(experts_in.device());
  const Tensor experts = experts_in.contiguous();
  const int64_t choices = experts.numel();
  const auto ints = experts.options().dtype(at::kInt);
  const int e = static_cast<int>(num_experts);
  MoeRows rows;
  rows.row_of_choice = at::empty(experts.sizes(), ints);
  rows.choice_of_row = at::empty({choices}, ints);
  // cast: int32 ends, as at::_grouped_mm takes them
  rows.expert_ends = at::zeros({num_experts}, ints);  // stays 0 without choices
  const Tensor workspace =
      at::empty({static_cast<int64_t>(launch::moe_routing_workspace_ints(choices, e))}, ints);
  launch::MoeRouting a;
  a.experts = experts.data_ptr<int64_t>();
  a.choices = choices;
  a.num_experts = e;
  a.workspace = workspace.data_ptr<int>();
  a.expert_ends = rows.expert_ends.data_ptr<int>();
  a.row_of_choice = rows.row_of_choice.data_ptr<int>();
  a.choice_of_row = rows.choice_of_row.data_ptr<int>();
  check_launch(kOp, launch::moe_routing(a, current_stream()));
  return rows;
}

MoeOutput moe(const Tensor& x, const Tensor& router, const Tensor& gate_up, const Tensor& down,
              int64_t top_k) {
  check_moe_args(kOp, x, router, gate_up, down, top_k);
  // Inputs the kernels do not take run the composite's ATen path, which
  // computes the same values.
  if (!kernels_take(x, gate_up, top_k)) return composite::moe(x, router, gate_up, down, top_k);
  check_device(kOp, "router", router, x);
  check_device(kOp, "gate_up", gate_up, x);
  check_device(kOp, "down", down, x);
  const Routing r = route_tokens(x, router, top_k);
  const Tensor y = ExpertsFunction::apply(x, r.weights, r.experts, gate_up, down);
  return {y, r.logits, r.experts};
}

}  // namespace liger::kernels::cuda
