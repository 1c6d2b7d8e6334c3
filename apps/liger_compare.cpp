// liger-compare: compares the parameters of two checkpoints (step-N/ folders,
// whole or sharded) tensor by tensor. Exit 0 within tolerance, 1 beyond, 2 on
// errors.
//   liger-compare A/step-100 B/step-100 [--rtol 1e-3]
//     the worst relative difference ||a - b|| / ||b|| of any parameter
//   liger-compare A/step-100 B/step-100 --noise C/step-100 [--noise-ratio 2]
//     against the rounding noise of the reference itself: C is B's run again
//     with only the rounding changed (e.g. the same global batch in twice as
//     many micro-batches). Each parameter's ||a - b|| must stay within
//     noise-ratio x ||c - b||: in bf16 two runs drift apart chaotically, so a
//     fixed tolerance either fails correct kernels or passes anything; the
//     drift of the reference under a rounding change is the yardstick.
#include <CLI/CLI.hpp>

#include "trainer/checkpoint.h"

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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"liger-compare: compare the parameters of two checkpoints"};
  std::string a_path, b_path, noise_path;
  double rtol = 1e-3, noise_ratio = 2.0;
  app.add_option("a", a_path, "checkpoint directory (step-N/)")->required();
  app.add_option("b", b_path, "checkpoint directory (step-N/), the reference")->required();
  app.add_option("--rtol", rtol, "largest allowed ||a - b|| / ||b|| of any parameter");
  app.add_option("--noise", noise_path,
                 "checkpoint of the reference's run with only its rounding changed: compare "
                 "||a - b|| with ||noise - b|| instead of using --rtol");
  app.add_option("--noise-ratio", noise_ratio,
                 "with --noise: largest allowed ||a - b|| / ||noise - b|| of any parameter");
  CLI11_PARSE(app, argc, argv);
  try {
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
        const double cb =
            (fp64(find(c, noise_path, name, stored)) - expected).norm().item<double>();
        sum_cb += cb * cb;
        // A parameter the noise run left (nearly) untouched: measure against
        // 1e-6 of its size instead of zero.
        score = ab / std::max({cb, 1e-6 * scale, 1e-30});
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
      std::printf(
          "compared %lld parameters: max relative difference %.3e (%s), tolerance %.1e: %s\n",
          static_cast<long long>(count), worst, worst_name.c_str(), rtol, verdict);
    } else {
      std::printf(
          "compared %lld parameters against the reference's rounding noise: all parameters "
          "||a - b|| / ||b|| %.3e, noise ||c - b|| / ||b|| %.3e; worst ratio to the noise "
          "%.3f (%s), tolerance %.2f: %s\n",
          static_cast<long long>(count), std::sqrt(sum_ab / std::max(sum_b, 1e-300)),
          std::sqrt(sum_cb / std::max(sum_b, 1e-300)), worst, worst_name.c_str(), noise_ratio,
          verdict);
    }
    return worst <= limit ? 0 : 1;
  } catch (const std::exception& error) {
    const std::string message = error.what();
    std::cerr << "error: " << message.substr(0, message.find('\n')) << "\n";
    return 2;
  }
}
