#include "trainer/metrics.h"

#include "trainer/logging/log.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <vector>

namespace liger::trainer {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long total = static_cast<long>(seconds + 0.5);
  char text[32];
  if (total >= 3600) {
    std::snprintf(text, sizeof text, "%ldh%02ldm", total / 3600, (total % 3600) / 60);
  } else if (total >= 60) {
    std::snprintf(text, sizeof text, "%ldm%02lds", total / 60, total % 60);
  } else {
    std::snprintf(text, sizeof text, "%lds", total);
  }
  return text;
}

MetricsWriter::MetricsWriter(const std::string& output_dir, int64_t resume_step,
                             int64_t total_steps, int64_t log_every,
                             config::ProgressBar progress_bar)
    : path_((std::filesystem::path(output_dir) / "metrics.jsonl").string()),
      resume_step_(resume_step),
      total_steps_(total_steps),
      log_every_(log_every) {
  std::vector<std::string> kept;
  if (resume_step > 0) {
    std::ifstream old(path_);
    std::string line;
    while (std::getline(old, line)) {
      try {
        if (nlohmann::json::parse(line).at("step").get<int64_t>() <= resume_step)
          kept.push_back(line);
      } catch (const std::exception&) {
        // a torn last line from a killed run: drop it
      }
    }
  }
  file_.open(path_, std::ios::trunc);
  if (!file_) throw std::runtime_error("cannot write " + path_ + ": check checkpoint.output_dir");
  for (const auto& line : kept) file_ << line << "\n";
  file_.flush();
  progress_ = progress_bar == config::ProgressBar::on ||
              (progress_bar == config::ProgressBar::auto_ && ::isatty(STDOUT_FILENO));
}

void MetricsWriter::open_tensorboard(
    const std::vector<std::pair<std::string, std::string>>& texts) {
  tensorboard_.emplace(std::filesystem::path(path_).parent_path().string());
  // TensorBoard drops what earlier files hold from this step on, as the
  // metrics.jsonl lines of an interrupted run after its checkpoint are dropped.
  const int64_t first_step = resume_step_ + 1;
  tensorboard_->write_start(first_step);
  for (const auto& [tag, markdown] : texts) tensorboard_->write_text(first_step, tag, markdown);
  tensorboard_->flush();
  log::info("tensorboard: " + tensorboard_->path());
}

std::vector<log::Scalar> tensorboard_scalars(const nlohmann::json& row) {
  static const std::string eval_prefix = "eval_";
  std::vector<log::Scalar> scalars;
  for (const auto& item : row.items()) {
    const std::string& key = item.key();
    const nlohmann::json& value = item.value();
    if (key == "step" || !value.is_number()) continue;
    const std::string tag = key.compare(0, eval_prefix.size(), eval_prefix) == 0
                                ? "eval/" + key.substr(eval_prefix.size())
                                : "train/" + key;
    // double (or int64) -> float32: TensorBoard's scalar type
    scalars.push_back({tag, static_cast<float>(value.get<double>())});
  }
  return scalars;
}

namespace {
std::string c10_free_format(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, value);
  return buffer;
}
}  // namespace

void MetricsWriter::record(const StepMetrics& m) {
  nlohmann::json row = {
      {"step", m.step},
      {"loss", m.loss},
      {"lr", m.lr},
      {"grad_norm", m.grad_norm},
      {"tokens", m.tokens},
      {"tokens_per_s", m.tokens_per_s},
      {"elapsed_s", m.elapsed_s},
      {"tokens_per_s_per_device", m.tokens_per_s / static_cast<double>(m.world_size)},
      {"peak_mem_bytes", m.peak_mem_bytes}};
  if (m.mfu) row["mfu"] = *m.mfu;
  if (m.eval_loss) row["eval_loss"] = *m.eval_loss;
  if (m.eval_ppl) row["eval_ppl"] = *m.eval_ppl;
  file_ << row.dump() << "\n";
  file_.flush();
  if (tensorboard_) {
    tensorboard_->write_scalars(m.step, tensorboard_scalars(row));
    tensorboard_->flush();
  }

  if (first_step_ < 0) first_step_ = m.step;
  if (m.step == first_step_ || m.step % log_every_ == 0 || m.step == total_steps_) {
    const double steps_done = static_cast<double>(m.step - first_step_ + 1);
    const double per_step = m.elapsed_s / std::max(1.0, steps_done);
    const double eta = per_step * static_cast<double>(total_steps_ - m.step);
    char line[256];
    std::snprintf(line, sizeof line,
                  "step %lld/%lld | loss %.4f | lr %.3e | grad_norm %.3f | %.0f tok/s | "
                  "elapsed %s | eta %s | peak_mem %.1f MiB",
                  static_cast<long long>(m.step), static_cast<long long>(total_steps_), m.loss,
                  m.lr, m.grad_norm, m.tokens_per_s, format_duration(m.elapsed_s).c_str(),
                  format_duration(eta).c_str(), static_cast<double>(m.peak_mem_bytes) / (1 << 20));
    std::string text = line;
    if (m.mfu) text += c10_free_format(" | mfu %.1f%%", 100.0 * *m.mfu);
    if (progress_) std::printf("\r\033[K");
    log::info(text);
  }
  if (m.eval_loss) {
    char line[160];
    std::snprintf(line, sizeof line, "eval step %lld/%lld | eval_loss %.4f | eval_ppl %.3f",
                  static_cast<long long>(m.step), static_cast<long long>(total_steps_),
                  *m.eval_loss, m.eval_ppl ? *m.eval_ppl : std::exp(*m.eval_loss));
    if (progress_) std::printf("\r\033[K");
    log::info(line);
  }
  if (progress_) draw_progress(m);
}

void MetricsWriter::draw_progress(const StepMetrics& m) {
  const int width = 30;
  const double fraction = static_cast<double>(m.step) / static_cast<double>(total_steps_);
  const int filled = static_cast<int>(fraction * width);
  std::string bar(filled, '#');
  bar += std::string(width - filled, '.');
  std::printf("\r[%s] %lld/%lld loss %.4f", bar.c_str(), static_cast<long long>(m.step),
              static_cast<long long>(total_steps_), m.loss);
  std::fflush(stdout);
}

void MetricsWriter::finish_progress() {
  if (progress_) {
    std::printf("\n");
    std::fflush(stdout);
  }
}

}  // namespace liger::trainer
