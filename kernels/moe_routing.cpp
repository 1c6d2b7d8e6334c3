#include "kernels/moe_routing.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <stdexcept>

namespace liger::kernels {

Routing route_tokens(const at::Tensor& x, const at::Tensor& router, int64_t top_k) {
  Routing r;
  r.logits = at::linear(x, router);
  // cast: the softmax and the weights in fp32, as HF
  const at::Tensor probs = at::softmax(r.logits.to(at::kFloat), -1);
  at::Tensor top;
  std::tie(top, r.experts) = at::topk(probs, top_k, -1);
  r.weights = top / top.sum(-1, /*keepdim=*/true);
  return r;
}

void check_moe_args(const char* op, const at::Tensor& x, const at::Tensor& router,
                    const at::Tensor& gate_up, const at::Tensor& down, int64_t top_k) {
  auto fail = [op](const std::string& what) {
    throw std::invalid_argument(std::string(op) + ": " + what);
  };
  if (x.dim() != 2) fail(c10::str("x must be [tokens, hidden], got ", x.sizes()));
  const int64_t h = x.size(1);
  if (router.dim() != 2 || router.size(1) != h) {
    fail(c10::str("router must be [experts, ", h, "], got ", router.sizes()));
  }
  const int64_t e = router.size(0);
  if (gate_up.dim() != 3 || gate_up.size(0) != e || gate_up.size(2) != h ||
      gate_up.size(1) % 2 != 0) {
    fail(c10::str("gate_up must be [", e, ", 2 x ffn, ", h, "], got ", gate_up.sizes()));
  }
  const int64_t f = gate_up.size(1) / 2;
  if (down.dim() != 3 || down.size(0) != e || down.size(1) != h || down.size(2) != f) {
    fail(c10::str("down must be [", e, ", ", h, ", ", f, "], got ", down.sizes()));
  }
  if (top_k < 1 || top_k > e) fail(c10::str("top_k must be in [1, ", e, "], got ", top_k));
  if (gate_up.scalar_type() != x.scalar_type() || down.scalar_type() != x.scalar_type() ||
      router.scalar_type() != x.scalar_type()) {
    fail("x, router, gate_up and down must share a dtype");
  }
}

}  // namespace liger::kernels
