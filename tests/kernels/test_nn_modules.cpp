// The liger::nn modules and functional ops: each module's forward and
// backward against the reference op with the same options, the options
// reaching the op, the backend the registry gives them, and cloning.
#include "kernels/nn/nn.h"
#include "kernels/registry.h"
#include "tests/catch.h"
#include "tests/kernels/test_utils.h"

#include <torch/torch.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

using liger::kernels::Backend;
using liger::kernels::KernelSet;
using liger::kernels::Op;
using liger::kernels::test::thrown_message;
using torch::Tensor;

namespace {

constexpr double kAtol = 1e-5;  // fp32 tolerances of the kernel tests
constexpr double kRtol = 1e-5;

const KernelSet& reference() {
  static const KernelSet set = KernelSet::reference();
  return set;
}

// Rows of rms 2.5 (a norm backward cannot tell r from r^2 at rms 1).
Tensor rows_of_rms(std::vector<int64_t> shape, double rms) {
  Tensor x = torch::randn(shape);
  return x * (rms / x.pow(2).mean(-1, true).sqrt());
}

// A leaf copy of t that records its gradient.
Tensor leaf(const Tensor& t) {
  return t.detach().clone().requires_grad_(true);
}

// Back-propagates a fixed upstream gradient (drawn from seed 7) through `out`.
void backward_fixed(const Tensor& out) {
  torch::manual_seed(7);
  out.backward(torch::randn(out.sizes(), out.options()));
}

// The gradients of a module's parameters, by name, detached and cloned.
std::vector<std::pair<std::string, Tensor>> parameter_grads(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& item : module.named_parameters()) {
    out.emplace_back(item.key(), item.value().grad().detach().clone());
  }
  return out;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string printed(const torch::nn::Module& module) {
  std::ostringstream out;
  module.pretty_print(out);
  return out.str();
}

}  // namespace

TEST_CASE("nn modules take the fused backend the registry gives the input", "[nn]") {
  const Tensor x = torch::randn({2, 8});
  const Tensor x_bf16 = x.to(torch::kBFloat16);
  namespace F = liger::nn::functional;
  for (Op op : {Op::rms_norm, Op::layer_norm, Op::rope, Op::swiglu, Op::geglu, Op::cross_entropy,
                Op::fused_linear_cross_entropy}) {
    INFO(liger::kernels::op_name(op));
    // A CPU tensor gets composite in every build (cuda needs a CUDA device).
    CHECK(F::backend_for(op, x) == Backend::composite);
    CHECK(F::backend_for(op, x_bf16) == Backend::composite);
    CHECK(F::backend_for(op, x, /*fused=*/false) == Backend::reference);
  }
  // Resolved once per (device, dtype): the same set comes back.
  CHECK(&F::kernels_for(Op::rms_norm, x) == &F::kernels_for(Op::rms_norm, torch::zeros({3})));
  CHECK(&F::kernels_for(Op::rms_norm, x) != &F::kernels_for(Op::rms_norm, x_bf16));
}

TEST_CASE("RMSNorm matches the reference op with its options", "[nn]") {
  torch::manual_seed(0);
  for (bool fused : {true, false}) {
    INFO("fused " << fused);
    // eps 0.1 is large enough to change the output beyond the tolerance: an
    // option that does not reach the op fails the comparison.
    liger::nn::RMSNorm norm(liger::nn::RMSNormOptions(16)
                                .eps(0.1)
                                .offset(1.0)
                                .casting(liger::kernels::RmsNormCasting::gemma)
                                .fused(fused));
    CHECK(norm->weight.sizes() == torch::IntArrayRef{16});
    CHECK(norm->weight.abs().max().item<double>() == 0.0);  // offset + weight = 1 at first
    {
      torch::NoGradGuard no_grad;
      norm->weight.copy_(torch::randn({16}) * 0.3);
    }
    const Tensor x0 = rows_of_rms({2, 5, 16}, 2.5);
    const Tensor x = leaf(x0);
    const Tensor y = norm(x);
    backward_fixed(y);

    liger::kernels::RmsNormOptions options;
    options.eps = 0.1;
    options.offset = 1.0;
    options.casting = liger::kernels::RmsNormCasting::gemma;
    const Tensor x_ref = leaf(x0);
    const Tensor w_ref = leaf(norm->weight);
    const Tensor y_ref = reference().rms_norm(x_ref, w_ref, options);
    backward_fixed(y_ref);

    LIGER_CHECK_CLOSE("y", y, y_ref, kAtol, kRtol);
    LIGER_CHECK_CLOSE("dx", x.grad(), x_ref.grad(), kAtol, kRtol);
    LIGER_CHECK_CLOSE("dweight", norm->weight.grad(), w_ref.grad(), kAtol, kRtol);
  }
  CHECK(printed(*liger::nn::RMSNorm(8)) == "liger::nn::RMSNorm(8, eps=1e-06, offset=0)");
  CHECK(contains(thrown_message([&] { liger::nn::RMSNorm(liger::nn::RMSNormOptions(0)); }),
                 "hidden_size must be positive"));
}

