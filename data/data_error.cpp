#include "data/data_error.h"

namespace liger::data {

DataError::DataError(const std::string& message) : std::runtime_error(message) {}

DataError::DataError(const std::string& path, int64_t line, const std::string& message)
    : std::runtime_error(file_line(path, line) + ": " + message) {}

std::string file_line(const std::string& path, int64_t line) {
  return path + ":" + std::to_string(line);
}

}  // namespace liger::data
