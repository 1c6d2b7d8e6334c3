#include "trainer/loss_curve_compare.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <stdexcept>

namespace liger::trainer {

LossCurve read_loss_curve(const std::string& metrics_jsonl) {
  std::ifstream file(metrics_jsonl);
  if (!file) throw std::runtime_error("cannot read " + metrics_jsonl + ": check the run's folder");
  LossCurve curve;
  curve.source = metrics_jsonl;
  std::string line;
  for (int64_t number = 1; std::getline(file, line); ++number) {
    if (line.empty()) continue;
    try {
      const auto row = nlohmann::json::parse(line);
      const auto& loss = row.at("loss");
      curve.steps.push_back(row.at("step").get<int64_t>());
      // A non-finite loss is written as null.
      curve.losses.push_back(loss.is_number() ? loss.get<double>()
                                              : std::numeric_limits<double>::quiet_NaN());
    } catch (const nlohmann::json::exception&) {
      throw std::runtime_error(metrics_jsonl + " line " + std::to_string(number) +
                               " is not a metrics row with \"step\" and \"loss\": pass the "
                               "metrics.jsonl that liger-train wrote");
    }
  }
  if (curve.steps.empty())
    throw std::runtime_error(metrics_jsonl + " holds no steps: did the run train?");
  return curve;
}

namespace {

// |x - reference| / |reference|; NaN when either is NaN.
double relative_difference(double x, double reference) {
  return std::abs(x - reference) / std::max(std::abs(reference), 1e-12);
}

// A NaN difference ranks above every number.
bool ranks_above(double x, double y) {
  if (std::isnan(x)) return !std::isnan(y);
  return x > y;
}

void require_same_steps(const LossCurve& curve, const LossCurve& reference) {
  if (curve.steps == reference.steps) return;
  throw std::runtime_error(
      curve.source + " logged " + std::to_string(curve.steps.size()) + " steps (" +
      std::to_string(curve.steps.front()) + ".." + std::to_string(curve.steps.back()) + ") but " +
      reference.source + " logged " + std::to_string(reference.steps.size()) + " (" +
      std::to_string(reference.steps.front()) + ".." + std::to_string(reference.steps.back()) +
      "): compare runs of the same config and steps");
}

}  // namespace

LossComparison compare_loss_curves(const LossCurve& tested, const LossCurve& reference,
                                   const LossCurve* noise, const LossTolerance& tolerance) {
  require_same_steps(tested, reference);
  if (noise) require_same_steps(*noise, reference);
  const size_t count = reference.steps.size();
  LossComparison out;
  out.with_noise = noise != nullptr;
  out.tolerance = tolerance;
  out.steps.resize(count);
  for (size_t i = 0; i < count; ++i) {
    LossStep& s = out.steps[i];
    s.step = reference.steps[i];
    s.tested = tested.losses[i];
    s.reference = reference.losses[i];
    s.noise = noise ? noise->losses[i] : std::numeric_limits<double>::quiet_NaN();
    s.difference = relative_difference(s.tested, s.reference);
    if (noise) s.noise_difference = relative_difference(s.noise, s.reference);
  }
  // The band: the running maximum of the noise, lead_steps ahead. A NaN (a
  // noise run that broke down) cannot widen it.
  const size_t lead = static_cast<size_t>(std::max<int64_t>(tolerance.lead_steps, 0));
  double band = 0.0;
  size_t ahead = 0;  // the noise up to step index `ahead` is in `band`
  for (size_t i = 0; i < count; ++i) {
    for (; noise && ahead < count && ahead <= i + lead; ++ahead) {
      if (out.steps[ahead].noise_difference > band) band = out.steps[ahead].noise_difference;
    }
    LossStep& s = out.steps[i];
    s.band = band;
    s.limit = noise ? std::max(tolerance.rtol, tolerance.noise_ratio * band) : tolerance.rtol;
    out.ok = out.ok && s.within();
    if (noise && !(s.difference <= tolerance.rtol)) {
      const double ratio = s.band > 0.0 && !std::isnan(s.difference)
                               ? s.difference / s.band
                               : std::numeric_limits<double>::infinity();
      out.passing_ratio = std::max(out.passing_ratio, ratio);
    }
    const LossStep& largest = out.steps[out.largest];
    const LossStep& tightest = out.steps[out.tightest];
    if (ranks_above(s.difference, largest.difference)) out.largest = i;
    if (ranks_above(s.difference / s.limit, tightest.difference / tightest.limit)) out.tightest = i;
  }
  return out;
}

std::string describe(const LossComparison& c) {
  const LossStep& first = c.steps.front();
  const LossStep& last = c.steps.back();
  const LossStep& largest = c.steps[c.largest];
  const LossStep& tightest = c.steps[c.tightest];
  char text[640];
  int n = std::snprintf(text, sizeof text,
                        "%zu steps, loss %.4f -> %.4f (reference), %.4f (tested); max relative "
                        "loss difference %.3e at step %lld",
                        c.steps.size(), first.reference, last.reference, last.tested,
                        largest.difference, static_cast<long long>(largest.step));
  if (c.with_noise) {
    std::snprintf(text + n, sizeof text - n,
                  " (rounding noise up to %.3e by then); closest to its limit: step %lld, "
                  "%.3e against max(%.0e, %g x noise band %.3e) = %.3e; passes with a multiple "
                  "of %.3g or more: %s",
                  largest.band, static_cast<long long>(tightest.step), tightest.difference,
                  c.tolerance.rtol, c.tolerance.noise_ratio, tightest.band, tightest.limit,
                  c.passing_ratio, c.ok ? "OK" : "DIVERGED");
  } else {
    std::snprintf(text + n, sizeof text - n, " (tolerance %g): %s", c.tolerance.rtol,
                  c.ok ? "OK" : "DIVERGED");
  }
  return text;
}

void write_loss_table(const LossComparison& c, const std::string& path) {
  std::ofstream file(path);
  if (!file) throw std::runtime_error("cannot write " + path + ": check the output folder");
  file << "# step\ttested\treference\tnoise\tdifference\tnoise_difference\tband\tlimit\n";
  for (const LossStep& s : c.steps) {
    char row[256];
    std::snprintf(row, sizeof row, "%lld\t%.8g\t%.8g\t%.8g\t%.3e\t%.3e\t%.3e\t%.3e\n",
                  static_cast<long long>(s.step), s.tested, s.reference, s.noise, s.difference,
                  s.noise_difference, s.band, s.limit);
    file << row;
  }
}

void write_loss_summary(const LossComparison& c, const std::string& path) {
  const LossStep& largest = c.steps[c.largest];
  const LossStep& tightest = c.steps[c.tightest];
  nlohmann::json summary = {{"steps", c.steps.size()},
                            {"first_loss", c.steps.front().reference},
                            {"final_loss_tested", c.steps.back().tested},
                            {"final_loss_reference", c.steps.back().reference},
                            {"max_loss_rel_diff", largest.difference},
                            {"at_step", largest.step},
                            {"loss_rtol", c.tolerance.rtol},
                            {"loss_verdict", c.ok ? "OK" : "DIVERGED"}};
  if (c.with_noise) {
    summary["final_loss_noise"] = c.steps.back().noise;
    summary["loss_noise_ratio"] = c.tolerance.noise_ratio;
    summary["noise_lead_steps"] = c.tolerance.lead_steps;
    summary["noise_band_at_max"] = largest.band;
    summary["final_noise_band"] = c.steps.back().band;
    summary["tightest_step"] = tightest.step;
    summary["tightest_rel_diff"] = tightest.difference;
    summary["tightest_limit"] = tightest.limit;
    // null when no multiple passes (a NaN, or a difference where the band is 0)
    summary["passing_noise_ratio"] =
        std::isinf(c.passing_ratio) ? nlohmann::json() : nlohmann::json(c.passing_ratio);
  }
  std::ofstream file(path);
  if (!file) throw std::runtime_error("cannot write " + path + ": check the output folder");
  file << summary.dump(2) << "\n";
}

}  // namespace liger::trainer
