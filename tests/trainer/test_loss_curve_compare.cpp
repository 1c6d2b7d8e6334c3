// The loss check of convergence runs on synthetic curves: a run inside the
// rounding-noise band passes, a systematic offset fails, the running-maximum
// band ignores a quiet noise step and keeps a noise spike for later steps, and
// the fixed tolerance is the floor.
#include "tests/catch.h"
#include "trainer/loss_curve_compare.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

using liger::trainer::compare_loss_curves;
using liger::trainer::LossComparison;
using liger::trainer::LossCurve;
using liger::trainer::LossTolerance;

namespace {

constexpr int kSteps = 400;

// A loss curve falling from 7 to about 3.8, like configs/tiny.yaml's.
double reference_loss(int step) {
  return 3.8 + 3.2 * std::exp(-step / 60.0);
}

// The reference curve with relative difference `difference(step)` (signed).
LossCurve curve(const std::function<double(int)>& difference, const std::string& name) {
  LossCurve out;
  out.source = name;
  for (int step = 1; step <= kSteps; ++step) {
    out.steps.push_back(step);
    out.losses.push_back(reference_loss(step) * (1.0 + difference(step)));
  }
  return out;
}

// How far two correct fp32 runs drift apart: 1e-7 at the start, x10 every 40
// steps, saturating at 5e-3 (configs/tiny.yaml's separation on the CPU).
double drift(int step) {
  return std::min(1e-7 * std::pow(10.0, step / 40.0), 5e-3);
}

// Chaotic differences: the drift's size with a sign and magnitude that
// wander from step to step and cross zero now and then.
double noise_difference(int step) {
  return drift(step) * std::sin(0.7 * step);
}
double tested_difference(int step) {
  return 1.5 * drift(step) * std::sin(1.1 * step + 0.5);
}

const LossCurve reference = curve([](int) { return 0.0; }, "reference/metrics.jsonl");
const LossCurve noise = curve(noise_difference, "noise/metrics.jsonl");

LossComparison compare(const LossCurve& tested, double noise_ratio = 3.0, double rtol = 1e-4) {
  return compare_loss_curves(tested, reference, &noise, LossTolerance{rtol, noise_ratio});
}

}  // namespace

TEST_CASE("a chaotically drifting run inside the noise band passes; a fixed tolerance fails it") {
  const LossCurve tested = curve(tested_difference, "tested/metrics.jsonl");
  const LossComparison c = compare(tested);
  CHECK(c.ok);
  // By the end the curves are 1e-3 apart, ten times the fixed floor.
  CHECK(c.steps[c.largest].difference > 1e-3);
  CHECK(c.steps[c.largest].difference <= c.steps[c.largest].limit);
  const LossComparison fixed = compare_loss_curves(tested, reference, nullptr, LossTolerance{1e-4});
  CHECK_FALSE(fixed.ok);
  // The same run against a tighter multiple of the noise fails: the check can fail.
  CHECK_FALSE(compare(tested, 1.0).ok);
  // passing_ratio is the threshold on the multiple: just above it passes, just below fails.
  REQUIRE(c.passing_ratio > 1.0);
  REQUIRE(c.passing_ratio < 3.0);
  CHECK(compare(tested, c.passing_ratio * 1.001).ok);
  CHECK_FALSE(compare(tested, c.passing_ratio * 0.999).ok);
}

TEST_CASE("a drift that leaves the band late fails, at the step where it leaves") {
  // Inside the band (1.5 x the drift) up to step 299, then 5 x the drift: the
  // noise band (a running maximum of up to 1 x the drift) cannot follow.
  const auto leaving = [](int step) {
    return (step < 300 ? 1.5 : 5.0) * drift(step) * std::sin(1.1 * step + 0.5);
  };
  const LossComparison c = compare(curve(leaving, "leaving"));
  CHECK_FALSE(c.ok);
  size_t first_failing = 0;
  while (first_failing < c.steps.size() && c.steps[first_failing].within()) ++first_failing;
  REQUIRE(first_failing < c.steps.size());
  CHECK(c.steps[first_failing].step >= 300);
  CHECK(c.steps[first_failing].step < 310);
  CHECK(c.steps[first_failing].difference > 1e-4);  // the band decided, not the floor
  CHECK(c.passing_ratio > 3.0);
}

