// AdamW (fused kernel) against LibTorch's reference torch::optim::AdamW, the
// weight-decay grouping, the learning-rate schedules, stochastic rounding of
// bf16 updates and training.precision.
#include "kernels/optim.h"
#include "kernels/sum_of_squares.h"
#include "tests/catch.h"
#include "trainer/config.h"
#include "trainer/lr_schedule.h"
#include "trainer/model_setup.h"
#include "trainer/optimizer.h"

#include <torch/torch.h>

#include <array>
#include <cmath>
#include <sstream>
#include <vector>

using liger::config::LrScheduleKind;
using liger::trainer::AdamW;
using liger::trainer::LrSchedule;

TEST_CASE("AdamW matches torch::optim::AdamW step for step (fp32)") {
  torch::manual_seed(0);
  const double lr = 1e-2, wd = 0.1;
  at::Tensor matrix = torch::randn({17, 9});
  at::Tensor vector = torch::randn({9});
  at::Tensor ours_m = matrix.clone().requires_grad_(true),
             ours_v = vector.clone().requires_grad_(true);
  at::Tensor ref_m = matrix.clone().requires_grad_(true),
             ref_v = vector.clone().requires_grad_(true);

  auto groups = liger::trainer::split_decay_groups({{"m", ours_m}, {"v", ours_v}}, wd);
  REQUIRE(groups[0].names == std::vector<std::string>{"m"});
  REQUIRE(groups[1].names == std::vector<std::string>{"v"});
  REQUIRE(groups[1].weight_decay == 0.0);
  liger::trainer::AdamWOptions options;
  options.beta1 = 0.9;
  options.beta2 = 0.95;
  options.eps = 1e-8;
  AdamW ours(groups, options);

  std::vector<torch::optim::OptimizerParamGroup> ref_groups;
  ref_groups.emplace_back(
      std::vector<at::Tensor>{ref_m},
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd)));
  ref_groups.emplace_back(
      std::vector<at::Tensor>{ref_v},
      std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
  torch::optim::AdamW reference(ref_groups, torch::optim::AdamWOptions(lr));

  for (int step = 0; step < 6; ++step) {
    const at::Tensor gm = torch::randn({17, 9}), gv = torch::randn({9});
    ours_m.mutable_grad() = gm.clone();
    ours_v.mutable_grad() = gv.clone();
    ref_m.mutable_grad() = gm.clone();
    ref_v.mutable_grad() = gv.clone();
    ours.step(lr);
    reference.step();
  }
  const double err_m = (ours_m - ref_m).abs().max().item<double>();
  const double err_v = (ours_v - ref_v).abs().max().item<double>();
  INFO("max abs error: matrix " << err_m << ", vector " << err_v);
  CHECK(err_m <= 1e-6);
  CHECK(err_v <= 1e-6);
  // The test can fail: the parameters did move.
  CHECK((ours_m - matrix).abs().max().item<double>() > 1e-3);
  CHECK(ours.steps_taken() == 6);
}

TEST_CASE("AdamW state round-trips through an archive") {
  torch::manual_seed(1);
  at::Tensor p = torch::randn({4, 4}).requires_grad_(true);
  AdamW first(liger::trainer::split_decay_groups({{"p", p}}, 0.0), {});
  p.mutable_grad() = torch::randn({4, 4});
  first.step(0.1);

  torch::serialize::OutputArchive out;
  first.save(out);
  std::ostringstream buffer;
  out.save_to(buffer);

  at::Tensor q = p.detach().clone().requires_grad_(true);
  AdamW second(liger::trainer::split_decay_groups({{"p", q}}, 0.0), {});
  torch::serialize::InputArchive in;
  std::istringstream read(buffer.str());
  in.load_from(read);
  second.load(in);
  CHECK(second.steps_taken() == 1);

  const at::Tensor g = torch::randn({4, 4});
  p.mutable_grad() = g.clone();
  q.mutable_grad() = g.clone();
  first.step(0.1);
  second.step(0.1);
  CHECK(torch::equal(p, q));
}

TEST_CASE("learning-rate schedules: warmup, decay, floor") {
  LrSchedule s;
  s.peak_lr = 1.0;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.min_lr_ratio = 0.1;

  s.kind = LrScheduleKind::constant;
  CHECK(s.at(1) == Approx(0.1));
  CHECK(s.at(10) == Approx(1.0));
  CHECK(s.at(100) == Approx(1.0));

  s.kind = LrScheduleKind::linear;
  CHECK(s.at(5) == Approx(0.5));
  CHECK(s.at(60) == Approx(0.1 + 0.9 * 0.5));
  CHECK(s.at(110) == Approx(0.1));
  CHECK(s.at(500) == Approx(0.1));

  s.kind = LrScheduleKind::cosine;
  CHECK(s.at(10) == Approx(1.0));
  CHECK(s.at(60) == Approx(0.55));  // half way: floor + (peak - floor) / 2
  CHECK(s.at(110) == Approx(0.1));
  for (int64_t step = 11; step < 110; ++step) CHECK(s.at(step + 1) <= s.at(step));

  s.kind = static_cast<LrScheduleKind>(99);  // a value no config can produce
  CHECK_THROWS_AS(s.at(50), std::invalid_argument);
}

