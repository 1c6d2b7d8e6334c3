// DataError: the one exception type for problems a user can fix in their data,
// tokenizer or data.* config. Messages name the place ("file:line", 1-based)
// and say what to do; apps print them without a stack trace.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace liger::data {

class DataError : public std::runtime_error {
 public:
  // A message that already names its place (or has none, e.g. a bad option).
  explicit DataError(const std::string& message);
  // "path:line: message" — line is 1-based; whole-file problems use line 1.
  DataError(const std::string& path, int64_t line, const std::string& message);
};

// "path:line", the prefix every located message starts with.
std::string file_line(const std::string& path, int64_t line);

}  // namespace liger::data
