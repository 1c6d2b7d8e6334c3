// LoRA adapters (models/lora.h) at the level of the model's ops: the packed
// projection and the recomputed GLU MLP with adapters against plain autograd
// compositions (values and every gradient, with dropout, with an adapter on
// only some of the packed weights), the init, the names, and that a frozen
// base costs no weight-gradient GEMM anywhere in a training step (counted
// through ATen's RecordFunction callbacks).
#include "kernels/registry.h"
#include "models/lora.h"
#include "models/packed_projection.h"
#include "models/peft.h"
#include "models/recomputed_glu.h"
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/models/model_test_util.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <set>

using at::Tensor;
using liger::models::test::max_rel;
namespace models = liger::models;
namespace kernels = liger::kernels;

namespace {

Tensor leaf(const Tensor& t) {
  return t.clone().requires_grad_(true);
}

// x W^T + s * dropout(x) A^T B^T with plain ops (mask: undefined = no dropout).
Tensor reference_lora_linear(const Tensor& x, const Tensor& w, const Tensor& a, const Tensor& b,
                             double s, const Tensor& mask, double p) {
  const Tensor base = torch::linear(x, w);
  if (!a.defined()) return base;
  const Tensor xd = mask.defined() ? x * mask.view(x.sizes()) / (1.0 - p) : x;
  return base + torch::linear(torch::linear(xd, a), b) * s;
}

}  // namespace

TEST_CASE(
    "LoRA packed projection: values and every gradient equal plain autograd, dropout included") {
  const auto set = kernels::KernelSet::reference();
  for (const double p : {0.0, 0.3}) {
    for (const bool k_adapter : {true, false}) {
      INFO("dropout " << p << ", adapter on k " << k_adapter);
      torch::manual_seed(3);
      const int64_t r = 3;
      const Tensor x0 = torch::randn({2, 7, 20});
      const std::vector<Tensor> w0 = {0.2 * torch::randn({20, 20}), 0.2 * torch::randn({6, 20}),
                                      0.2 * torch::randn({6, 20})};
      std::vector<Tensor> a0, b0;
      for (int i = 0; i < 3; ++i) {
        a0.push_back(0.3 * torch::randn({r, 20}));
        b0.push_back(0.3 * torch::randn({w0[static_cast<size_t>(i)].size(0), r}));
      }
      const Tensor dy = torch::randn({2, 7, 32});
      const double scaling = 7.0 / 3.0;

      // Ours: q, k, v frozen (no grad), adapters and x trainable.
      const Tensor x = leaf(x0);
      models::LoraOperands lora;
      std::vector<Tensor> a, b;
      for (size_t i = 0; i < 3; ++i) {
        const bool present = i != 1 || k_adapter;
        a.push_back(present ? leaf(a0[i]) : Tensor());
        b.push_back(present ? leaf(b0[i]) : Tensor());
      }
      lora.a = a;
      lora.b = b;
      lora.scaling = scaling;
      lora.dropout = p;
      torch::manual_seed(11);
      const Tensor y = models::packed_projection(set, x, w0, &lora);
      y.backward(dy);

      // Reference: one linear + adapter per weight; the same dropout mask for all three (one draw).
      torch::manual_seed(11);
      const Tensor mask = p > 0.0 ? models::lora_dropout_mask(x0.reshape({-1, 20}), p) : Tensor();
      const Tensor xe = leaf(x0);
      std::vector<Tensor> ae, be, parts;
      for (size_t i = 0; i < 3; ++i) {
        ae.push_back(a[i].defined() ? leaf(a0[i]) : Tensor());
        be.push_back(b[i].defined() ? leaf(b0[i]) : Tensor());
        parts.push_back(reference_lora_linear(xe, w0[i], ae[i], be[i], scaling, mask, p));
      }
      torch::cat(parts, -1).backward(dy);
      CHECK(max_rel(y, torch::cat(parts, -1).detach()) <= 1e-6);
      CHECK(max_rel(x.grad(), xe.grad()) <= 1e-6);
      for (size_t i = 0; i < 3; ++i) {
        if (!a[i].defined()) continue;
        INFO("adapter " << i);
        CHECK(max_rel(a[i].grad(), ae[i].grad()) <= 1e-6);
        CHECK(max_rel(b[i].grad(), be[i].grad()) <= 1e-6);
      }
      if (p > 0.0) {  // the mask did something: without it the output differs
        const Tensor no_drop =
            reference_lora_linear(x0, w0[0], a0[0], b0[0], scaling, Tensor(), 0.0);
        CHECK(max_rel(y.detach().narrow(-1, 0, 20), no_drop) > 1e-3);
      }
    }
  }
}