// ---------------------------------------------------------------------------
// training.precision and stochastic rounding of bf16 AdamW updates
// ---------------------------------------------------------------------------

namespace {

namespace k = liger::kernels;

// One parameter of `init` in `dtype`, stepped `steps` times by our AdamW
// with a constant gradient `grad` and learning rate `lr`; returns it in fp32.
at::Tensor train_constant_grad(const at::Tensor& init, at::ScalarType dtype, double grad, double lr,
                               int steps, bool stochastic, uint64_t seed = 7) {
  at::Tensor p = init.to(dtype).clone().requires_grad_(true);  // cast; a copy even for fp32
  liger::trainer::AdamWOptions options;
  options.stochastic_rounding = stochastic;
  options.seed = seed;
  AdamW adam(liger::trainer::split_decay_groups({{"w", p}}, 0.0), options);
  for (int i = 0; i < steps; ++i) {
    p.mutable_grad() = torch::full_like(p, grad);
    adam.step(lr);
  }
  return p.detach().to(torch::kFloat);  // cast: exact from bf16
}

}  // namespace

TEST_CASE("the ATen AdamW path without stochastic rounding equals the fused AdamW (fp32)") {
  torch::manual_seed(3);
  const at::Tensor init = torch::randn({33, 17});
  at::Tensor fused = init.clone().requires_grad_(true);
  liger::trainer::AdamWOptions options;
  options.beta1 = 0.9;
  options.beta2 = 0.95;
  AdamW reference(liger::trainer::split_decay_groups({{"w", fused}}, 0.1), options);

  at::Tensor ours = init.clone();
  at::Tensor exp_avg = torch::zeros_like(ours), exp_avg_sq = torch::zeros_like(ours);
  for (int step = 1; step <= 8; ++step) {
    const at::Tensor g = torch::randn({33, 17});
    const double lr = 1e-2 * step;
    fused.mutable_grad() = g.clone();
    reference.step(lr);
    k::AdamWStepOptions o;
    o.lr = lr;
    o.beta1 = 0.9;
    o.beta2 = 0.95;
    o.eps = 1e-8;
    o.weight_decay = 0.1;
    o.step = step;
    o.stochastic_rounding = false;
    k::adamw_step(ours, g, exp_avg, exp_avg_sq, o, k::OptimPath::aten);
  }
  const double err = (ours - fused.detach()).abs().max().item<double>();
  INFO("max abs error " << err);
  CHECK(err <= 1e-6);
  CHECK((ours - init).abs().max().item<double>() > 1e-2);  // it moved
  // Stochastic rounding is a no-op for fp32 parameters.
  at::Tensor again = init.clone();
  at::Tensor m2 = torch::zeros_like(again), v2 = torch::zeros_like(again);
  k::AdamWStepOptions o;
  o.lr = 1e-2;
  o.stochastic_rounding = true;
  at::Tensor plain = init.clone(), m3 = torch::zeros_like(plain), v3 = torch::zeros_like(plain);
  const at::Tensor g = torch::randn({33, 17});
  k::adamw_step(again, g, m2, v2, o, k::OptimPath::aten);
  o.stochastic_rounding = false;
  k::adamw_step(plain, g, m3, v3, o, k::OptimPath::aten);
  CHECK(torch::equal(again, plain));
}

TEST_CASE("bf16 AdamW: round to nearest loses a 1e-5 update, stochastic rounding keeps it") {
  // 0.02 lies in [2^-6, 2^-5): the bf16 spacing there is 2^-13 ~ 1.2e-4, and a
  // constant gradient makes every Adam step ~lr = 1e-5, below half of it.
  const int steps = 200;
  const double lr = 1e-5;
  const at::Tensor init = torch::full({64, 64}, 0.02);
  const at::Tensor start = init.to(torch::kBFloat16).to(torch::kFloat);  // what bf16 holds

  const at::Tensor nearest = train_constant_grad(init, torch::kBFloat16, 1.0, lr, steps, false);
  CHECK(torch::equal(nearest, start));  // not one element moved

  const at::Tensor sr = train_constant_grad(init, torch::kBFloat16, 1.0, lr, steps, true);
  const double moved = (start - sr).mean().item<double>();
  INFO("mean decrease " << moved << ", expected ~" << steps * lr);
  CHECK(moved == Approx(steps * lr).epsilon(0.2));
  // fp32 parameters move by the same amount (the truth SR tracks in expectation).
  const at::Tensor fp32 = train_constant_grad(init, torch::kFloat, 1.0, lr, steps, true);
  const double moved32 = (init - fp32).mean().item<double>();
  CHECK(moved == Approx(moved32).epsilon(0.2));
  // The state of a pure bf16 parameter is bf16.
  at::Tensor p = init.to(torch::kBFloat16).requires_grad_(true);
  AdamW adam(liger::trainer::split_decay_groups({{"w", p}}, 0.0), {});
  p.mutable_grad() = torch::ones_like(p);
  adam.step(lr);
  torch::serialize::OutputArchive out;
  adam.save(out);
  std::ostringstream buffer;
  out.save_to(buffer);
  torch::serialize::InputArchive in;
  std::istringstream read(buffer.str());
  in.load_from(read);
  at::Tensor exp_avg;
  in.read("w.exp_avg", exp_avg);
  CHECK(exp_avg.scalar_type() == torch::kBFloat16);
}

