#include "trainer/distributed/environment.h"

#include <cstdlib>
#include <sstream>

namespace liger::trainer::distributed {
namespace {

const char* get(const EnvLookup& lookup, const char* name) {
  const char* value = lookup(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

// The whole of `text` as an integer, or an EnvironmentError naming `name`.
int64_t parse_integer(const char* name, const std::string& text) {
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) {
    throw EnvironmentError(std::string(name) + "=" + text +
                           " is not an integer: fix the launcher's environment");
  }
  return value;
}

int64_t integer_or(const EnvLookup& lookup, const char* name, int64_t fallback) {
  const char* value = get(lookup, name);
  return value ? parse_integer(name, value) : fallback;
}

// "4(x2),1" -> {4, 4, 1}: SLURM's tasks per node, one entry per node.
std::vector<int64_t> expand_tasks_per_node(const char* name, const std::string& text) {
  std::vector<int64_t> counts;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const auto paren = item.find("(x");
    if (paren == std::string::npos) {
      counts.push_back(parse_integer(name, item));
      continue;
    }
    if (item.back() != ')')
      throw EnvironmentError(std::string(name) + "=" + text + " is malformed");
    const int64_t count = parse_integer(name, item.substr(0, paren));
    const int64_t repeat = parse_integer(name, item.substr(paren + 2, item.size() - paren - 3));
    for (int64_t i = 0; i < repeat; ++i) counts.push_back(count);
  }
  if (counts.empty()) throw EnvironmentError(std::string(name) + "=" + text + " is empty");
  return counts;
}

void validate(const ProcessEnvironment& env, const char* rank_name, const char* world_name,
              const char* local_name, const char* local_world_name) {
  const std::string fix = " (launch with scripts/launch.sh or srun)";
  if (env.world_size < 1) {
    throw EnvironmentError(std::string(world_name) + "=" + std::to_string(env.world_size) +
                           " must be at least 1" + fix);
  }
  if (env.rank < 0 || env.rank >= env.world_size) {
    throw EnvironmentError(std::string(rank_name) + "=" + std::to_string(env.rank) +
                           " is not in 0.." + std::to_string(env.world_size - 1) + " for " +
                           world_name + "=" + std::to_string(env.world_size) +
                           ": each process needs its own rank" + fix);
  }
  if (env.local_world_size < 1 || env.local_rank < 0 || env.local_rank >= env.local_world_size) {
    throw EnvironmentError(std::string(local_name) + "=" + std::to_string(env.local_rank) +
                           " is not in 0.." + std::to_string(env.local_world_size - 1) + " for " +
                           local_world_name + "=" + std::to_string(env.local_world_size) + fix);
  }
  if (env.master_port < 1 || env.master_port > 65535) {
    throw EnvironmentError("MASTER_PORT=" + std::to_string(env.master_port) +
                           " is not a port (1..65535)");
  }
}

}  // namespace

std::string ProcessEnvironment::describe() const {
  std::ostringstream out;
  out << "rank " << rank << " of " << world_size << " (local " << local_rank << " of "
      << local_world_size << "), master " << master_addr << ":" << master_port << ", from "
      << source;
  return out.str();
}

std::vector<std::string> expand_slurm_nodelist(const std::string& nodelist) {
  auto bad = [&](const std::string& why) {
    return EnvironmentError("SLURM_JOB_NODELIST=" + nodelist + " cannot be read (" + why +
                            "): expected a SLURM host list such as gpu[01-04,07]");
  };
  if (nodelist.empty()) throw bad("empty");
  // Split at commas outside brackets.
  std::vector<std::string> items;
  std::string current;
  int depth = 0;
  for (char ch : nodelist) {
    if (ch == '[') ++depth;
    if (ch == ']') --depth;
    if (depth < 0 || depth > 1) throw bad("unbalanced brackets");
    if (ch == ',' && depth == 0) {
      items.push_back(current);
      current.clear();
    } else {
      current += ch;
    }
  }
  if (depth != 0) throw bad("unbalanced brackets");
  items.push_back(current);

  std::vector<std::string> hosts;
  for (const auto& item : items) {
    if (item.empty()) throw bad("an empty host name");
    // Expand bracket groups left to right (cartesian product, SLURM's order).
    std::vector<std::string> names = {""};
    size_t pos = 0;
    while (pos < item.size()) {
      const size_t open = item.find('[', pos);
      const std::string literal =
          item.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
      for (auto& name : names) name += literal;
      if (open == std::string::npos) break;
      const size_t close = item.find(']', open);
      std::vector<std::string> choices;
      std::stringstream ranges(item.substr(open + 1, close - open - 1));
      std::string range;
      while (std::getline(ranges, range, ',')) {
        const auto dash = range.find('-');
        const std::string first = range.substr(0, dash);
        if (first.empty() || first.find_first_not_of("0123456789") != std::string::npos)
          throw bad("'" + range + "'");
        if (dash == std::string::npos) {
          choices.push_back(first);
          continue;
        }
        const std::string last = range.substr(dash + 1);
        if (last.empty() || last.find_first_not_of("0123456789") != std::string::npos)
          throw bad("'" + range + "'");
        const int64_t lo = std::stoll(first), hi = std::stoll(last);
        if (hi < lo) throw bad("'" + range + "' runs backwards");
        for (int64_t v = lo; v <= hi; ++v) {
          std::string digits = std::to_string(v);
          if (digits.size() < first.size())
            digits.insert(0, first.size() - digits.size(), '0');  // keep zero padding
          choices.push_back(digits);
        }
      }
      if (choices.empty()) throw bad("empty brackets");
      std::vector<std::string> expanded;
      for (const auto& name : names) {
        for (const auto& choice : choices) expanded.push_back(name + choice);
      }
      names = std::move(expanded);
      pos = close + 1;
    }
    hosts.insert(hosts.end(), names.begin(), names.end());
  }
  return hosts;
}

ProcessEnvironment detect_environment(const EnvLookup& lookup) {
  ProcessEnvironment env;
  if (get(lookup, "RANK") && get(lookup, "WORLD_SIZE")) {
    env.source = "torchrun";
    env.rank = integer_or(lookup, "RANK", 0);
    env.world_size = integer_or(lookup, "WORLD_SIZE", 1);
    env.local_rank = integer_or(lookup, "LOCAL_RANK", env.rank);
    env.local_world_size = integer_or(lookup, "LOCAL_WORLD_SIZE", env.world_size);
    if (const char* addr = get(lookup, "MASTER_ADDR")) env.master_addr = addr;
    env.master_port = static_cast<int>(integer_or(lookup, "MASTER_PORT", 29500));
    validate(env, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE");
    return env;
  }
  if (get(lookup, "SLURM_PROCID") && get(lookup, "SLURM_NTASKS")) {
    env.source = "slurm";
    env.rank = integer_or(lookup, "SLURM_PROCID", 0);
    env.world_size = integer_or(lookup, "SLURM_NTASKS", 1);
    env.local_rank = integer_or(lookup, "SLURM_LOCALID", 0);
    const char* per_node_name =
        get(lookup, "SLURM_NTASKS_PER_NODE") ? "SLURM_NTASKS_PER_NODE" : "SLURM_TASKS_PER_NODE";
    if (const char* per_node = get(lookup, per_node_name)) {
      const auto counts = expand_tasks_per_node(per_node_name, per_node);
      const int64_t node = integer_or(lookup, "SLURM_NODEID", 0);
      env.local_world_size =
          counts[static_cast<size_t>(node) < counts.size() ? static_cast<size_t>(node) : 0];
    } else {
      env.local_world_size = env.world_size;
    }
    const char* nodelist = get(lookup, "SLURM_JOB_NODELIST");
    if (!nodelist) nodelist = get(lookup, "SLURM_NODELIST");
    if (nodelist) env.hosts = expand_slurm_nodelist(nodelist);
    if (const char* addr = get(lookup, "MASTER_ADDR")) {
      env.master_addr = addr;
    } else if (!env.hosts.empty()) {
      env.master_addr = env.hosts.front();
    }
    if (get(lookup, "MASTER_PORT")) {
      env.master_port = static_cast<int>(integer_or(lookup, "MASTER_PORT", 29500));
    } else if (get(lookup, "SLURM_JOB_ID")) {
      // Two jobs sharing a node must not meet on one port.
      env.master_port = static_cast<int>(20000 + integer_or(lookup, "SLURM_JOB_ID", 0) % 20000);
    }
    validate(env, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", per_node_name);
    return env;
  }
  return env;
}

ProcessEnvironment detect_environment() {
  return detect_environment([](const char* name) -> const char* { return std::getenv(name); });
}

}  // namespace liger::trainer::distributed