TEST_CASE("LoRA recomputed GLU MLP: values and every gradient equal plain autograd") {
  for (const auto& toggles : {kernels::KernelToggles::all_off(), kernels::KernelToggles{}}) {
    const auto set = kernels::resolve_kernels(toggles, c10::Device(c10::kCPU), at::kFloat);
    for (const double p : {0.0, 0.25}) {
      for (const bool gate_adapter : {true, false}) {
        INFO("dropout " << p << ", gate adapter " << gate_adapter << ", swiglu "
                        << kernels::backend_name(set.backend(kernels::Op::swiglu)));
        torch::manual_seed(5);
        const int64_t h = 12, f = 26, r = 2;
        const Tensor x0 = torch::randn({3, 5, h}), res0 = torch::randn({3, 5, h});
        const Tensor wg = 0.3 * torch::randn({f, h}), wu = 0.3 * torch::randn({f, h}),
                     wd = 0.3 * torch::randn({h, f});
        const Tensor ag0 = 0.4 * torch::randn({r, h}), bg0 = 0.4 * torch::randn({f, r});
        const Tensor au0 = 0.4 * torch::randn({r, h}), bu0 = 0.4 * torch::randn({f, r});
        const Tensor ad0 = 0.4 * torch::randn({r, f}), bd0 = 0.4 * torch::randn({h, r});
        const Tensor dy = torch::randn({3, 5, h});
        const double s = 1.5;

        const Tensor x = leaf(x0), res = leaf(res0);
        const Tensor ag = gate_adapter ? leaf(ag0) : Tensor(),
                     bg = gate_adapter ? leaf(bg0) : Tensor();
        const Tensor au = leaf(au0), bu = leaf(bu0), ad = leaf(ad0), bd = leaf(bd0);
        models::LoraOperands gate_up, down;
        gate_up.a = {ag, au};
        gate_up.b = {bg, bu};
        down.a = {ad};
        down.b = {bd};
        gate_up.scaling = down.scaling = s;
        gate_up.dropout = down.dropout = p;
        torch::manual_seed(17);
        const Tensor y = models::glu_mlp_recomputed(set, models::GluKind::swiglu, x, wg, wu, wd,
                                                    res, &gate_up, &down);
        y.backward(dy);

        // The masks in the order the op draws them: x's, then h's.
        torch::manual_seed(17);
        const Tensor mask_x =
            p > 0.0 ? models::lora_dropout_mask(x0.reshape({-1, h}), p) : Tensor();
        const Tensor mask_h =
            p > 0.0 ? models::lora_dropout_mask(torch::empty({15, f}), p) : Tensor();
        const Tensor xe = leaf(x0), rese = leaf(res0);
        const Tensor age = gate_adapter ? leaf(ag0) : Tensor(),
                     bge = gate_adapter ? leaf(bg0) : Tensor();
        const Tensor aue = leaf(au0), bue = leaf(bu0), ade = leaf(ad0), bde = leaf(bd0);
        const Tensor gate = reference_lora_linear(xe, wg, age, bge, s, mask_x, p);
        const Tensor up = reference_lora_linear(xe, wu, aue, bue, s, mask_x, p);
        const Tensor hidden = torch::silu(gate) * up;
        const Tensor ye = rese + reference_lora_linear(hidden, wd, ade, bde, s, mask_h, p);
        ye.backward(dy);

        CHECK(max_rel(y, ye.detach()) <= 1e-5);
        CHECK(max_rel(x.grad(), xe.grad()) <= 1e-5);
        CHECK(max_rel(res.grad(), rese.grad()) <= 1e-6);
        if (gate_adapter) {
          CHECK(max_rel(ag.grad(), age.grad()) <= 1e-5);
          CHECK(max_rel(bg.grad(), bge.grad()) <= 1e-5);
        }
        CHECK(max_rel(au.grad(), aue.grad()) <= 1e-5);
        CHECK(max_rel(bu.grad(), bue.grad()) <= 1e-5);
        CHECK(max_rel(ad.grad(), ade.grad()) <= 1e-5);
        CHECK(max_rel(bd.grad(), bde.grad()) <= 1e-5);
      }
    }
  }
}

