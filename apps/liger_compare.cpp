// liger-compare: compares the parameters of two checkpoints (step-N/ folders,
// whole or sharded) tensor by tensor and prints the worst relative
// difference ||a - b|| / ||b||. Exit 0 within --rtol, 1 beyond, 2 on errors.
//   liger-compare A/step-100 B/step-100 [--rtol 1e-3]
#include <CLI/CLI.hpp>

#include "trainer/checkpoint.h"

#include <torch/torch.h>

#include <map>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

int main(int argc, char** argv) {
  CLI::App app{"liger-compare: compare the parameters of two checkpoints"};
  std::string a_path, b_path;
  double rtol = 1e-3;
  app.add_option("a", a_path, "checkpoint directory (step-N/)")->required();
  app.add_option("b", b_path, "checkpoint directory (step-N/), the reference")->required();
  app.add_option("--rtol", rtol, "largest allowed ||a - b|| / ||b|| of any parameter");
  CLI11_PARSE(app, argc, argv);
  try {
    // Sharded checkpoints are assembled; names in the reference's order.
    const auto b = liger::trainer::CheckpointManager::read_whole_parameters(b_path);
    std::map<std::string, at::Tensor> a;
    for (auto& [name, value] : liger::trainer::CheckpointManager::read_whole_parameters(a_path)) a[name] = value;
    double worst = 0.0;
    std::string worst_name;
    int64_t count = 0;
    for (const auto& [name, expected] : b) {
      const auto found = a.find(name);
      if (found == a.end()) {
        std::cerr << "error: " << a_path << " has no parameter " << name << "\n";
        return 2;
      }
      const at::Tensor& actual = found->second;
      if (actual.sizes() != expected.sizes()) {
        std::cerr << "error: " << name << " has shape " << actual.sizes() << " in " << a_path
                  << " but " << expected.sizes() << " in " << b_path << "\n";
        return 2;
      }
      // fp64 norms: the comparison itself must not round
      const double scale = std::max(expected.to(at::kDouble).norm().item<double>(), 1e-30);
      const double diff = (actual.to(at::kDouble) - expected.to(at::kDouble)).norm().item<double>() / scale;
      if (diff >= worst) {
        worst = diff;
        worst_name = name;
      }
      ++count;
    }
    std::printf("compared %lld parameters: max relative difference %.3e (%s), tolerance %.1e: %s\n",
                static_cast<long long>(count), worst, worst_name.c_str(), rtol,
                worst <= rtol ? "OK" : "DIVERGED");
    return worst <= rtol ? 0 : 1;
  } catch (const std::exception& error) {
    const std::string message = error.what();
    std::cerr << "error: " << message.substr(0, message.find('\n')) << "\n";
    return 2;
  }
}
