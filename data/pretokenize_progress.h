// ProgressLine: pretokenize's progress on a stream (stderr), with tokens/s.
// On a terminal one line is redrawn in place ('\r') a few times a second; on
// anything else (a log file, a pipe) a whole line is written every
// `interval_s` seconds and no carriage return ever, so logs stay readable.
#pragma once

#include "data/pretokenize.h"

#include <ostream>
#include <string>

namespace liger::data {

// "41% of 12.3 MB, 1,024 documents, 3,401,223 tokens, 1,234,567 tokens/s (file.jsonl)"
std::string describe_progress(const PretokenizeProgress& progress);

class ProgressLine {
 public:
  // `terminal`: redraw in place. `interval_s`: the least time between two
  // lines (0: every update).
  ProgressLine(std::ostream& out, bool terminal, double interval_s);

  // Shows `progress` when the interval has passed since the last line.
  void update(const PretokenizeProgress& progress);
  // On a terminal: ends the line being redrawn (nothing when none was drawn).
  void finish();

 private:
  std::ostream& out_;
  bool terminal_;
  double interval_s_;
  double last_shown_s_ = 0;
  bool drawn_ = false;
};

}  // namespace liger::data
