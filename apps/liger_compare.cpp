// liger-compare: compares the parameters of two checkpoints (step-N/ folders
// or their model.pt) tensor by tensor and prints the worst relative
// difference ||a - b|| / ||b||. Exit 0 within --rtol, 1 beyond, 2 on errors.
//   liger-compare A/step-100 B/step-100 [--rtol 1e-3]
#include <CLI/CLI.hpp>

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>

namespace {

std::string model_file(const std::string& path) {
  return std::filesystem::is_directory(path) ? (std::filesystem::path(path) / "model.pt").string() : path;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"liger-compare: compare the parameters of two checkpoints"};
  std::string a_path, b_path;
  double rtol = 1e-3;
  app.add_option("a", a_path, "checkpoint directory (step-N/) or model.pt")->required();
  app.add_option("b", b_path, "checkpoint directory (step-N/) or model.pt, the reference")->required();
  app.add_option("--rtol", rtol, "largest allowed ||a - b|| / ||b|| of any parameter");
  CLI11_PARSE(app, argc, argv);
  try {
    torch::serialize::InputArchive a, b;
    a.load_from(model_file(a_path));
    b.load_from(model_file(b_path));
    double worst = 0.0;
    std::string worst_name;
    int64_t count = 0;
    for (const auto& name : b.keys()) {
      at::Tensor expected, actual;
      b.read(name, expected);
      if (!a.try_read(name, actual)) {
        std::cerr << "error: " << a_path << " has no parameter " << name << "\n";
        return 2;
      }
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