TEST_CASE("the band is the running maximum of the noise run's difference, lead_steps ahead") {
  for (const int64_t lead : {0, 10}) {
    const LossComparison c = compare_loss_curves(curve(tested_difference, "tested"), reference,
                                                 &noise, LossTolerance{1e-4, 3.0, lead});
    for (size_t i = 0; i < c.steps.size(); ++i) {
      double expected_band = 0.0;
      for (int64_t step = 1; step <= std::min<int64_t>(c.steps[i].step + lead, kSteps); ++step)
        expected_band = std::max(expected_band, std::abs(noise_difference(static_cast<int>(step))));
      const auto& s = c.steps[i];
      REQUIRE(s.band == Approx(expected_band).epsilon(1e-6).margin(1e-15));
      REQUIRE(s.limit == Approx(std::max(1e-4, 3.0 * expected_band)).epsilon(1e-6));
      REQUIRE(s.within() == (s.difference <= s.limit));
    }
  }
}

TEST_CASE("a systematic offset fails, at the step where the noise is still small") {
  // 0.2% too high from the first step, as a 5% larger learning rate gives: far
  // beyond the early noise, although within 3 x the late noise (1.5e-2).
  const auto offset = [](int step) { return 2e-3 + tested_difference(step); };
  const LossComparison c = compare(curve(offset, "offset"));
  CHECK_FALSE(c.ok);
  CHECK_FALSE(c.steps.front().within());
  CHECK(c.steps[c.tightest].step < 150);
  CHECK(c.steps.back().within());
  // A tenth of it: beyond the 1e-4 floor, and the noise band is far below it.
  CHECK_FALSE(compare(curve([](int) { return 2e-4; }, "small offset")).ok);
}

TEST_CASE("one quiet step of the noise run does not decide") {
  // The noise run crosses the reference at step 200 (difference 0 there)
  // while the tested run does not: a pointwise band would fail it.
  const LossCurve quiet =
      curve([](int step) { return step == 200 ? 0.0 : drift(step) * (step % 2 ? 1.0 : -1.0); },
            "noise, quiet at step 200");
  const LossCurve tested = curve([](int step) { return 2.0 * drift(step); }, "tested");
  const auto c = compare_loss_curves(tested, reference, &quiet, LossTolerance{1e-4, 3.0});
  CHECK(c.steps[199].noise_difference == 0.0);
  CHECK(c.steps[199].band > 0.9 * drift(199));
  CHECK(c.ok);
}

TEST_CASE("a single late spike: the noise's widens the band, the tested run's fails") {
  SECTION("a noise spike at step 300 admits a tested difference from 10 steps before it on") {
    const auto spiky = [](int step) { return step == 300 ? 5e-2 : noise_difference(step); };
    const LossCurve spiky_noise = curve(spiky, "noise with a spike at step 300");
    const auto tested_with_bump_at = [](int bump_step) {
      return curve(
          [bump_step](int step) { return step == bump_step ? 0.1 : tested_difference(step); },
          "tested");
    };
    const LossTolerance tolerance{1e-4, 3.0, 10};
    // 0.1 <= 3 x 5e-2: the band holds the spike from step 290 to the end.
    CHECK(compare_loss_curves(tested_with_bump_at(350), reference, &spiky_noise, tolerance).ok);
    CHECK(compare_loss_curves(tested_with_bump_at(290), reference, &spiky_noise, tolerance).ok);
    const auto before =
        compare_loss_curves(tested_with_bump_at(289), reference, &spiky_noise, tolerance);
    CHECK_FALSE(before.ok);
    CHECK(before.steps[before.tightest].step == 289);
  }
  SECTION("a tested spike beyond the band fails on its own") {
    const auto spike = [](int step) { return step == 380 ? 5e-2 : tested_difference(step); };
    const LossComparison c = compare(curve(spike, "tested with a spike at step 380"));
    CHECK_FALSE(c.ok);
    CHECK(c.steps[c.tightest].step == 380);
    CHECK(c.steps[c.largest].step == 380);
  }
}

