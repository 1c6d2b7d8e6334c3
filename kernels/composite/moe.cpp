// The composite MoE block. Routing stays on the device: the k choices of
// every token are sorted by expert (a stable sort of the flat expert ids),
// per-expert counts come from an index_add (bincount would read its maximum
// back) and their running sum gives each expert's rows. Then
//   xs = x[token of each row]                      gather         [N k, H]
//   [g | u] = xs @ gate_up[e]^T                    grouped GEMM   [N k, 2F]
//   o = (silu(g) * u) @ down[e]^T                  grouped GEMM   [N k, H]
//   y[t] += w * o                                  weighted scatter-add
// Backward keeps [g | u] but not silu(g) * u, which it recomputes; the
// routing weights' gradient dL/dw = <dy[t], o> is <dy[t] @ down[e], h>, from
// the product backward computes anyway. Grouped GEMMs: kernels/grouped_mm.h.
#include "kernels/composite/composite.h"
#include "kernels/grouped_mm.h"
#include "kernels/moe_routing.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

namespace liger::kernels::composite {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows of the expert-sorted layout: which token each row came from, where
// in the flat [N k] choices it sits, and each expert's end row (int32).
struct SortedRows {
  Tensor token, position, expert_ends;
};

SortedRows sort_by_expert(const Tensor& experts, int64_t num_experts) {
  const Tensor flat = experts.reshape({-1});
  SortedRows rows;
  // Stable: within an expert the rows keep token order (HF's order too).
  rows.position = std::get<1>(at::sort(flat, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  rows.token = at::div(rows.position, experts.size(1), "floor");
  const Tensor counts =
      at::zeros({num_experts}, flat.options()).index_add_(0, flat, at::ones_like(flat));
  // cast: int32 offsets, as at::_grouped_mm takes them
  rows.expert_ends = counts.cumsum(0).to(at::kInt);
  return rows;
}

struct ExpertsFunction : public torch::autograd::Function<ExpertsFunction> {
  // x [N, H], weights [N, k] fp32, experts [N, k] int64 (no gradient),
  // gate_up [E, 2F, H], down [E, H, F]. Returns y [N, H] in x's dtype.
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weights,
                        const Tensor& experts, const Tensor& gate_up, const Tensor& down) {
    const SortedRows rows = sort_by_expert(experts, gate_up.size(0));
    const Tensor row_weight = weights.reshape({-1}).index_select(0, rows.position);  // fp32
    const Tensor xs = x.index_select(0, rows.token);
    const Tensor gate_up_rows = grouped_mm(xs, gate_up.transpose(1, 2), rows.expert_ends);
    const int64_t ffn = down.size(2);
    const Tensor h = at::silu(gate_up_rows.narrow(1, 0, ffn)) * gate_up_rows.narrow(1, ffn, ffn);
    const Tensor o = grouped_mm(h, down.transpose(1, 2), rows.expert_ends);
    // cast: o times the fp32 weight in fp32, rounded to x's dtype before the sum (as HF)
    const Tensor weighted = (o.to(at::kFloat) * row_weight.unsqueeze(1)).to(x.scalar_type());
    ctx->save_for_backward(
        {x, gate_up, down, gate_up_rows, row_weight, rows.token, rows.position, rows.expert_ends});
    return at::zeros_like(x).index_add_(0, rows.token, weighted);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& gate_up = saved[1];
    const Tensor& down = saved[2];
    const Tensor& gate_up_rows = saved[3];
    const Tensor& row_weight = saved[4];  // [N k] fp32
    const Tensor& token = saved[5];
    const Tensor& position = saved[6];
    const Tensor& expert_ends = saved[7];
    const int64_t ffn = down.size(2);
    const auto dtype = x.scalar_type();

    const Tensor dy_rows = grad_outputs[0].to(dtype).index_select(0, token);  // [N k, H]
    // dL/dh before the routing weight: dy @ down[e]  [N k, F]
    const Tensor dh_unweighted = grouped_mm(dy_rows, down, expert_ends).to(at::kFloat);
    // The SwiGLU again, with its derivative (fp32): silu(g) = g s, silu'(g) = s (1 + g (1 - s))
    const Tensor g = gate_up_rows.narrow(1, 0, ffn);
    const Tensor u = gate_up_rows.narrow(1, ffn, ffn);
    const Tensor h = at::silu(g) * u;  // the forward's ops: the same values
    const Tensor g32 = g.to(at::kFloat), u32 = u.to(at::kFloat);
    const Tensor s = at::sigmoid(g32);
    // dL/dw of each row = <dy, o> = <dy @ down[e], h>
    const Tensor d_row_weight = (dh_unweighted * h.to(at::kFloat)).sum(1);
    const Tensor dh = dh_unweighted * row_weight.unsqueeze(1);
    // cast: the GEMM operands in x's dtype
    const Tensor d_gate_up_rows =
        at::cat({dh * u32 * s * (1.0 + g32 * (1.0 - s)), dh * g32 * s}, 1).to(dtype);

    Tensor dx, d_weights, d_gate_up, d_down;
    if (ctx->needs_input_grad(0)) {
      const Tensor dxs = grouped_mm(d_gate_up_rows, gate_up, expert_ends);  // [N k, H]
      // cast: the k rows of a token summed in fp32, then x's dtype
      dx = at::zeros(x.sizes(), x.options().dtype(at::kFloat))
               .index_add_(0, token, dxs.to(at::kFloat))
               .to(dtype);
    }
    if (ctx->needs_input_grad(1)) {
      d_weights = at::zeros({position.numel()}, row_weight.options())
                      .index_copy_(0, position, d_row_weight)
                      .view({x.size(0), -1});
    }
    if (ctx->needs_input_grad(3)) {
      d_gate_up = grouped_mm_per_group(d_gate_up_rows, x.index_select(0, token), expert_ends);
    }
    if (ctx->needs_input_grad(4)) {
      // cast: w dy in x's dtype, the GEMM's operand
      const Tensor weighted_dy = (dy_rows.to(at::kFloat) * row_weight.unsqueeze(1)).to(dtype);
      d_down = grouped_mm_per_group(weighted_dy, h, expert_ends);
    }
    return {dx, d_weights, Tensor(), d_gate_up, d_down};
  }
};

}  // namespace

MoeOutput moe(const Tensor& x, const Tensor& router, const Tensor& gate_up, const Tensor& down,
              int64_t top_k) {
  check_moe_args("moe", x, router, gate_up, down, top_k);
  const Routing r = route_tokens(x, router, top_k);
  const Tensor y = ExpertsFunction::apply(x, r.weights, r.experts, gate_up, down);
  return {y, r.logits, r.experts};
}

}  // namespace liger::kernels::composite
