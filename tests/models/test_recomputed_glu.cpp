// The GLU MLP whose GLU product is recomputed in backward
// (models/recomputed_glu.h) against glu() + torch::linear, alone and inside
// the model (training.activation_checkpointing: glu), on the CPU backends.
#include "kernels/registry.h"
#include "models/model_config.h"
#include "models/recomputed_glu.h"
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/models/model_test_util.h"

#include <torch/torch.h>

using at::Tensor;
using liger::models::test::max_rel;

TEST_CASE(
    "recomputed GLU MLP: values and gradients equal linear, glu, linear and the residual add") {
  const auto cpu = c10::Device(c10::kCPU);
  for (const bool on : {false, true}) {  // reference and composite backends
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      for (const bool gelu : {false, true}) {
        for (const bool with_residual : {false, true}) {
          INFO((on ? "composite" : "reference")
               << ", dtype " << dtype << (gelu ? ", geglu" : ", swiglu")
               << (with_residual ? ", residual" : ""));
          const auto toggles =
              on ? liger::kernels::KernelToggles{} : liger::kernels::KernelToggles::all_off();
          const auto kernels = liger::kernels::resolve_kernels(toggles, cpu, dtype);
          const auto kind = gelu ? liger::models::GluKind::geglu : liger::models::GluKind::swiglu;
          auto glu = [&](const Tensor& g, const Tensor& u) {
            return gelu ? kernels.geglu(g, u) : kernels.swiglu(g, u);
          };
          torch::manual_seed(7);
          const Tensor x0 = torch::randn({2, 5, 8}).to(dtype),
                       r0 = torch::randn({2, 5, 8}).to(dtype);
          const Tensor wg0 = (torch::randn({24, 8}) * 0.3).to(dtype),
                       wu0 = (torch::randn({24, 8}) * 0.3).to(dtype);
          const Tensor wd0 = (torch::randn({8, 24}) * 0.2).to(dtype),
                       dy = torch::randn({2, 5, 8}).to(dtype);
          auto leaf = [](const Tensor& t) { return t.clone().requires_grad_(true); };

          // The plain composition.
          Tensor x = leaf(x0), r = leaf(r0), wg = leaf(wg0), wu = leaf(wu0), wd = leaf(wd0);
          Tensor y = torch::linear(glu(torch::linear(x, wg), torch::linear(x, wu)), wd);
          if (with_residual) y = r + y;
          y.backward(dy);

          Tensor xr = leaf(x0), rr = leaf(r0), wgr = leaf(wg0), wur = leaf(wu0), wdr = leaf(wd0);
          Tensor y_r = liger::models::glu_mlp_recomputed(kernels, kind, xr, wgr, wur, wdr,
                                                         with_residual ? rr : Tensor());
          REQUIRE(y_r.requires_grad());
          REQUIRE(y_r.sizes() == y.sizes());
          y_r.backward(dy);

          const double tolerance = dtype == at::kFloat ? 1e-6 : 2e-2;
          CHECK(max_rel(y_r, y) <= tolerance);
          CHECK(max_rel(xr.grad(), x.grad()) <= tolerance);
          CHECK(max_rel(wgr.grad(), wg.grad()) <= tolerance);
          CHECK(max_rel(wur.grad(), wu.grad()) <= tolerance);
          CHECK(max_rel(wdr.grad(), wd.grad()) <= tolerance);
          if (with_residual) {
            CHECK(torch::equal(rr.grad(), r.grad()));
          } else {
            CHECK_FALSE(rr.grad().defined());
          }
          // Only the down projection's weight needing a gradient: the others get none.
          Tensor wd_only = leaf(wd0);
          liger::models::glu_mlp_recomputed(kernels, kind, x0, wg0, wu0, wd_only, Tensor())
              .backward(dy);
          Tensor wd_plain = leaf(wd0);
          torch::linear(glu(torch::linear(x0, wg0), torch::linear(x0, wu0)), wd_plain).backward(dy);
          CHECK(max_rel(wd_only.grad(), wd_plain.grad()) <= tolerance);
          // A second backward through the same graph is refused (gate and up were overwritten).
          Tensor again =
              liger::models::glu_mlp_recomputed(kernels, kind, leaf(x0), wg0, wu0, wd0, Tensor());
          again.backward(dy, /*retain_graph=*/true);
          CHECK_THROWS(again.backward(dy));
        }
      }
    }
  }
  // Shapes that do not fit are refused with the shapes in the message.
  const auto kernels =
      liger::kernels::resolve_kernels(liger::kernels::KernelToggles{}, cpu, at::kFloat);
  CHECK_THROWS(liger::models::glu_mlp_recomputed(
      kernels, liger::models::GluKind::swiglu, torch::randn({3, 8}), torch::randn({24, 7}),
      torch::randn({24, 7}), torch::randn({8, 24}), Tensor()));
  CHECK_THROWS(liger::models::glu_mlp_recomputed(
      kernels, liger::models::GluKind::swiglu, torch::randn({3, 8}), torch::randn({24, 8}),
      torch::randn({24, 8}), torch::randn({8, 24}), torch::randn({3, 9})));
}