TEST_CASE("looking ahead forgives a run whose drift starts a few steps before the noise's") {
  // The tested run's drift leads the noise run's by 8 steps: 1.4 x the noise
  // at the same step while the drift grows (x10 every 40 steps), within the
  // noise 10 steps on, but not within the noise 5 steps on.
  const LossCurve early =
      curve([](int step) { return 0.9 * drift(step + 8) * (step % 2 ? 1.0 : -1.0); }, "early");
  const LossCurve steady =
      curve([](int step) { return drift(step) * (step % 2 ? -1.0 : 1.0); }, "noise");
  CHECK(compare_loss_curves(early, reference, &steady, LossTolerance{1e-4, 1.0, 10}).ok);
  CHECK_FALSE(compare_loss_curves(early, reference, &steady, LossTolerance{1e-4, 1.0, 5}).ok);
  CHECK_FALSE(compare_loss_curves(early, reference, &steady, LossTolerance{1e-4, 1.0, 0}).ok);
}

TEST_CASE("the fixed tolerance is the floor while the noise is below it") {
  // 60 steps: the noise stays below 4e-6, 3 x that is far below 1e-4.
  LossCurve short_reference, short_noise, close, far;
  for (int step = 1; step <= 60; ++step) {
    for (LossCurve* c : {&short_reference, &short_noise, &close, &far}) c->steps.push_back(step);
    short_reference.losses.push_back(reference_loss(step));
    short_noise.losses.push_back(reference_loss(step) * (1.0 + noise_difference(step)));
    close.losses.push_back(reference_loss(step) * (1.0 + 8e-5));
    far.losses.push_back(reference_loss(step) * (1.0 + 2e-4));
  }
  const LossTolerance tolerance{1e-4, 3.0};
  const auto c = compare_loss_curves(close, short_reference, &short_noise, tolerance);
  CHECK(c.ok);
  CHECK(c.steps.back().limit == 1e-4);
  CHECK(c.passing_ratio == 0.0);  // no step beyond the floor: any multiple passes
  const auto beyond = compare_loss_curves(far, short_reference, &short_noise, tolerance);
  CHECK_FALSE(beyond.ok);
  // 2e-4 against a band below 4e-6: only a multiple above 50 would pass it.
  CHECK(beyond.passing_ratio > 50.0);
}

TEST_CASE("a NaN loss fails; curves of different steps are an error naming the files") {
  LossCurve broken = curve(tested_difference, "tested/metrics.jsonl");
  broken.losses[123] = std::numeric_limits<double>::quiet_NaN();
  const LossComparison c = compare(broken);
  CHECK_FALSE(c.ok);
  CHECK(c.steps[c.largest].step == 124);
  CHECK(std::isinf(c.passing_ratio));  // no multiple of the noise passes a NaN
  // A NaN in the reference fails too.
  LossCurve broken_reference = reference;
  broken_reference.losses[5] = std::numeric_limits<double>::quiet_NaN();
  CHECK_FALSE(compare_loss_curves(curve(tested_difference, "tested"), broken_reference, &noise,
                                  LossTolerance{})
                  .ok);

  LossCurve shorter = curve(tested_difference, "short/metrics.jsonl");
  shorter.steps.pop_back();
  shorter.losses.pop_back();
  CHECK_THROWS_WITH(compare(shorter), Catch::Contains("short/metrics.jsonl logged 399 steps") &&
                                          Catch::Contains("reference/metrics.jsonl logged 400"));
}

TEST_CASE("read_loss_curve reads liger-train's metrics.jsonl") {
  const auto path = std::filesystem::temp_directory_path() / "liger_test_loss_curve.jsonl";
  {
    std::ofstream file(path);
    file << R"({"step":1,"loss":7.25,"lr":0.001})"
         << "\n"
         << R"({"step":2,"loss":null,"lr":0.002})"
         << "\n";
  }
  const LossCurve c = liger::trainer::read_loss_curve(path.string());
  REQUIRE(c.steps == std::vector<int64_t>{1, 2});
  CHECK(c.losses[0] == 7.25);
  CHECK(std::isnan(c.losses[1]));
  {
    std::ofstream file(path);
    file << R"({"step":1,"lr":0.001})"
         << "\n";
  }
  CHECK_THROWS_WITH(liger::trainer::read_loss_curve(path.string()),
                    Catch::Contains("line 1 is not a metrics row"));
  std::filesystem::remove(path);
  CHECK_THROWS_WITH(liger::trainer::read_loss_curve(path.string()), Catch::Contains("cannot read"));
}