TEST_CASE("stochastic rounding to bf16 is unbiased") {
  // Values strictly between bf16 neighbours, at several fractions of the spacing.
  for (const double fraction : {0.01, 0.25, 0.5, 0.9}) {
    for (const double sign : {1.0, -1.0}) {
      const double low = 0.0200195312;  // a bf16 value (0x3ca4); spacing 2^-13 above it
      const double spacing = std::ldexp(1.0, -13);
      const double x = sign * (low + fraction * spacing);
      const at::Tensor xs = torch::full({1 << 18}, x, torch::kFloat);
      const at::Tensor r = k::stochastic_round_bf16(xs, 11, 0, 1);
      REQUIRE(r.scalar_type() == torch::kBFloat16);
      const at::Tensor rf = r.to(torch::kFloat);
      // Every result is one of the two neighbours.
      const at::Tensor lo = torch::full({1}, sign * low, torch::kFloat);
      const at::Tensor hi = torch::full({1}, sign * (low + spacing), torch::kFloat);
      CHECK(torch::logical_or(rf == lo, rf == hi).all().item<bool>());
      const double mean = rf.to(torch::kDouble).mean().item<double>();
      const double x32 = xs[0].item<double>();
      INFO("fraction " << fraction << " sign " << sign << ": mean " << mean << " vs " << x32);
      // 2^18 draws: the mean's standard deviation is <= spacing / 1024.
      CHECK(std::abs(mean - x32) < spacing * 0.005);
    }
  }
  // Representable values, zero, inf and NaN are kept.
  const at::Tensor special =
      torch::tensor({0.0f, -0.0f, 1.0f, 0.0200195312f, INFINITY, -INFINITY, NAN});
  const at::Tensor r = k::stochastic_round_bf16(special, 1, 2, 3).to(torch::kFloat);
  CHECK(torch::equal(r.slice(0, 0, 6), special.slice(0, 0, 6)));
  CHECK(std::isnan(r[6].item<float>()));
}

TEST_CASE("stochastic rounding is deterministic for a seed and varies with seed, tensor and step") {
  torch::manual_seed(5);
  const at::Tensor x = torch::randn({4096}) * 0.02;
  const at::Tensor a = k::stochastic_round_bf16(x, 42, 3, 9);
  CHECK(torch::equal(a, k::stochastic_round_bf16(x, 42, 3, 9)));
  CHECK_FALSE(torch::equal(a, k::stochastic_round_bf16(x, 43, 3, 9)));
  CHECK_FALSE(torch::equal(a, k::stochastic_round_bf16(x, 42, 4, 9)));
  CHECK_FALSE(torch::equal(a, k::stochastic_round_bf16(x, 42, 3, 10)));
  // The whole optimizer: same seed, same bits; another seed, other bits.
  const at::Tensor init = torch::full({32, 32}, 0.02);
  const at::Tensor one = train_constant_grad(init, torch::kBFloat16, 1.0, 1e-5, 20, true, 1);
  CHECK(torch::equal(one, train_constant_grad(init, torch::kBFloat16, 1.0, 1e-5, 20, true, 1)));
  CHECK_FALSE(
      torch::equal(one, train_constant_grad(init, torch::kBFloat16, 1.0, 1e-5, 20, true, 2)));
}

