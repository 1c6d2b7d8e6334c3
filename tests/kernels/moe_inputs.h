// Inputs of the moe op for the tests that run it in 16 bits against an fp32
// truth (tests/kernels/test_composite_moe.cpp on the CPU,
// tests/kernels/test_cuda_moe.cpp on a GPU): every backend and dtype routes
// them to the same experts in the same order, with routing weights within
// 2^-8 of the fp32 run's.
#pragma once

#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

namespace liger::kernels::test {

struct MoeShape {
  int64_t tokens, hidden, ffn, experts, top_k;
};

// The op's inputs with gradients, in moe_inputs' order.
inline const std::vector<std::string> kMoeInputNames = {"x", "router", "gate_up", "down"};
// fp32: the same math in another order; atol relative to the tensor's largest magnitude.
constexpr Tolerance kMoeFp32{2e-5, 2e-5};
// bf16/fp16 against the fp32 truth (check_runs_bf16): sums over many elements.
constexpr Tolerance kMoeHalfSum{2e-2, 2e-2};

inline std::string describe(const MoeShape& s, int64_t skip, torch::ScalarType dtype) {
  return "tokens " + std::to_string(s.tokens) + " hidden " + std::to_string(s.hidden) + " ffn " +
         std::to_string(s.ffn) + " experts " + std::to_string(s.experts) + " top_k " +
         std::to_string(s.top_k) + " skip " + std::to_string(skip) + " " + dtype_name(dtype);
}

// x [N, H] and a router [E, H]. x's first E columns hold a permutation p of
// 0..E-1, shifted by -(E-1) and over 8 (exact in bf16), read through 16 x an
// identity block of the router: logits 2 (p - (E-1)), every two experts of a
// token 2 apart, the most probable at 0. The other columns add about 0.06
// (router entries 0.005), far under the margin, so every backend and dtype
// picks the same experts in the same order.
//
// Why the top at 0: the logits are in x's dtype (as HF's) and softmax turns
// an error d of a logit into a relative error e^d - 1 of its weight, which
// every gradient through the weights (x's, the router's) carries. The chosen
// logits lie in [-2k, 0]: bf16 rounds those of top 8 by at most 2^-5, fp16
// by 2^-8. With them near 254 instead, bf16 rounded them to integers (the 0.06
// lost): a second weight up to 27% off fp32's, the gradients of x and the
// router 10% of their largest value off the fp32 truth, HF's loop as much as
// the fused backends.
//
// `skip`: an expert no token chooses (its column of x is -8: logit -128, far
// under any chosen one), or -1. Weights scaled by 1/sqrt(fan-in), so fp16
// stays far from overflow.
inline std::vector<torch::Tensor> moe_inputs(const MoeShape& s, int64_t skip,
                                             torch::ScalarType dtype, c10::Device device) {
  torch::Tensor x = torch::randn({s.tokens, s.hidden});
  for (int64_t i = 0; i < s.tokens; ++i) {
    x.index_put_({i, torch::indexing::Slice(0, s.experts)},
                 (torch::randperm(s.experts).to(torch::kFloat) - (s.experts - 1)) / 8.0);
  }
  if (skip >= 0) x.select(1, skip).fill_(-8.0);
  torch::Tensor router = torch::randn({s.experts, s.hidden}) * 0.005;
  router.narrow(1, 0, s.experts).copy_(torch::eye(s.experts) * 16.0);
  const torch::Tensor gate_up =
      torch::randn({s.experts, 2 * s.ffn, s.hidden}) / std::sqrt(static_cast<double>(s.hidden));
  const torch::Tensor down =
      torch::randn({s.experts, s.hidden, s.ffn}) / std::sqrt(static_cast<double>(s.ffn));
  std::vector<torch::Tensor> in;
  for (const torch::Tensor& t : {x, router, gate_up, down}) in.push_back(t.to(device, dtype));
  return in;
}

}  // namespace liger::kernels::test
