// liger-bench's name filters (--op, --backend, and --op attention's --shape,
// --variant, --impl): a comma-separated list, where an empty one takes all.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

namespace liger::bench {

// Whether `name` passes `filter` (empty: every name does).
inline bool wanted(const std::vector<std::string>& filter, const std::string& name) {
  return filter.empty() || std::find(filter.begin(), filter.end(), name) != filter.end();
}

}  // namespace liger::bench
