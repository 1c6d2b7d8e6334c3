// AdamW (fused kernel) against LibTorch's reference torch::optim::AdamW, the
// weight-decay grouping, and the learning-rate schedules.
#include "tests/catch.h"
#include "trainer/lr_schedule.h"
#include "trainer/optimizer.h"

#include <torch/torch.h>

#include <cmath>

using liger::trainer::AdamW;
using liger::trainer::LrSchedule;

TEST_CASE("AdamW matches torch::optim::AdamW step for step (fp32)") {
  torch::manual_seed(0);
  const double lr = 1e-2, wd = 0.1;
  at::Tensor matrix = torch::randn({17, 9});
  at::Tensor vector = torch::randn({9});
  at::Tensor ours_m = matrix.clone().requires_grad_(true), ours_v = vector.clone().requires_grad_(true);
  at::Tensor ref_m = matrix.clone().requires_grad_(true), ref_v = vector.clone().requires_grad_(true);

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
  ref_groups.emplace_back(std::vector<at::Tensor>{ref_m},
                          std::make_unique<torch::optim::AdamWOptions>(
                              torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd)));
  ref_groups.emplace_back(std::vector<at::Tensor>{ref_v},
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

  s.kind = "constant";
  CHECK(s.at(1) == Approx(0.1));
  CHECK(s.at(10) == Approx(1.0));
  CHECK(s.at(100) == Approx(1.0));

  s.kind = "linear";
  CHECK(s.at(5) == Approx(0.5));
  CHECK(s.at(60) == Approx(0.1 + 0.9 * 0.5));
  CHECK(s.at(110) == Approx(0.1));
  CHECK(s.at(500) == Approx(0.1));

  s.kind = "cosine";
  CHECK(s.at(10) == Approx(1.0));
  CHECK(s.at(60) == Approx(0.55));  // half way: floor + (peak - floor) / 2
  CHECK(s.at(110) == Approx(0.1));
  for (int64_t step = 11; step < 110; ++step) CHECK(s.at(step + 1) <= s.at(step));

  s.kind = "bogus";
  CHECK_THROWS_AS(s.at(50), std::invalid_argument);
}
