#include "trainer/logging/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <stdexcept>

namespace liger::log {
namespace {

std::shared_ptr<spdlog::logger>& logger() {
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    auto made = std::make_shared<spdlog::logger>("liger", sink);
    made->set_pattern("[%Y-%m-%d %H:%M:%S] [%^%l%$] %v");
    made->set_level(spdlog::level::info);
    return made;
  }();
  return instance;
}

}  // namespace

void set_level(Level level) {
  static const spdlog::level::level_enum table[] = {spdlog::level::debug, spdlog::level::info,
                                                    spdlog::level::warn, spdlog::level::err,
                                                    spdlog::level::off};
  logger()->set_level(table[static_cast<int>(level)]);
}

void add_file_sink(const std::string& path) {
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
  sink->set_pattern("[%Y-%m-%d %H:%M:%S] [%l] %v");
  logger()->sinks().push_back(sink);
}

void set_rank(int rank, int world_size) {
  if (world_size > 1) {
    logger()->set_pattern("[%Y-%m-%d %H:%M:%S] [%^%l%$] [rank " + std::to_string(rank) + "] %v");
  }
}

void debug(const std::string& message) {
  logger()->debug(message);
}
void info(const std::string& message) {
  logger()->info(message);
}
void warn(const std::string& message) {
  logger()->warn(message);
}
void error(const std::string& message) {
  logger()->error(message);
}
void flush() {
  logger()->flush();
}

}  // namespace liger::log