TEST_CASE(
    "LoRA adapters: PEFT's names and init (A uniform in +-1/sqrt(in), B zero), the first step is "
    "the base model") {
  models::ModelConfig config = models::test::small_config(97, 40, 52, false);
  models::LoraOptions options;
  options.rank = 5;
  options.alpha = 10;
  options.targets = {models::LoraTarget::q_proj, models::LoraTarget::v_proj,
                     models::LoraTarget::down_proj};
  models::LoraAdapters adapters(config, options, at::TensorOptions().dtype(at::kFloat));
  adapters->init_weights(models::lora_init_seed(1234));
  std::set<std::string> names;
  for (const auto& item : adapters->named_parameters()) names.insert(item.key());
  CHECK(names.count("model.layers.0.self_attn.q_proj.lora_A.weight") == 1);
  CHECK(names.count("model.layers.1.mlp.down_proj.lora_B.weight") == 1);
  CHECK(names.size() == 2 * 3 * 2);
  CHECK(models::peft_tensor_name("model.layers.0.self_attn.q_proj.lora_A.weight") ==
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  const models::LoraPair* down = adapters->find(1, models::LoraTarget::down_proj);
  REQUIRE(down != nullptr);
  CHECK(adapters->find(0, models::LoraTarget::k_proj) == nullptr);
  CHECK(down->a->weight.sizes() == at::IntArrayRef({5, 52}));
  CHECK(down->b->weight.sizes() == at::IntArrayRef({40, 5}));
  const double bound = 1.0 / std::sqrt(52.0);
  CHECK(down->a->weight.abs().max().item<double>() <= bound);
  CHECK(down->a->weight.abs().max().item<double>() > 0.9 * bound);  // uniform over the whole range
  CHECK(down->b->weight.abs().max().item<double>() == 0.0);
  CHECK(adapters->num_parameters() == models::lora_parameter_count(config, options));

  // B = 0: the adapted model computes the base model exactly.
  models::Transformer model(config, kernels::KernelSet::reference(),
                            at::TensorOptions().dtype(at::kFloat), at::kFloat);
  model->init_weights(7);
  const Tensor ids = torch::randint(0, 97, {2, 9});
  const Tensor base = model->forward(ids).detach();
  model->set_lora(adapters.ptr());
  CHECK(torch::equal(model->forward(ids).detach(), base));
}

namespace {

// Shapes [m, n] of every 2-D GEMM result (mm, addmm, their out= and in-place forms) run while
// alive.
class GemmShapes {
 public:
  GemmShapes() {
    handle_ = at::addThreadLocalCallback(
        at::RecordFunctionCallback(
            [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
              const std::string name = fn.name();
              const bool add = name == "aten::addmm" || name == "aten::addmm_";
              if (!add && name != "aten::mm") return nullptr;
              const auto inputs = fn.inputs();
              const size_t first = add ? 1 : 0;
              if (inputs.size() < first + 2 || !inputs[first].isTensor() ||
                  !inputs[first + 1].isTensor())
                return nullptr;
              const Tensor& a = inputs[first].toTensor();
              const Tensor& b = inputs[first + 1].toTensor();
              if (a.dim() == 2 && b.dim() == 2) shapes().push_back({a.size(0), b.size(1)});
              return nullptr;
            })
            .needsInputs(true)
            .scopes({at::RecordScope::FUNCTION}));
    shapes().clear();
  }
  ~GemmShapes() { at::removeCallback(handle_); }
  static std::vector<std::vector<int64_t>>& shapes() {
    static thread_local std::vector<std::vector<int64_t>> all;
    return all;
  }
  int64_t count_of(const std::set<std::vector<int64_t>>& wanted) const {
    int64_t n = 0;
    for (const auto& s : shapes()) n += wanted.count(s);
    return n;
  }

 private:
  at::CallbackHandle handle_;
};

}  // namespace

TEST_CASE(
    "LoRA: a frozen base costs no weight-gradient GEMM (q|k|v, o, MLP plain and recomputed, fused "
    "loss head)") {
  // Widths chosen so that no activation-side product has a weight's shape:
  // tokens 18; q|k|v [80, 40], o [40, 40], gate/up [52, 40], down [40, 52], head [97, 40].
  const models::ModelConfig config = models::test::small_config(97, 40, 52, false);
  const std::set<std::vector<int64_t>> weight_shapes = {
      {80, 40}, {40, 40}, {52, 40}, {40, 52}, {97, 40}};
  models::LoraOptions options;
  options.rank = 3;
  options.alpha = 6;
  for (int t = 0; t < models::kNumLoraTargets; ++t)
    options.targets.push_back(static_cast<models::LoraTarget>(t));
  kernels::KernelToggles
      ce_toggles;  // fused CE on materialised logits: the head through autograd's linear
  ce_toggles.fused_linear_cross_entropy = false;
  ce_toggles.cross_entropy = true;
  for (const auto& toggles :
       {kernels::KernelToggles{}, kernels::KernelToggles::all_off(), ce_toggles}) {
    for (const bool recompute : {false, true}) {
      for (const bool frozen : {true, false}) {
        INFO("flce " << toggles.fused_linear_cross_entropy << ", recompute " << recompute
                     << ", frozen " << frozen);
        const auto set = kernels::resolve_kernels(toggles, c10::Device(c10::kCPU), at::kFloat);
        models::Transformer model(config, set, at::TensorOptions().dtype(at::kFloat), at::kFloat);
        model->init_weights(3);
        for (auto& p : model->parameters()) p.set_requires_grad(!frozen);
        models::LoraAdapters adapters(config, options, at::TensorOptions().dtype(at::kFloat));
        adapters->init_weights(4);
        model->set_lora(adapters.ptr());
        model->set_recompute_glu(recompute);
        const Tensor ids = torch::randint(0, 97, {2, 9});
        const Tensor labels = torch::randint(0, 97, {18});
        GemmShapes gemms;
        const Tensor hidden = model->forward(ids).reshape({18, 40});
        Tensor loss;
        if (set.use_fused_linear_cross_entropy()) {
          kernels::FusedLinearCrossEntropyOptions o;
          loss = set.fused_linear_cross_entropy(hidden, model->lm_head_weight_for(hidden), Tensor(),
                                                labels, o);
        } else {
          loss = set.cross_entropy(model->lm_head_logits(hidden), labels,
                                   kernels::CrossEntropyOptions{});
        }
        loss.backward();
        for (const auto& p : adapters->parameters()) CHECK(p.grad().defined());
        if (frozen) {
          CHECK(gemms.count_of(weight_shapes) == 0);
          for (const auto& p : model->parameters()) CHECK_FALSE(p.grad().defined());
        } else {  // the same count finds them when the base trains: q|k|v, o, gate, up, down per
                  // layer and the head
          CHECK(gemms.count_of(weight_shapes) >= 2 * 5 + 1);
        }
      }
    }
  }
}

TEST_CASE("LoRA FLOPs per token: 4 per frozen matmul parameter, 6 per adapter and trained one") {
  // Llama-3-8B: q and o 4096 x 4096, k and v 1024 x 4096, gate/up/down 14336 x 4096, lm_head
  // 128256 x 4096; rank 16 on all seven projections.
  const models::ModelConfig config = models::preset("llama3_8b");
  models::LoraOptions options;
  options.rank = 16;
  options.targets = models::lora_targets_of(config);
  const double h = 4096, kv = 1024, ffn = 14336, vocab = 128256, layers = 32, seq = 4096;
  const double per_layer = 2 * h * h + 2 * kv * h + 3 * ffn * h;
  const double adapters = layers * 16 * ((h + h) * 2 + (h + kv) * 2 + (h + ffn) * 3);
  const double attention = 12 * layers * h * seq;
  CHECK(models::lora_parameter_count(config, options) == static_cast<int64_t>(adapters));
  CHECK(config.training_flops_per_token(4096) ==
        Approx(6 * (layers * per_layer + vocab * h) + attention).epsilon(1e-12));
  CHECK(models::lora_training_flops_per_token(config, options, false, 4096) ==
        Approx(4 * (layers * per_layer + vocab * h) + 6 * adapters + attention).epsilon(1e-12));
  CHECK(models::lora_training_flops_per_token(config, options, true, 4096) ==
        Approx(4 * layers * per_layer + 6 * vocab * h + 6 * adapters + attention).epsilon(1e-12));
  // Only q_proj: the other six projections carry no adapter.
  options.targets = {models::LoraTarget::q_proj};
  CHECK(models::lora_parameter_count(config, options) == static_cast<int64_t>(layers * 16 * 2 * h));
}

namespace {

// Calls of aten::cat while alive.
class CatCount {
 public:
  CatCount() {
    count() = 0;
    handle_ = at::addThreadLocalCallback(
        at::RecordFunctionCallback([](const at::RecordFunction& fn)
                                       -> std::unique_ptr<at::ObserverContext> {
          if (std::string(fn.name()) == "aten::cat") ++count();
          return nullptr;
        }).scopes({at::RecordScope::FUNCTION}));
  }
  ~CatCount() { at::removeCallback(handle_); }
  static int64_t& count() {
    static thread_local int64_t n = 0;
    return n;
  }

 private:
  at::CallbackHandle handle_;
};

// Cats run by one forward and backward of `model` with LoRA adapters.
int64_t cats_in_step(models::TransformerImpl& model, const Tensor& ids, Tensor& logits) {
  CatCount cats;
  logits = model.forward(ids);  // the final-norm hidden states
  logits.sum().backward();
  return CatCount::count();
}

}  // namespace

TEST_CASE("LoRA: the frozen q|k|v weights in one buffer, the same step without their copies") {
  const models::ModelConfig config = models::test::small_config(97, 40, 52, false);
  models::Transformer model(config, kernels::KernelSet::reference(),
                            at::TensorOptions().dtype(at::kFloat), at::kFloat);
  model->init_weights(7);
  CHECK(model->pack_frozen_qkv_weights() == 0);  // trainable weights stay as they are
  for (auto& item : model->named_parameters()) item.value().set_requires_grad(false);
  models::LoraOptions options;
  options.rank = 3;
  options.alpha = 6;
  options.targets = {models::LoraTarget::q_proj, models::LoraTarget::v_proj};
  models::LoraAdapters adapters(config, options, at::TensorOptions().dtype(at::kFloat));
  adapters->init_weights(models::lora_init_seed(5));
  for (auto& item : adapters->named_parameters()) {  // B != 0, so the adapters matter
    torch::NoGradGuard no_grad;
    item.value().normal_(0.0, 0.1);
  }
  model->set_lora(adapters.ptr());
  const Tensor ids = torch::randint(0, 97, {2, 9});
  const std::string layer0 = "model.layers.0.self_attn.";
  auto params = model->named_parameters();
  const Tensor q_before = params[layer0 + "q_proj.weight"].clone();
  const Tensor v_before = params[layer0 + "v_proj.weight"].clone();

  Tensor logits_before;
  const int64_t cats_before = cats_in_step(*model, ids, logits_before);
  std::vector<Tensor> grads_before;
  for (auto& item : adapters->named_parameters()) {
    grads_before.push_back(item.value().grad().clone());
    item.value().mutable_grad().reset();
  }

  REQUIRE(model->pack_frozen_qkv_weights() == config.num_layers);
  params = model->named_parameters();
  const Tensor q = params[layer0 + "q_proj.weight"], k = params[layer0 + "k_proj.weight"],
               v = params[layer0 + "v_proj.weight"];
  CHECK(k.storage().is_alias_of(q.storage()));
  CHECK(v.storage().is_alias_of(q.storage()));
  CHECK(k.storage_offset() == q.storage_offset() + q.numel());
  CHECK(v.storage_offset() == k.storage_offset() + k.numel());
  CHECK(torch::equal(q, q_before));
  CHECK(torch::equal(v, v_before));

  Tensor logits_after;
  const int64_t cats_after = cats_in_step(*model, ids, logits_after);
  // One stacking of q|k|v per layer in forward, and one in backward for every
  // layer but the first (whose input, the frozen embedding, wants no gradient), are gone.
  CHECK(cats_before - cats_after == 2 * config.num_layers - 1);
  CHECK(torch::equal(logits_after, logits_before));
  size_t i = 0;
  for (auto& item : adapters->named_parameters()) {
    CHECK(torch::equal(item.value().grad(), grads_before[i++]));
  }
}
