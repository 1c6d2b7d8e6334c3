// The MLP down projection whose GLU product is recomputed in backward
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

TEST_CASE("recomputed GLU down projection: values and gradients equal glu + linear") {
  const auto cpu = c10::Device(c10::kCPU);
  for (const bool on : {false, true}) {  // reference and composite backends
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      for (const bool gelu : {false, true}) {
        INFO((on ? "composite" : "reference") << ", dtype " << dtype << (gelu ? ", geglu" : ", swiglu"));
        const auto toggles = on ? liger::kernels::KernelToggles{} : liger::kernels::KernelToggles::all_off();
        const auto kernels = liger::kernels::resolve_kernels(toggles, cpu, dtype);
        const auto kind = gelu ? liger::models::GluKind::geglu : liger::models::GluKind::swiglu;
        auto glu = [&](const Tensor& g, const Tensor& u) {
          return gelu ? kernels.geglu(g, u) : kernels.swiglu(g, u);
        };
        torch::manual_seed(7);
        const Tensor gate0 = torch::randn({2, 5, 24}).to(dtype), up0 = torch::randn({2, 5, 24}).to(dtype);
        const Tensor w0 = (torch::randn({16, 24}) * 0.2).to(dtype), dy = torch::randn({2, 5, 16}).to(dtype);
        const Tensor x0 = torch::randn({2, 5, 8}).to(dtype);
        const Tensor wg0 = torch::randn({24, 8}).to(dtype), wu0 = torch::randn({24, 8}).to(dtype);

        Tensor gate = gate0.clone().requires_grad_(true), up = up0.clone().requires_grad_(true),
               w = w0.clone().requires_grad_(true);
        Tensor y = torch::linear(glu(gate, up), w);
        y.backward(dy);

        Tensor gate_r = gate0.clone().requires_grad_(true), up_r = up0.clone().requires_grad_(true),
               w_r = w0.clone().requires_grad_(true);
        Tensor y_r = liger::models::glu_down_projection_recomputed(kernels, kind, gate_r, up_r, w_r);
        REQUIRE(y_r.requires_grad());
        y_r.backward(dy);

        const double tolerance = dtype == at::kFloat ? 1e-6 : 1e-2;
        CHECK(max_rel(y_r, y) <= tolerance);
        CHECK(max_rel(gate_r.grad(), gate.grad()) <= tolerance);
        CHECK(max_rel(up_r.grad(), up.grad()) <= tolerance);
        CHECK(max_rel(w_r.grad(), w.grad()) <= tolerance);
        // Only some inputs needing gradients: the others get none.
        Tensor w_only = w0.clone().requires_grad_(true);
        liger::models::glu_down_projection_recomputed(kernels, kind, gate0, up0, w_only).backward(dy);
        CHECK(max_rel(w_only.grad(), w.grad()) <= tolerance);

        // gate and up as the model makes them (graph intermediates, whose
        // buffers backward may reuse): the gradients reach the projections.
        const Tensor x = x0.clone().requires_grad_(true), wg = wg0.clone().requires_grad_(true),
                     wu = wu0.clone().requires_grad_(true);
        liger::models::glu_down_projection_recomputed(kernels, kind, torch::linear(x, wg),
                                                      torch::linear(x, wu), w0)
            .backward(dy);
        const Tensor xe = x0.clone().requires_grad_(true), wge = wg0.clone().requires_grad_(true),
                     wue = wu0.clone().requires_grad_(true);
        torch::linear(glu(torch::linear(xe, wge), torch::linear(xe, wue)), w0).backward(dy);
        CHECK(max_rel(x.grad(), xe.grad()) <= tolerance);
        CHECK(max_rel(wg.grad(), wge.grad()) <= tolerance);
        CHECK(max_rel(wu.grad(), wue.grad()) <= tolerance);
      }
    }
  }
}

TEST_CASE("the recomputing GLU backward of each CPU backend equals autograd through the op") {
  const auto cpu = c10::Device(c10::kCPU);
  for (const bool on : {false, true}) {
    const auto toggles = on ? liger::kernels::KernelToggles{} : liger::kernels::KernelToggles::all_off();
    const auto kernels = liger::kernels::resolve_kernels(toggles, cpu, at::kFloat);
    torch::manual_seed(8);
    const Tensor gate0 = torch::randn({3, 40}), up0 = torch::randn({3, 40}), dh = torch::randn({3, 40});
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
  const auto kernels =
      liger::kernels::resolve_kernels(liger::kernels::KernelToggles{}, c10::Device(c10::kCPU), at::kFloat);
  liger::models::Transformer keep(c, kernels, at::TensorOptions().dtype(at::kFloat), at::kFloat);
  liger::models::Transformer recompute(c, kernels, at::TensorOptions().dtype(at::kFloat), at::kFloat);
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