TEST_CASE("LayerNorm matches the reference op, with and without bias", "[nn]") {
  torch::manual_seed(1);
  liger::nn::LayerNorm norm(liger::nn::LayerNormOptions(12).eps(0.05));
  CHECK(norm->parameters().size() == 2);
  {
    torch::NoGradGuard no_grad;
    CHECK(norm->weight.equal(torch::ones({12})));
    CHECK(norm->bias.equal(torch::zeros({12})));
    norm->weight.copy_(torch::randn({12}));
    norm->bias.copy_(torch::randn({12}));
  }
  const Tensor x0 = rows_of_rms({3, 4, 12}, 2.5) + 0.7;
  const Tensor x = leaf(x0);
  const Tensor y = norm(x);
  backward_fixed(y);
  const Tensor x_ref = leaf(x0);
  const Tensor w_ref = leaf(norm->weight);
  const Tensor b_ref = leaf(norm->bias);
  const Tensor y_ref = reference().layer_norm(x_ref, w_ref, b_ref, 0.05);
  backward_fixed(y_ref);
  LIGER_CHECK_CLOSE("y", y, y_ref, kAtol, kRtol);
  LIGER_CHECK_CLOSE("dx", x.grad(), x_ref.grad(), kAtol, kRtol);
  LIGER_CHECK_CLOSE("dweight", norm->weight.grad(), w_ref.grad(), kAtol, kRtol);
  LIGER_CHECK_CLOSE("dbias", norm->bias.grad(), b_ref.grad(), kAtol, kRtol);

  liger::nn::LayerNorm no_bias(liger::nn::LayerNormOptions(12).bias(false));
  CHECK(no_bias->parameters().size() == 1);
  CHECK_FALSE(no_bias->bias.defined());
  LIGER_CHECK_CLOSE("no bias", no_bias(x0), reference().layer_norm(x0, no_bias->weight, {}, 1e-5),
                    kAtol, kRtol);
}

namespace {

// The module against the same projections around the reference op.
template <typename TestType>
void check_glu_mlp(bool swiglu) {
  torch::manual_seed(2);
  for (bool bias : {false, true}) {
    INFO((swiglu ? "swiglu" : "geglu") << ", bias " << bias);
    TestType mlp(liger::nn::GLUMLPOptions(16, 40).bias(bias));
    CHECK(mlp->parameters().size() == (bias ? 6u : 3u));
    CHECK(mlp->gate_proj->weight.sizes() == torch::IntArrayRef({40, 16}));
    CHECK(mlp->down_proj->weight.sizes() == torch::IntArrayRef({16, 40}));
    const Tensor x0 = torch::randn({2, 3, 16});

    const Tensor x = leaf(x0);
    const Tensor y = mlp(x);
    backward_fixed(y);
    const auto grads = parameter_grads(*mlp);
    mlp->zero_grad();

    // The same projections around the reference op.
    const Tensor x_ref = leaf(x0);
    const Tensor gate = mlp->gate_proj(x_ref);
    const Tensor up = mlp->up_proj(x_ref);
    const Tensor h = swiglu ? reference().swiglu(gate, up) : reference().geglu(gate, up);
    const Tensor y_ref = mlp->down_proj(h);
    backward_fixed(y_ref);

    LIGER_CHECK_CLOSE("y", y, y_ref, kAtol, kRtol);
    LIGER_CHECK_CLOSE("dx", x.grad(), x_ref.grad(), kAtol, kRtol);
    const auto grads_ref = parameter_grads(*mlp);
    REQUIRE(grads.size() == grads_ref.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      LIGER_CHECK_CLOSE("d" + grads[i].first, grads[i].second, grads_ref[i].second, kAtol, kRtol);
    }
  }
  CHECK(contains(printed(*TestType(4, 8)),
                 swiglu ? "SwiGLUMLP(hidden_size=4" : "GeGLUMLP(hidden_size=4"));
}

}  // namespace

