// liger-compare: compares two training runs, by the parameters of their
// checkpoints (step-N/ folders, whole or sharded) tensor by tensor, or by the
// loss of every step (--losses). Exit 0 within tolerance, 1 beyond, 2 on
// errors.
//   liger-compare A/step-100 B/step-100 [--rtol 1e-3]
//     the worst relative difference ||a - b|| / ||b|| of any parameter
//   liger-compare A/step-100 B/step-100 --noise C/step-100 [--noise-ratio 2]
//     against the rounding noise of the reference itself: C is B's run again
//     with only the rounding changed (e.g. the same global batch in twice as
//     many micro-batches). Each parameter's ||a - b|| must stay within
//     noise-ratio x ||c - b||: two runs drift apart chaotically (in bf16, and
//     in fp32 over a few hundred steps), so a fixed tolerance either fails
//     correct kernels or passes anything; the drift of the reference under a
//     rounding change is the yardstick. An --rtol given is then a floor: a
//     parameter within it passes whatever the noise.
//   liger-compare --losses A/metrics.jsonl B/metrics.jsonl [--rtol 1e-4]
//                 [--noise C/metrics.jsonl --noise-ratio 3] [--table T.tsv] [--summary S.json]
//     every step's |a - b| / |b| within rtol, or within max(rtol, noise-ratio x
//     the running maximum of |c - b| / |b|, looking --noise-lead steps ahead)
//     with --noise (trainer/loss_curve_compare.h says why). With --noise it
//     also prints the smallest noise-ratio the run would pass with.
#include <CLI/CLI.hpp>

#include "trainer/checkpoint.h"
#include "trainer/loss_curve_compare.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <cmath>
#include <map>
#include <sstream>