TEST_CASE("adamw_step_many on the CPU equals adamw_step per tensor, bitwise", "[adamw]") {
  // The CPU path of the multi-tensor step: every tensor through adamw_step
  // (ATen), so the results are those of calling it per tensor. Mixed sizes
  // and dtypes (bf16 stochastic and to nearest, an fp32 gradient beside a bf16
  // parameter, fp32 with bf16/fp16 compute copies, fp16, an empty and a
  // strided parameter), each with its own lr, decay, step and stream, with
  // and without a grad_scale; three steps. Bad arguments are refused before
  // any tensor changes.
  struct Spec {
    int64_t n;
    at::ScalarType param, grad, copy;  // copy kByte: none
    bool stochastic;
  };
  const std::vector<Spec> specs = {
      {1, at::kBFloat16, at::kBFloat16, at::kByte, true},
      {7, at::kBFloat16, at::kBFloat16, at::kByte, true},
      {8, at::kBFloat16, at::kBFloat16, at::kByte, true},
      {4101, at::kBFloat16, at::kBFloat16, at::kByte, true},
      {9, at::kBFloat16, at::kFloat, at::kByte, true},
      {300, at::kBFloat16, at::kBFloat16, at::kByte, false},
      {2049, at::kFloat, at::kBFloat16, at::kBFloat16, false},
      {1, at::kFloat, at::kBFloat16, at::kBFloat16, false},
      {517, at::kFloat, at::kHalf, at::kHalf, false},
      {100, at::kFloat, at::kFloat, at::kByte, false},
      {33, at::kHalf, at::kHalf, at::kByte, false},
      {0, at::kBFloat16, at::kBFloat16, at::kByte, true},
  };
  for (bool scaled : {false, true}) {
    INFO((scaled ? "grad_scale 0.6" : "no grad_scale"));
    const at::Tensor grad_scale = scaled ? torch::full({}, 0.6, torch::kFloat) : at::Tensor();
    std::vector<at::Tensor> p1, m1, v1, c1, p2, m2, v2, c2;
    torch::manual_seed(6);
    for (const Spec& s : specs) {
      const at::Tensor p = (torch::randn({s.n}) * 0.02).to(s.param);
      const at::Tensor m = (torch::randn({s.n}) * 1e-3).to(s.param),
                       v = (torch::rand({s.n}) * 1e-6).to(s.param);
      p1.push_back(p.clone());
      p2.push_back(p.clone());
      m1.push_back(m.clone());
      m2.push_back(m.clone());
      v1.push_back(v.clone());
      v2.push_back(v.clone());
      c1.push_back(s.copy == at::kByte ? at::Tensor() : torch::zeros({s.n}, s.copy));
      c2.push_back(s.copy == at::kByte ? at::Tensor() : torch::zeros({s.n}, s.copy));
    }
    // A strided parameter (and its state) too: [17, 9] seen through a transpose.
    const at::Tensor strided = (torch::randn({9, 17}) * 0.02).to(at::kBFloat16);
    p1.push_back(strided.clone().t());
    p2.push_back(strided.clone().t());
    m1.push_back(torch::zeros({17, 9}, at::kBFloat16));
    m2.push_back(torch::zeros({17, 9}, at::kBFloat16));
    v1.push_back(torch::zeros({17, 9}, at::kBFloat16));
    v2.push_back(torch::zeros({17, 9}, at::kBFloat16));
    c1.emplace_back();
    c2.emplace_back();
    const at::Tensor init = p2[3].clone();
    auto options = [&](size_t i, int step, const at::Tensor& copy) {
      k::AdamWStepOptions o;
      o.lr = 1e-3 * static_cast<double>(i + 1);
      o.beta1 = 0.9;
      o.beta2 = 0.95;
      o.weight_decay = i % 2 == 0 ? 0.1 : 0.0;
      o.step = step + static_cast<int64_t>(i % 3);
      o.stochastic_rounding = i < specs.size() ? specs[i].stochastic : true;
      o.seed = 77;
      o.stream = i;
      o.grad_scale = grad_scale;
      o.compute_copy = copy;
      return o;
    };
    for (int step = 1; step <= 3; ++step) {
      INFO("step " << step);
      std::vector<k::AdamWUpdate> updates;
      for (size_t i = 0; i < p1.size(); ++i) {
        const at::ScalarType gt = i < specs.size() ? specs[i].grad : at::kBFloat16;
        const at::Tensor g = torch::randn(p1[i].sizes()).to(gt);
        k::adamw_step(p1[i], g, m1[i], v1[i], options(i, step, c1[i]));
        updates.push_back({p2[i], g, m2[i], v2[i], options(i, step, c2[i])});
      }
      k::adamw_step_many(updates);
      for (size_t i = 0; i < p1.size(); ++i) {
        INFO("tensor " << i << " of " << p1[i].numel() << " " << p1[i].scalar_type());
        CHECK(torch::equal(p2[i], p1[i]));
        CHECK(torch::equal(m2[i], m1[i]));
        CHECK(torch::equal(v2[i], v1[i]));
        if (c1[i].defined()) {
          CHECK(torch::equal(c2[i], c1[i]));
          CHECK(torch::equal(c2[i], p2[i].to(c2[i].scalar_type())));
        }
      }
      // Bad arguments: a repeated parameter, a state of the wrong size. Nothing changes.
      const at::Tensor before = p2[3].clone();
      std::vector<k::AdamWUpdate> repeated = {updates[3], updates[3]};
      CHECK_THROWS(k::adamw_step_many(repeated));
      std::vector<k::AdamWUpdate> mismatched = {updates[3], updates[4]};
      mismatched[1].exp_avg = torch::zeros({3}, at::kBFloat16);
      CHECK_THROWS(k::adamw_step_many(mismatched));
      CHECK(torch::equal(p2[3], before));
    }
    CHECK_FALSE(torch::equal(p2[3], init));  // it moved
  }
  k::adamw_step_many({});  // nothing to do
}

