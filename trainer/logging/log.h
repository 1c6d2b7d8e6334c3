// Logging facade over spdlog. Callers pass finished strings, so no caller
// needs spdlog's (or fmt's) headers.
#pragma once
#include <string>

namespace liger::log {

enum class Level { debug, info, warn, error, off };

void set_level(Level level);
// Also writes every line to `path` (appending). Safe to call once per run.
void add_file_sink(const std::string& path);
// Prefixes every line with "[rank R]" (only useful when world size > 1).
void set_rank(int rank, int world_size);

void debug(const std::string& message);
void info(const std::string& message);
void warn(const std::string& message);
void error(const std::string& message);

void flush();

}  // namespace liger::log