TEST_CASE("the recomputing GLU backward of each CPU backend equals autograd through the op") {
  const auto cpu = c10::Device(c10::kCPU);
  for (const bool on : {false, true}) {
    const auto toggles =
        on ? liger::kernels::KernelToggles{} : liger::kernels::KernelToggles::all_off();
    const auto kernels = liger::kernels::resolve_kernels(toggles, cpu, at::kFloat);
    torch::manual_seed(8);
    const Tensor gate0 = torch::randn({3, 40}), up0 = torch::randn({3, 40}),
                 dh = torch::randn({3, 40});
    for (const bool gelu : {false, true}) {
      INFO((on ? "composite" : "reference") << (gelu ? ", geglu" : ", swiglu"));
      const Tensor gate = gate0.clone().requires_grad_(true), up = up0.clone().requires_grad_(true);
      const Tensor h = gelu ? kernels.geglu(gate, up) : kernels.swiglu(gate, up);
      h.backward(dh);
      const auto r = gelu ? kernels.geglu_recompute(gate0, up0, dh, false)
                          : kernels.swiglu_recompute(gate0, up0, dh, false);
      CHECK(torch::equal(r.h, h.detach()));
      CHECK(max_rel(r.d_gate, gate.grad()) <= 1e-6);
      CHECK(max_rel(r.d_up, up.grad()) <= 1e-6);
      CHECK_FALSE(r.h.requires_grad());
    }
  }
}

TEST_CASE("a model with the GLU product recomputed trains exactly like one that keeps it") {
  liger::models::ModelConfig c = liger::models::preset("tiny");
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.max_seq_len = 32;
  const auto kernels = liger::kernels::resolve_kernels(liger::kernels::KernelToggles{},
                                                       c10::Device(c10::kCPU), at::kFloat);
  liger::models::Transformer keep(c, kernels, at::TensorOptions().dtype(at::kFloat), at::kFloat);
  liger::models::Transformer recompute(c, kernels, at::TensorOptions().dtype(at::kFloat),
                                       at::kFloat);
  keep->init_weights(3);
  recompute->init_weights(3);
  recompute->set_recompute_glu(true);
  torch::manual_seed(1);
  const Tensor ids = torch::randint(0, c.vocab_size, {2, 12}, at::TensorOptions().dtype(at::kLong));
  const Tensor loss_keep = keep->forward(ids).square().mean();
  const Tensor loss_recompute = recompute->forward(ids).square().mean();
  loss_keep.backward();
  loss_recompute.backward();
  CHECK(max_rel(loss_recompute, loss_keep) <= 1e-6);
  auto a = keep->named_parameters(), b = recompute->named_parameters();
  for (const auto& item : a) {
    INFO(item.key());
    REQUIRE(b[item.key()].grad().defined());
    CHECK(max_rel(b[item.key()].grad(), item.value().grad()) <= 1e-5);
  }
}