TEST_CASE("training.precision sets the parameter and compute dtypes; contradictions are errors") {
  using liger::config::ConfigError;
  using liger::config::parse_config;
  using liger::trainer::compute_dtype;
  using liger::trainer::parameter_dtype;
  auto message = [](const std::string& yaml, const std::vector<std::string>& set = {}) {
    try {
      parse_config(yaml, "p.yaml", set);
    } catch (const ConfigError& error) {
      return std::string(error.what());
    }
    return std::string();
  };
  auto has = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  };

  const auto bf16 = parse_config("training:\n  precision: bf16\n", "p.yaml");
  CHECK(parameter_dtype(bf16) == torch::kBFloat16);
  CHECK(compute_dtype(bf16) == torch::kBFloat16);
  CHECK(bf16.model.dtype == liger::config::Dtype::bf16);
  CHECK_FALSE(bf16.training.master_weights);
  CHECK(bf16.training.stochastic_rounding);
  // The resolved YAML reads back without a contradiction.
  CHECK(parameter_dtype(parse_config(bf16.resolved_yaml, "resolved.yaml")) == torch::kBFloat16);

  const auto mixed = parse_config("training:\n  precision: bf16-mixed\n", "p.yaml");
  CHECK(parameter_dtype(mixed) == torch::kFloat);
  CHECK(compute_dtype(mixed) == torch::kBFloat16);
  const auto fp32 = parse_config("model:\n  dtype: fp32\n", "p.yaml", {"training.precision=fp32"});
  CHECK(parameter_dtype(fp32) == torch::kFloat);
  CHECK(compute_dtype(fp32) == torch::kFloat);
  // auto: today's behaviour from model.dtype + master_weights.
  const auto legacy =
      parse_config("model:\n  dtype: bf16\ntraining:\n  master_weights: false\n", "p.yaml");
  CHECK(legacy.training.precision == liger::config::Precision::auto_);
  CHECK(parameter_dtype(legacy) == torch::kBFloat16);
  CHECK(parameter_dtype(parse_config("model:\n  dtype: bf16\n", "p.yaml")) == torch::kFloat);
  // Agreeing keys are fine.
  CHECK(message("model:\n  dtype: bf16\ntraining:\n  precision: bf16\n  master_weights: false\n")
            .empty());
  // A TrainConfig built in code honours precision too.
  liger::config::TrainConfig code;
  code.training.precision = liger::config::Precision::bf16;
  CHECK(parameter_dtype(code) == torch::kBFloat16);

  const std::string dtype_clash = message("model:\n  dtype: fp32\ntraining:\n  precision: bf16\n");
  CHECK(has(dtype_clash, "training.precision"));
  CHECK(has(dtype_clash, "model.dtype"));
  CHECK(has(dtype_clash, "p.yaml"));
  const std::string master_clash =
      message("training:\n  precision: bf16\n  master_weights: true\n");
  CHECK(has(master_clash, "training.precision"));
  CHECK(has(master_clash, "training.master_weights"));
  CHECK(has(message("training:\n  precision: bf16-mixed\n  master_weights: false\n"),
            "training.master_weights"));
  CHECK(has(message("training:\n  precision: fp32\n", {"model.dtype=bf16"}), "model.dtype"));
  CHECK(has(message("training:\n  precision: fp16\n"), "training.precision"));  // not a choice
}

