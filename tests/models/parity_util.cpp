#include "tests/models/parity_util.h"

#include <ATen/ATen.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sys/wait.h>

namespace fs = std::filesystem;

namespace liger::testing {

std::string repo_dir() {
  const char* dir = std::getenv("LIGER_SOURCE_DIR");
  return dir ? dir : ".";
}

std::string python() {
  const char* py = std::getenv("LIGER_PYTHON");
  if (py != nullptr && *py != '\0') return py;
  return repo_dir() + "/.venv/bin/python";
}

std::string temp_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("liger-models-test-" + std::to_string(::getpid())) / name;
  fs::create_directories(dir);  // per process: never holds another run's files
  return dir.string();
}

int run_and_print(const std::string& command) {
  std::cout << "$ " << command << std::endl;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), static_cast<int>(buffer.size()), pipe) != nullptr)
    std::cout << buffer.data();
  std::cout.flush();
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

double relative_to_max(const at::Tensor& actual, const at::Tensor& expected) {
  const at::Tensor a = actual.detach().to(at::kCPU, at::kDouble);
  const at::Tensor e = expected.detach().to(at::kCPU, at::kDouble);
  const double scale = std::max(e.abs().max().item<double>(), 1e-30);
  return (a - e).abs().max().item<double>() / scale;
}

}  // namespace liger::testing
