// The reference MoE block: HF's MixtralExperts loop. For each expert that
// received tokens, gather them, gate|up projection, silu(gate) * up, down
// projection, times the routing weight, index_add back. Autograd from ATen.
// Finding the experts that received tokens reads the counts back to the host
// (as HF does); this backend is the baseline, not the fast path.
#include "kernels/moe_routing.h"
#include "kernels/reference/reference.h"

#include <ATen/ATen.h>

namespace liger::kernels::reference {

MoeOutput moe(const Tensor& x, const Tensor& router, const Tensor& gate_up, const Tensor& down,
              int64_t top_k) {
  check_moe_args("moe", x, router, gate_up, down, top_k);
  const Routing r = route_tokens(x, router, top_k);
  const int64_t num_experts = router.size(0);
  Tensor y = at::zeros_like(x);
  // slot_of[t, e] = which of token t's k choices is expert e (-1: none).
  const Tensor chosen = r.experts.cpu();
  for (int64_t e = 0; e < num_experts; ++e) {
    const Tensor hit = (chosen == e).nonzero();  // [hits, 2]: token, slot
    if (hit.size(0) == 0) continue;
    const Tensor tokens = hit.select(1, 0).to(x.device());
    const Tensor slots = hit.select(1, 1).to(x.device());
    const Tensor xs = x.index_select(0, tokens);
    const std::vector<Tensor> gu = at::linear(xs, gate_up[e]).chunk(2, -1);
    const Tensor h = at::silu(gu[0]) * gu[1];
    const Tensor out = at::linear(h, down[e]);
    // cast: x-dtype output times the fp32 weight is fp32, rounded back to x's dtype (as HF)
    const Tensor w = r.weights.index({tokens, slots}).unsqueeze(-1);
    y = y.index_add(0, tokens, (out * w).to(x.scalar_type()));
  }
  return {y, r.logits, r.experts};
}

}  // namespace liger::kernels::reference