TEST_CASE("AdamW::step with a grad_scale equals a step on gradients multiplied by it (clipping)") {
  // fp32 goes through the fused AdamW (which divides by 1 / scale), bf16 with
  // stochastic rounding through kernels::adamw_step (which multiplies). The
  // scale changes from step to step: Adam is nearly blind to a constant one.
  const std::vector<double> scales = {1.0, 0.05, 0.6, 0.2};
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    INFO("dtype " << dtype);
    torch::manual_seed(3);
    const at::Tensor start = (torch::randn({33, 7}) * 0.02).to(dtype);
    at::Tensor scaled_p = start.clone().requires_grad_(true),
               plain_p = start.clone().requires_grad_(true),
               unscaled_p = start.clone().requires_grad_(true);
    liger::trainer::AdamWOptions options;
    options.seed = 5;
    AdamW scaled(liger::trainer::split_decay_groups({{"w", scaled_p}}, 0.1), options);
    AdamW plain(liger::trainer::split_decay_groups({{"w", plain_p}}, 0.1), options);
    AdamW unscaled(liger::trainer::split_decay_groups({{"w", unscaled_p}}, 0.1), options);
    for (const double s : scales) {
      const at::Tensor grad = torch::randn({33, 7}).to(dtype);
      scaled_p.mutable_grad() = grad.clone();
      // The reference: the gradient multiplied in fp32, then stored in its dtype.
      plain_p.mutable_grad() = (grad.to(at::kFloat) * static_cast<float>(s)).to(dtype);
      unscaled_p.mutable_grad() = grad.clone();
      scaled.step(1e-2, torch::full({}, s, at::kFloat));
      plain.step(1e-2);
      unscaled.step(1e-2);
    }
    auto max_rel = [](const at::Tensor& a, const at::Tensor& b) {
      const at::Tensor af = a.detach().to(at::kFloat), bf = b.detach().to(at::kFloat);
      return ((af - bf).abs().max() / bf.abs().max()).item<double>();
    };
    // fp32: one rounding apart per step; bf16: the product rounded to bf16 in
    // the reference only, so a few bf16 steps at most.
    const double tolerance = dtype == at::kFloat ? 1e-6 : 2e-2;
    CHECK(max_rel(scaled_p, plain_p) < tolerance);
    CHECK(max_rel(unscaled_p, plain_p) > 5 * tolerance);  // the scale mattered
  }
}

TEST_CASE("AdamW with device values (CUDA graphs' split step) equals the plain step") {
  // prepare_step + apply_step, with lr, step counts and rounding keys taken
  // from the device block, against step(): fp32 (fused AdamW with a tensor lr)
  // and bf16 with stochastic rounding (kernels::adamw_step), an lr that
  // changes every step, a clipping scale, and checkpointed state.
  // On a GPU too: there the fused kernels read the device block (on the CPU
  // the ATen path uses the host fields, which must agree with it).
  const std::vector<double> lrs = {1e-2, 3e-3, 2e-2, 5e-4, 1e-2};
  std::vector<c10::Device> devices = {c10::Device(c10::kCPU)};
  if (torch::cuda::is_available()) devices.emplace_back(c10::kCUDA, 0);
  for (const auto& device : devices) {
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      INFO("dtype " << dtype << " on " << device);
      torch::manual_seed(4);
      const at::Tensor w0 = (torch::randn({21, 5}) * 0.02).to(device, dtype),
                       b0 = torch::randn({5}).to(device, dtype);
      at::Tensor pw = w0.clone().requires_grad_(true), pb = b0.clone().requires_grad_(true);
      at::Tensor dw = w0.clone().requires_grad_(true), db = b0.clone().requires_grad_(true);
      liger::trainer::AdamWOptions options;
      options.seed = 9;
      AdamW plain(liger::trainer::split_decay_groups({{"w", pw}, {"b", pb}}, 0.1), options);
      options.device_values = true;
      AdamW split(liger::trainer::split_decay_groups({{"w", dw}, {"b", db}}, 0.1), options);
      for (size_t k = 0; k < lrs.size(); ++k) {
        const at::Tensor gw = torch::randn({21, 5}).to(device, dtype),
                         gb = torch::randn({5}).to(device, dtype);
        const at::Tensor scale = torch::full({}, 0.25 + 0.15 * static_cast<double>(k),
                                             at::TensorOptions().dtype(at::kFloat).device(device));
        pw.mutable_grad() = gw.clone();
        pb.mutable_grad() = gb.clone();
        dw.mutable_grad() = gw.clone();
        db.mutable_grad() = gb.clone();
        plain.step(lrs[k], scale);
        split.prepare_step(lrs[k]);
        split.apply_step(scale);
      }
      CHECK(split.steps_taken() == plain.steps_taken());
      // fp32: the tensor lr is read as fp32 (the plain step's double lr is not),
      // a last-bit difference per step at most.
      const double tolerance = dtype == at::kFloat ? 1e-6 : 0.0;
      const std::vector<std::array<at::Tensor, 3>> compared = {{dw, pw, w0}, {db, pb, b0}};
      for (const auto& [split_p, plain_p, start] : compared) {
        const at::Tensor a = split_p.detach().to(at::kFloat), b = plain_p.detach().to(at::kFloat);
        CHECK(((a - b).abs().max() / b.abs().max()).item<double>() <= tolerance);
        CHECK((a - start.to(at::kFloat)).abs().max().item<double>() > 1e-4);  // it did train
      }
      // The saved state (exp_avg, exp_avg_sq, step) is the same.
      std::ostringstream plain_state, split_state;
      {
        torch::serialize::OutputArchive a, b;
        plain.save(a);
        split.save(b);
        a.save_to(plain_state);
        b.save_to(split_state);
      }
      std::istringstream in(split_state.str());
      torch::serialize::InputArchive archive;
      archive.load_from(in);
      at::Tensor step;
      archive.read("w.step", step);
      CHECK(step.item<double>() == static_cast<double>(lrs.size()));
    }
  }
  // apply_step needs its prepare_step, and every parameter its gradient.
  at::Tensor p = torch::zeros({3}).requires_grad_(true),
             q = torch::zeros({2, 2}).requires_grad_(true);
  liger::trainer::AdamWOptions options;
  options.device_values = true;
  AdamW split(liger::trainer::split_decay_groups({{"p", p}, {"q", q}}, 0.0), options);
  p.mutable_grad() = torch::ones({3});
  auto message_of = [&] {
    try {
      split.apply_step();
    } catch (const std::exception& error) {
      return std::string(error.what());
    }
    return std::string("(no error)");
  };
  CHECK(message_of().find("prepare_step") != std::string::npos);
  split.prepare_step(1e-3);
  CHECK(message_of().find("q got no gradient") != std::string::npos);
}