namespace {

using Parameters = std::map<std::string, at::Tensor>;

Parameters read(const std::string& path) {
  Parameters out;
  for (auto& [name, value] : liger::trainer::CheckpointManager::read_whole_parameters(path))
    out[name] = value;
  return out;
}

// fp64, one tensor at a time: the comparison itself must not round, and a
// whole checkpoint is never held in fp64.
at::Tensor fp64(const at::Tensor& t) {
  return t.to(at::kDouble);
}

// The parameter `name` of `params` (read from `path`), shaped like `like`.
const at::Tensor& find(const Parameters& params, const std::string& path, const std::string& name,
                       const at::Tensor& like) {
  const auto found = params.find(name);
  if (found == params.end()) throw std::runtime_error(path + " has no parameter " + name);
  if (found->second.sizes() != like.sizes()) {
    std::ostringstream message;
    message << name << " has shape " << found->second.sizes() << " in " << path << " but "
            << like.sizes() << " in the reference";
    throw std::runtime_error(message.str());
  }
  return found->second;
}

// --losses: the loss curves of runs A and B (and the noise run C).
int compare_losses(const std::string& a_path, const std::string& b_path,
                   const std::string& noise_path, const liger::trainer::LossTolerance& tolerance,
                   const std::string& table_path, const std::string& summary_path) {
  using namespace liger::trainer;
  const LossCurve reference = read_loss_curve(b_path);
  const LossCurve tested = read_loss_curve(a_path);
  const LossCurve noise = noise_path.empty() ? LossCurve() : read_loss_curve(noise_path);
  const LossComparison comparison =
      compare_loss_curves(tested, reference, noise_path.empty() ? nullptr : &noise, tolerance);
  if (!table_path.empty()) write_loss_table(comparison, table_path);
  if (!summary_path.empty()) write_loss_summary(comparison, summary_path);
  std::printf("%s\n", describe(comparison).c_str());
  return comparison.ok ? 0 : 1;
}

// The parameters of checkpoints A and B, within `rtol` of B, or with a noise
// checkpoint within noise_ratio x the noise; with a noise checkpoint, a
// `floor` > 0 exempts the parameters within floor of B.
int compare_parameters(const std::string& a_path, const std::string& b_path,
                       const std::string& noise_path, double rtol, double noise_ratio,
                       double floor) {
  const Parameters b = read(b_path);
  const Parameters a = read(a_path);
  const Parameters c = noise_path.empty() ? Parameters() : read(noise_path);
  double worst = 0.0, sum_ab = 0.0, sum_cb = 0.0, sum_b = 0.0;
  std::string worst_name;
  int64_t count = 0;
  for (const auto& [name, stored] : b) {
    const at::Tensor expected = fp64(stored);
    const at::Tensor actual = fp64(find(a, a_path, name, stored));
    const double scale = expected.norm().item<double>();
    const double ab = (actual - expected).norm().item<double>();
    sum_ab += ab * ab;
    sum_b += scale * scale;
    double score;
    if (noise_path.empty()) {
      score = ab / std::max(scale, 1e-30);
    } else {
      const double cb = (fp64(find(c, noise_path, name, stored)) - expected).norm().item<double>();
      sum_cb += cb * cb;
      // A parameter the noise run left (nearly) untouched: measure against
      // 1e-6 of its size instead of zero. One within the floor passes.
      score = ab <= floor * scale ? 0.0 : ab / std::max({cb, 1e-6 * scale, 1e-30});
    }
    if (score >= worst) {
      worst = score;
      worst_name = name;
    }
    ++count;
  }
  const double limit = noise_path.empty() ? rtol : noise_ratio;
  const char* verdict = worst <= limit ? "OK" : "DIVERGED";
  if (noise_path.empty()) {
    std::printf("compared %lld parameters: max relative difference %.3e (%s), tolerance %.1e: %s\n",
                static_cast<long long>(count), worst, worst_name.c_str(), rtol, verdict);
  } else {
    char exempt[96] = "";
    if (floor > 0)
      std::snprintf(exempt, sizeof exempt, ", parameters within ||a - b|| / ||b|| <= %.0e exempt",
                    floor);
    std::printf(
        "compared %lld parameters against the reference's rounding noise: all parameters "
        "||a - b|| / ||b|| %.3e, noise ||c - b|| / ||b|| %.3e; worst ratio to the noise "
        "%.3f (%s), tolerance %.2f%s: %s\n",
        static_cast<long long>(count), std::sqrt(sum_ab / std::max(sum_b, 1e-300)),
        std::sqrt(sum_cb / std::max(sum_b, 1e-300)), worst, worst_name.c_str(), noise_ratio, exempt,
        verdict);
  }
  return worst <= limit ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"liger-compare: compare the parameters (or the losses) of two runs"};
  std::string a_path, b_path, noise_path, table_path, summary_path;
  double rtol = 1e-3, noise_ratio = 2.0;
  int64_t noise_lead = liger::trainer::LossTolerance().lead_steps;
  bool losses = false;
  app.add_option("a", a_path, "checkpoint directory (step-N/), or metrics.jsonl with --losses")
      ->required();
  app.add_option("b", b_path, "the reference: checkpoint directory, or metrics.jsonl")->required();
  const auto* rtol_option = app.add_option(
      "--rtol", rtol,
      "largest allowed ||a - b|| / ||b|| of any parameter (default 1e-3), or with --losses of "
      "any step's loss (default 1e-4); with --noise, a floor: what is within it passes");
  app.add_option("--noise", noise_path,
                 "the reference's run with only its rounding changed (checkpoint, or "
                 "metrics.jsonl with --losses): compare with its distance to the reference");
  const auto* noise_ratio_option = app.add_option(
      "--noise-ratio", noise_ratio,
      "with --noise: largest allowed ||a - b|| / ||noise - b|| of any parameter (default 2), or "
      "with --losses the multiple of the noise band (default 3)");
  app.add_flag("--losses", losses,
               "a, b and --noise are metrics.jsonl files: compare the loss of every step");
  app.add_option("--noise-lead", noise_lead,
                 "with --losses --noise: how many steps ahead the noise band looks")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--table", table_path, "with --losses: write the per-step table (TSV) here");
  app.add_option("--summary", summary_path, "with --losses: write the numbers (JSON) here");
  CLI11_PARSE(app, argc, argv);
  try {
    if (losses) {
      liger::trainer::LossTolerance tolerance;  // the loss defaults
      if (rtol_option->count()) tolerance.rtol = rtol;
      if (noise_ratio_option->count()) tolerance.noise_ratio = noise_ratio;
      tolerance.lead_steps = noise_lead;
      return compare_losses(a_path, b_path, noise_path, tolerance, table_path, summary_path);
    }
    // Against the noise, --rtol is a floor only when given.
    const double floor = rtol_option->count() ? rtol : 0.0;
    return compare_parameters(a_path, b_path, noise_path, rtol, noise_ratio, floor);
  } catch (const std::exception& error) {
    const std::string message = error.what();
    std::cerr << "error: " << message.substr(0, message.find('\n')) << "\n";
    return 2;
  }
}
