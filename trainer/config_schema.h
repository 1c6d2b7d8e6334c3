// The config schema: every key liger-train knows, its type, default, allowed
// values and one line of documentation, as data for validation, messages and
// configs/reference.yaml (`liger-train --print-reference`; a test keeps the
// two in sync). Built from trainer/config_keys.h, where each key is declared.
#pragma once

#include <string>
#include <vector>

namespace liger::config {

enum class KeyType {
  integer,  // 64-bit signed, range-checked
  number,   // double, range-checked
  boolean,
  string,       // free text (paths, prompts)
  choice,       // one of `choices`
  string_list,  // a YAML list of strings (a single string is accepted as a list of one)
};

struct KeySpec {
  std::string section;  // "training"
  std::string name;     // "micro_batch_size"
  KeyType type;
  std::string
      default_yaml;     // default as YAML text; "null" = taken from elsewhere (the preset, ...)
  std::string doc;      // one line, for reference.yaml and error messages
  double min = -1e300;  // inclusive bounds for integer/number
  double max = 1e300;
  std::vector<std::string> choices;  // for choice
  bool nullable = false;             // null allowed (meaning "use the preset's / derived value")

  std::string full_name() const { return section + "." + name; }
  // "an integer in [1, 1000000]", "one of: cpu, cuda, auto", ...
  std::string describe_allowed() const;
};

// The sections in the order reference.yaml shows them.
const std::vector<std::string>& sections();
// Every key, grouped by section in display order.
const std::vector<KeySpec>& schema();
// nullptr when `full_name` is not a known key.
const KeySpec* find_key(const std::string& full_name);
// The known key closest to `full_name` (edit distance), for "did you mean".
std::string closest_key(const std::string& full_name);
// The entry of `names` closest to `name` (edit distance).
std::string closest_name(const std::string& name, const std::vector<std::string>& names);

// The commented reference.yaml text generated from the schema.
std::string reference_yaml();

}  // namespace liger::config