TEST_CASE(
    "AdamW with compute copies: the fp32 step on the widened 16-bit gradients, and the copies "
    "follow") {
  // Mixed precision on copies (trainer/compute_copies.h): the gradients sit on
  // bf16 copies of fp32 parameters. The update must equal the plain fp32
  // step given those gradients widened to fp32, and leave each copy equal to
  // its parameter cast to bf16, with and without device values and a
  // clipping scale. On a GPU too (the fused kernel with a bf16 gradient and
  // a copy to write); on the CPU the ATen path.
  const std::vector<double> lrs = {1e-2, 3e-3, 2e-2, 5e-4};
  std::vector<c10::Device> devices = {c10::Device(c10::kCPU)};
  if (torch::cuda::is_available()) devices.emplace_back(c10::kCUDA, 0);
  for (const auto& device : devices) {
    for (const bool device_values : {false, true}) {
      INFO("on " << device << (device_values ? ", device values" : ""));
      torch::manual_seed(6);
      const at::Tensor w0 = (torch::randn({37, 9}) * 0.02).to(device),
                       b0 = torch::randn({9}).to(device);
      at::Tensor pw = w0.clone().requires_grad_(true), pb = b0.clone().requires_grad_(true);
      at::Tensor mw = w0.clone(), mb = b0.clone();  // the masters
      at::Tensor cw = w0.to(at::kBFloat16).requires_grad_(true),
                 cb = b0.to(at::kBFloat16).requires_grad_(true);
      liger::trainer::AdamWOptions options;
      options.seed = 3;
      AdamW plain(liger::trainer::split_decay_groups({{"w", pw}, {"b", pb}}, 0.1), options);
      options.device_values = device_values;
      AdamW copied(liger::trainer::split_decay_groups({{"w", mw}, {"b", mb}}, 0.1, {cw, cb}),
                   options);
      for (size_t k = 0; k < lrs.size(); ++k) {
        const at::Tensor gw = torch::randn({37, 9}).to(device, at::kBFloat16);
        const at::Tensor gb = torch::randn({9}).to(device, at::kBFloat16);
        const at::Tensor scale = torch::full({}, 0.3 + 0.2 * static_cast<double>(k),
                                             at::TensorOptions().dtype(at::kFloat).device(device));
        pw.mutable_grad() = gw.to(at::kFloat);  // cast: bf16 to fp32, exact
        pb.mutable_grad() = gb.to(at::kFloat);
        cw.mutable_grad() = gw.clone();
        cb.mutable_grad() = gb.clone();
        const std::vector<at::Tensor> grads = copied.gradients();
        REQUIRE(grads.size() == 2);
        CHECK(grads[0].scalar_type() == at::kBFloat16);  // clipping measures the copies' gradients
        plain.step(lrs[k], scale);
        if (device_values) {
          copied.prepare_step(lrs[k]);
          copied.apply_step(scale);
        } else {
          copied.step(lrs[k], scale);
        }
        copied.zero_grad();
        CHECK_FALSE(cw.grad().defined());
        // The fused kernel divides with __fdividef (two fp32 ulps), _fused_adamw_
        // and the ATen path exactly: a few ulps of the weight per step at most.
        const std::vector<std::array<at::Tensor, 3>> compared = {{mw, pw, cw}, {mb, pb, cb}};
        for (const auto& [master, reference, copy] : compared) {
          const at::Tensor r = reference.detach();
          CHECK(((master - r).abs().max() / r.abs().max()).item<double>() <= 2e-6);
          CHECK(torch::equal(copy.detach(), master.to(at::kBFloat16)));  // cast to nearest, bitwise
        }
      }
      CHECK((mw - w0).abs().max().item<double>() > 1e-4);  // it trained
      // A checkpoint load writes the masters; refresh_compute_copies re-casts them.
      mw.fill_(0.125);
      copied.refresh_compute_copies();
      CHECK(torch::equal(cw.detach(), torch::full_like(cw, 0.125)));
    }
  }
  // A copy must match its parameter's shape and sit beside fp32.
  auto message_of = [](const at::Tensor& param, const at::Tensor& copy) {
    try {
      AdamW bad(liger::trainer::split_decay_groups({{"p", param}}, 0.0, {copy}), {});
    } catch (const std::exception& error) {
      return std::string(error.what());
    }
    return std::string("(no error)");
  };
  CHECK(message_of(torch::zeros({3}), torch::zeros({4}, at::kBFloat16)).find("compute copy of p") !=
        std::string::npos);
  CHECK(message_of(torch::zeros({3}, at::kBFloat16), torch::zeros({3}, at::kBFloat16))
            .find("fp32 parameter") != std::string::npos);
}

