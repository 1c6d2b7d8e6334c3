#include "trainer/step_profiler.h"

#include "trainer/logging/log.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/cuda.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <vector>

namespace liger::trainer {
namespace {

namespace prof = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

bool contains(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

// The kind of a CUDA kernel, from its (mangled or demangled) name.
std::string kernel_kind(const std::string& name) {
  if (contains(name, "nccl")) return "collectives (NCCL)";
  if (contains(name, "flash") || contains(name, "fmha") || contains(name, "cudnn") ||
      contains(name, "attention")) {
    return "attention";
  }
  if (contains(name, "liger")) return "liger kernels";
  if (contains(name, "gemm") || contains(name, "nvjet") || contains(name, "xmma") ||
      contains(name, "cutlass") || contains(name, "sm90_") || contains(name, "cublas")) {
    return "GEMM";
  }
  if (contains(name, "adam") || contains(name, "multi_tensor")) return "optimizer";
  if (contains(name, "reduce") || contains(name, "norm")) return "reductions";
  if (contains(name, "elementwise") || contains(name, "Copy") || contains(name, "copy") ||
      contains(name, "fill") || contains(name, "cat") || contains(name, "index")) {
    return "elementwise and copies";
  }
  return "other";
}

std::string percent(double part, double whole) {
  std::ostringstream s;
  s.precision(1);
  s << std::fixed << (whole > 0 ? 100.0 * part / whole : 0.0) << "%";
  return s.str();
}

std::string ms(double ns) {
  std::ostringstream s;
  s.precision(2);
  s << std::fixed << ns / 1e6 << " ms";
  return s.str();
}

}  // namespace

StepProfiler::StepProfiler(int64_t first_step, int64_t steps, std::string output_dir, int rank,
                           bool log_summary, int top_kernels)
    : first_step_(first_step),
      last_step_(first_step + steps - 1),
      output_dir_(std::move(output_dir)),
      rank_(rank),
      log_summary_(log_summary),
      top_kernels_(top_kernels) {
  if (steps <= 0) last_step_ = first_step_ - 1;  // off
}

StepProfiler::~StepProfiler() {
  if (!running_) return;
  try {
    prof::disableProfiler();  // the window did not finish (training stopped early)
  } catch (...) {
  }
}

void StepProfiler::begin_step(int64_t step) {
  if (step != first_step_ || last_step_ < first_step_) return;
  const std::set<ActivityType> activities =
      torch::cuda::is_available() ? std::set<ActivityType>{ActivityType::CPU, ActivityType::CUDA}
                                  : std::set<ActivityType>{ActivityType::CPU};
  const ProfilerConfig config(ProfilerState::KINETO);
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
  if (torch::cuda::is_available())
    torch::cuda::synchronize();  // the window starts with an idle device
  running_ = true;
  started_ = std::chrono::steady_clock::now();
}

void StepProfiler::end_step(int64_t step) {
  if (running_ && step == last_step_) stop_and_report();
}

void StepProfiler::stop_and_report() {
  if (torch::cuda::is_available()) torch::cuda::synchronize();
  const double wall_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - started_).count();
  std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();
  running_ = false;
  const std::filesystem::path dir = std::filesystem::path(output_dir_) / "profile";
  std::filesystem::create_directories(dir);
  const std::string trace = (dir / ("rank-" + std::to_string(rank_) + ".json")).string();
  result->save(trace);

  // Device time by kernel and by kind (kernels on every stream, summed: with
  // overlap, the sum can exceed the wall time).
  std::map<std::string, std::pair<double, int64_t>> by_kernel;  // name -> (ns, launches)
  std::map<std::string, double> by_kind;
  std::map<std::string, std::pair<double, int64_t>> cpu_ops;  // name -> (inclusive ns, calls)
  double total_ns = 0.0;
  for (const auto& event : result->events()) {
    if (event.deviceType() == c10::DeviceType::CPU && !event.isAsync()) {
      auto& op = cpu_ops[event.name()];
      op.first += static_cast<double>(event.durationNs());
      op.second += 1;
    }
    if (event.deviceType() != c10::DeviceType::CUDA) continue;
    const std::string name = event.name();
    if (contains(name, "Memcpy") || contains(name, "Memset")) {
      by_kind["memcpy/memset"] += static_cast<double>(event.durationNs());
      total_ns += static_cast<double>(event.durationNs());
      continue;
    }
    const double ns = static_cast<double>(event.durationNs());
    auto& entry = by_kernel[name];
    entry.first += ns;
    entry.second += 1;
    by_kind[kernel_kind(name)] += ns;
    total_ns += ns;
  }
  const int64_t steps = last_step_ - first_step_ + 1;
  std::ostringstream out;
  out << "profile of steps " << first_step_ << "-" << last_step_ << " written to " << trace
      << ": wall " << ms(wall_ns / steps) << " per step, device kernels " << ms(total_ns / steps)
      << " per step";
  if (!by_kind.empty()) {
    std::vector<std::pair<std::string, double>> kinds(by_kind.begin(), by_kind.end());
    std::sort(kinds.begin(), kinds.end(),
              [](const auto& a, const auto& b) { return a.second > b.second; });
    out << "\n  by kind (per step):";
    for (const auto& [kind, ns] : kinds)
      out << "\n    " << kind << ": " << ms(ns / steps) << " (" << percent(ns, total_ns) << ")";
    std::vector<std::pair<std::string, std::pair<double, int64_t>>> kernels(by_kernel.begin(),
                                                                            by_kernel.end());
    std::sort(kernels.begin(), kernels.end(),
              [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
    out << "\n  top kernels (per step, launches per step):";
    for (size_t i = 0; i < kernels.size() && static_cast<int>(i) < top_kernels_; ++i) {
      const auto& [name, entry] = kernels[i];
      out << "\n    " << ms(entry.first / steps) << " (" << percent(entry.first, total_ns) << ") x"
          << entry.second / steps << "  " << name.substr(0, 160);
    }
  }
  if (by_kind.empty() && !cpu_ops.empty()) {  // no device: the CPU ops, by inclusive time
    std::vector<std::pair<std::string, std::pair<double, int64_t>>> ops(cpu_ops.begin(),
                                                                        cpu_ops.end());
    std::sort(ops.begin(), ops.end(),
              [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
    out << "\n  top CPU ops (inclusive time per step, calls per step):";
    for (size_t i = 0; i < ops.size() && static_cast<int>(i) < top_kernels_; ++i) {
      const auto& [name, entry] = ops[i];
      out << "\n    " << ms(entry.first / steps) << " x" << entry.second / steps << "  "
          << name.substr(0, 160);
    }
  }
  if (log_summary_) log::info(out.str());
}

}  // namespace liger::trainer