TEST_CASE("SwiGLUMLP matches the reference op inside the same projections", "[nn]") {
  check_glu_mlp<liger::nn::SwiGLUMLP>(true);
}

TEST_CASE("GeGLUMLP matches the reference op inside the same projections", "[nn]") {
  check_glu_mlp<liger::nn::GeGLUMLP>(false);
}

TEST_CASE("FusedLinearCrossEntropyLoss matches the reference op with its options", "[nn]") {
  torch::manual_seed(3);
  const Tensor hidden0 = torch::randn({2, 6, 32});
  const Tensor weight0 = torch::randn({50, 32}) * 0.2;
  const Tensor bias0 = torch::randn({50}) * 0.1;
  Tensor target = torch::randint(0, 50, {2, 6});
  target[0][1] = -1;  // ignored, with ignore_index -1
  target[1][4] = -1;
  for (auto reduction : {liger::kernels::Reduction::mean, liger::kernels::Reduction::sum,
                         liger::kernels::Reduction::none}) {
    INFO("reduction " << static_cast<int>(reduction));
    // A small chunk budget: the fused backend goes through several chunks of tokens.
    liger::nn::FusedLinearCrossEntropyLoss loss_fn(liger::nn::FusedLinearCrossEntropyLossOptions()
                                                       .ignore_index(-1)
                                                       .label_smoothing(0.1)
                                                       .z_loss_scale(1e-2)
                                                       .softcap(3.0)
                                                       .reduction(reduction)
                                                       .chunk_mb(1e-3));
    const Tensor hidden = leaf(hidden0);
    const Tensor weight = leaf(weight0);
    const Tensor bias = leaf(bias0);
    const Tensor loss = loss_fn(weight, hidden, target, bias);
    backward_fixed(loss);

    liger::kernels::FusedLinearCrossEntropyOptions options;
    options.ce.ignore_index = -1;
    options.ce.label_smoothing = 0.1;
    options.ce.z_loss_scale = 1e-2;
    options.ce.softcap = 3.0;
    options.ce.reduction = reduction;
    const Tensor hidden_ref = leaf(hidden0);
    const Tensor weight_ref = leaf(weight0);
    const Tensor bias_ref = leaf(bias0);
    const Tensor loss_ref = reference().fused_linear_cross_entropy(
        hidden_ref.reshape({-1, 32}), weight_ref, bias_ref, target.reshape({-1}), options);
    backward_fixed(loss_ref);

    LIGER_CHECK_CLOSE("loss", loss, loss_ref, kAtol, kRtol);
    LIGER_CHECK_CLOSE("dhidden", hidden.grad(), hidden_ref.grad(), kAtol, kRtol);
    LIGER_CHECK_CLOSE("dweight", weight.grad(), weight_ref.grad(), kAtol, kRtol);
    LIGER_CHECK_CLOSE("dbias", bias.grad(), bias_ref.grad(), kAtol, kRtol);
  }
  liger::nn::FusedLinearCrossEntropyLoss loss_fn;
  CHECK(
      contains(thrown_message([&] { loss_fn(weight0, hidden0, torch::zeros({5}, torch::kLong)); }),
               "one target per row"));
}