TEST_CASE(
    "AdamW with compute copies over micro-batches: the copies' gradients are summed in fp32") {
  // Gradient accumulation on copies: after each micro-batch's backward,
  // fold_copy_gradients adds the copy's bf16 gradient into its fp32
  // parameter's .grad and clears the copy's. The step must equal the fp32
  // step on the fp32 sum of the widened gradients; a bf16 running sum would
  // round (the check below shows that it does for these gradients).
  std::vector<c10::Device> devices = {c10::Device(c10::kCPU)};
  if (torch::cuda::is_available()) devices.emplace_back(c10::kCUDA, 0);
  for (const auto& device : devices) {
    for (const bool device_values : {false, true}) {
      INFO("on " << device << (device_values ? ", device values" : ""));
      torch::manual_seed(8);
      const at::Tensor w0 = (torch::randn({21, 16}) * 0.02).to(device);
      at::Tensor pw = w0.clone().requires_grad_(true);
      at::Tensor mw = w0.clone();
      at::Tensor cw = w0.to(at::kBFloat16).requires_grad_(true);
      liger::trainer::AdamWOptions options;
      AdamW plain(liger::trainer::split_decay_groups({{"w", pw}}, 0.1), options);
      options.device_values = device_values;
      AdamW copied(liger::trainer::split_decay_groups({{"w", mw}}, 0.1, {cw}), options);
      for (const double lr : {1e-2, 4e-3}) {
        // 1 + small values: their bf16 running sum loses the small parts.
        std::vector<at::Tensor> micro;
        for (int j = 0; j < 3; ++j)
          micro.push_back((1.0 + 0.01 * torch::randn({21, 16})).to(device, at::kBFloat16));
        at::Tensor sum32 = torch::zeros({21, 16}, at::TensorOptions().device(device));
        at::Tensor sum16 =
            torch::zeros({21, 16}, at::TensorOptions().device(device).dtype(at::kBFloat16));
        for (const at::Tensor& g : micro) {
          sum32 += g.to(at::kFloat);  // cast: bf16 to fp32, exact
          sum16 += g;
          cw.mutable_grad() = g.clone();
          copied.fold_copy_gradients();
          CHECK_FALSE(cw.grad().defined());
        }
        CHECK((sum16.to(at::kFloat) - sum32).abs().max().item<double>() >
              1e-3);  // bf16 would round
        pw.mutable_grad() = sum32;
        const std::vector<at::Tensor> grads = copied.gradients();
        REQUIRE(grads.size() == 1);
        CHECK(grads[0].scalar_type() == at::kFloat);  // clipping measures the fp32 sums
        CHECK(torch::equal(grads[0], sum32));
        plain.step(lr);
        if (device_values) {
          copied.prepare_step(lr);
          copied.apply_step();
        } else {
          copied.step(lr);
        }
        copied.zero_grad();
        CHECK_FALSE(mw.grad().defined());
        CHECK(((mw - pw.detach()).abs().max() / pw.detach().abs().max()).item<double>() <= 2e-6);
        CHECK(torch::equal(cw.detach(), mw.to(at::kBFloat16)));
      }
    }
  }
}

TEST_CASE(
    "sum_of_squares (clipping's squared norm) on the CPU: every tensor and dtype, no tensor is "
    "zero") {
  torch::manual_seed(12);
  const std::vector<at::Tensor> tensors = {torch::randn({17, 3}),
                                           torch::randn({5}).to(at::kBFloat16),
                                           torch::randn({4, 6}).t(), torch::zeros({0})};
  double expected = 0.0;
  for (const auto& t : tensors) expected += t.to(at::kDouble).square().sum().item<double>();
  const at::Tensor got = k::sum_of_squares(tensors);
  CHECK(got.scalar_type() == at::kFloat);
  CHECK(got.item<double>() == Approx(expected).epsilon(1e-6));
  CHECK(k::sum_of_squares({}).item<double>() == 0.0);
}
