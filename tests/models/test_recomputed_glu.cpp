// The MLP down projection whose GLU product is recomputed in backward
// (models/recomputed_glu.h) against glu() + torch::linear, alone and inside
// the model (training.activation_checkpointing: glu), on the CPU backends.
#include "kernels/registry.h"
#include "models/model_config.h"
#include "models/recomputed_glu.h"
#include "models/transformer.h"
#include "tests/catch.h"

#include <torch/torch.h>

namespace {

using at::Tensor;

double max_rel(const Tensor& a, const Tensor& b) {
  const Tensor af = a.to(at::kFloat), bf = b.to(at::kFloat);
  return ((af - bf).abs().max() / bf.abs().max().clamp_min(1e-30)).item<double>();
}

}  // namespace

TEST_CASE("recomputed GLU down projection: values and gradients equal glu + linear") {
  const auto cpu = c10::Device(c10::kCPU);
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    for (const bool gelu : {false, true}) {
      INFO("dtype " << dtype << (gelu ? ", geglu" : ", swiglu"));
      const auto kernels = liger::kernels::resolve_kernels(liger::kernels::KernelToggles{}, cpu, dtype);
      const liger::models::GluOp glu = [&](const Tensor& g, const Tensor& u) {
        return gelu ? kernels.geglu(g, u) : kernels.swiglu(g, u);
      };
      torch::manual_seed(7);
      const Tensor gate0 = torch::randn({2, 5, 24}).to(dtype), up0 = torch::randn({2, 5, 24}).to(dtype);
      const Tensor w0 = (torch::randn({16, 24}) * 0.2).to(dtype), dy = torch::randn({2, 5, 16}).to(dtype);

      Tensor gate = gate0.clone().requires_grad_(true), up = up0.clone().requires_grad_(true),
             w = w0.clone().requires_grad_(true);
      Tensor y = torch::linear(glu(gate, up), w);
      y.backward(dy);

      Tensor gate_r = gate0.clone().requires_grad_(true), up_r = up0.clone().requires_grad_(true),
             w_r = w0.clone().requires_grad_(true);
      Tensor y_r = liger::models::glu_down_projection_recomputed(glu, gate_r, up_r, w_r);
      REQUIRE(y_r.requires_grad());
      y_r.backward(dy);

      const double tolerance = dtype == at::kFloat ? 1e-6 : 1e-2;
      CHECK(max_rel(y_r, y) <= tolerance);
      CHECK(max_rel(gate_r.grad(), gate.grad()) <= tolerance);
      CHECK(max_rel(up_r.grad(), up.grad()) <= tolerance);
      CHECK(max_rel(w_r.grad(), w.grad()) <= tolerance);
      // Only some inputs needing gradients: the others get none.
      Tensor w_only = w0.clone().requires_grad_(true);
      liger::models::glu_down_projection_recomputed(glu, gate0, up0, w_only).backward(dy);
      CHECK(max_rel(w_only.grad(), w.grad()) <= tolerance);
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
