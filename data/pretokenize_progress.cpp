#include "data/pretokenize_progress.h"

#include <cstdio>

namespace liger::data {

namespace {

// 1234567 -> "1,234,567".
std::string with_commas(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  for (int64_t at = static_cast<int64_t>(digits.size()) - 3; at > 0; at -= 3) {
    digits.insert(static_cast<size_t>(at), ",");
  }
  return value < 0 ? "-" + digits : digits;
}

}  // namespace

std::string describe_progress(const PretokenizeProgress& progress) {
  char head[64];
  const double percent = progress.total_bytes > 0
                             ? 100.0 * static_cast<double>(progress.bytes_read) /
                                   static_cast<double>(progress.total_bytes)
                             : 100.0;
  std::snprintf(head, sizeof head, "%.0f%% of %.1f MB", percent,
                static_cast<double>(progress.total_bytes) / 1e6);
  // Token counts are exact in a double far beyond any file's size.
  const double per_second =
      progress.seconds > 0 ? static_cast<double>(progress.tokens) / progress.seconds : 0.0;
  return std::string(head) + ", " + with_commas(progress.documents) + " documents, " +
         with_commas(progress.tokens) + " tokens, " +
         with_commas(static_cast<int64_t>(per_second)) + " tokens/s (" + progress.file + ")";
}

ProgressLine::ProgressLine(std::ostream& out, bool terminal, double interval_s)
    : out_(out), terminal_(terminal), interval_s_(interval_s) {}

void ProgressLine::update(const PretokenizeProgress& progress) {
  if (drawn_ && progress.seconds - last_shown_s_ < interval_s_) return;
  if (!drawn_ && progress.seconds < interval_s_) return;
  last_shown_s_ = progress.seconds;
  drawn_ = true;
  if (terminal_) {
    // Back to the line's start and clear it, then redraw.
    out_ << "\r\033[K" << describe_progress(progress) << std::flush;
  } else {
    out_ << describe_progress(progress) << "\n" << std::flush;
  }
}

void ProgressLine::finish() {
  if (terminal_ && drawn_) out_ << "\n" << std::flush;
}

}  // namespace liger::data