TEST_CASE("CrossEntropyLoss matches the reference op with its options", "[nn]") {
  torch::manual_seed(4);
  const Tensor logits0 = torch::randn({3, 5, 40}) * 2;
  Tensor target = torch::randint(0, 40, {3, 5});
  target[2][0] = -100;  // the default ignore_index
  liger::nn::CrossEntropyLoss loss_fn(
      liger::nn::CrossEntropyLossOptions().label_smoothing(0.2).z_loss_scale(1e-2).reduction(
          liger::kernels::Reduction::sum));
  const Tensor logits = leaf(logits0);
  const Tensor loss = loss_fn(logits, target);
  backward_fixed(loss);

  liger::kernels::CrossEntropyOptions options;
  options.label_smoothing = 0.2;
  options.z_loss_scale = 1e-2;
  options.reduction = liger::kernels::Reduction::sum;
  const Tensor logits_ref = leaf(logits0);
  const Tensor loss_ref =
      reference().cross_entropy(logits_ref.reshape({-1, 40}), target.reshape({-1}), options);
  backward_fixed(loss_ref);
  LIGER_CHECK_CLOSE("loss", loss, loss_ref, kAtol, kRtol);
  LIGER_CHECK_CLOSE("dlogits", logits.grad(), logits_ref.grad(), kAtol, kRtol);
}

TEST_CASE("rope and its cos/sin tables", "[nn]") {
  const int64_t seq = 7, dim = 8;
  const double theta = 500.0;
  const auto [cos, sin] = liger::nn::rope_cos_sin(seq, dim, theta);
  REQUIRE(cos.sizes() == torch::IntArrayRef({1, seq, dim}));
  REQUIRE(cos.scalar_type() == torch::kFloat);
  // angle(t, i) = t * theta^(-2 (i mod D/2) / D), in fp64.
  const Tensor t = torch::arange(seq, torch::kDouble).unsqueeze(1);
  const Tensor i = torch::arange(dim, torch::kDouble).remainder(dim / 2).unsqueeze(0);
  const Tensor angles = t * torch::pow(theta, -2.0 * i / dim);
  LIGER_CHECK_CLOSE("cos", cos[0].to(torch::kDouble), angles.cos(), 1e-6, 1e-6);
  LIGER_CHECK_CLOSE("sin", sin[0].to(torch::kDouble), angles.sin(), 1e-6, 1e-6);

  torch::manual_seed(5);
  const Tensor q0 = torch::randn({2, seq, 4, dim});
  const Tensor k0 = torch::randn({2, seq, 2, dim});
  const Tensor q = leaf(q0), k = leaf(k0);
  const auto [q_rot, k_rot] = liger::nn::rope(q, k, cos, sin);
  backward_fixed(q_rot + 0.0);
  const Tensor q_ref = leaf(q0), k_ref = leaf(k0);
  const auto [q_rot_ref, k_rot_ref] = reference().rope(q_ref, k_ref, cos, sin);
  backward_fixed(q_rot_ref + 0.0);
  LIGER_CHECK_CLOSE("q", q_rot, q_rot_ref, kAtol, kRtol);
  LIGER_CHECK_CLOSE("k", k_rot, k_rot_ref, kAtol, kRtol);
  LIGER_CHECK_CLOSE("dq", q.grad(), q_ref.grad(), kAtol, kRtol);
  CHECK_FALSE(q_rot.allclose(q0));  // the rotation did something
  CHECK(contains(thrown_message([&] { liger::nn::rope_cos_sin(4, 7); }), "head_dim must be even"));
}

TEST_CASE("nn modules clone into independent copies", "[nn]") {
  liger::nn::RMSNorm norm(liger::nn::RMSNormOptions(6).eps(1e-3));
  auto copy = std::dynamic_pointer_cast<liger::nn::RMSNormImpl>(norm->clone());
  REQUIRE(copy);
  CHECK(copy->options.eps() == 1e-3);
  {
    torch::NoGradGuard no_grad;
    norm->weight.fill_(2.0);
  }
  CHECK(copy->weight.equal(torch::ones({6})));  // its own storage

  liger::nn::SwiGLUMLP mlp(4, 8);
  auto mlp_copy = std::dynamic_pointer_cast<liger::nn::SwiGLUMLPImpl>(mlp->clone());
  REQUIRE(mlp_copy);
  CHECK(mlp_copy->up_proj->weight.equal(mlp->up_proj->weight));
  CHECK(mlp_copy->up_proj->weight.data_ptr() != mlp->up_proj->weight.data_ptr());
}
