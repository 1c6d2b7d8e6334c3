#include "trainer/config_schema.h"

#include "trainer/config.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <optional>
#include <sstream>
#include <type_traits>

namespace liger::config {
namespace {

// Integers without an upper bound: the largest a double holds exactly, with room.
constexpr double kMaxInt = 9.0e15;

// The `allowed` column of trainer/config_keys.h.
struct Allowed {
  double min = -1e300;
  double max = 1e300;
  std::vector<std::string> choices;
};
Allowed any_value() {
  return {};
}
Allowed range(double min, double max) {
  return {min, max, {}};
}
Allowed at_least(double min) {
  return {min, kMaxInt, {}};
}
template <typename... Names>
Allowed one_of(const Names&... names) {
  return {-1e300, 1e300, {std::string(names)...}};
}

// The KeyType of each C++ type a key may have.
KeyType key_type(const int64_t&, const Allowed&) {
  return KeyType::integer;
}
KeyType key_type(const double&, const Allowed&) {
  return KeyType::number;
}
KeyType key_type(const bool&, const Allowed&) {
  return KeyType::boolean;
}
KeyType key_type(const std::string&, const Allowed& allowed) {
  return allowed.choices.empty() ? KeyType::string : KeyType::choice;
}
KeyType key_type(const Strings&, const Allowed&) {
  return KeyType::string_list;
}
KeyType key_type(const Resume&, const Allowed&) {
  return KeyType::string;
}
template <typename Enum, typename = std::enable_if_t<has_enum_names<Enum>::value>>
KeyType key_type(const Enum&, const Allowed&) {
  return KeyType::choice;
}
template <typename T>
KeyType key_type(const std::optional<T>&, const Allowed& allowed) {
  return key_type(T{}, allowed);
}

// The choices of a choice key: the enum's names, or the listed strings.
template <typename T>
std::vector<std::string> choices_of(const T&, const Allowed& allowed) {
  if constexpr (std::is_enum_v<T>) {
    return enum_names<T>();
  } else {
    return allowed.choices;
  }
}
template <typename T>
std::vector<std::string> choices_of(const std::optional<T>&, const Allowed& allowed) {
  return choices_of(T{}, allowed);
}

// A string as a YAML scalar: plain when it reads back as the same string,
// else single-quoted ('' for the empty string, 'ROMEO:').
std::string yaml_string(const std::string& text) {
  bool plain = !text.empty() && (std::isalpha(static_cast<unsigned char>(text[0])) ||
                                 text[0] == '_' || text[0] == '.' || text[0] == '/');
  for (char ch : text) {
    plain = plain && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' ||
                      ch == '/' || ch == '-');
  }
  std::string lower;
  for (char ch : text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (const char* word : {"null", "true", "false", "yes", "no", "on", "off", "y", "n"}) {
    plain = plain && lower != word;
  }
  if (plain) return text;
  std::string quoted = "'";
  for (char ch : text) quoted += ch == '\'' ? std::string("''") : std::string(1, ch);
  return quoted + "'";
}

// A default as reference.yaml shows it. Numbers and booleans: as written in
// trainer/config_keys.h (`literal`); the rest from the value.
std::string default_yaml(const int64_t&, const char* literal) {
  return literal;
}
std::string default_yaml(const double&, const char* literal) {
  return literal;
}
std::string default_yaml(const bool&, const char* literal) {
  return literal;
}
std::string default_yaml(const std::string& value, const char*) {
  return yaml_string(value);
}
std::string default_yaml(const Strings& value, const char*) {
  std::string text = "[";
  for (size_t i = 0; i < value.size(); ++i) text += (i ? ", " : "") + yaml_string(value[i]);
  return text + "]";
}
std::string default_yaml(const Resume& value, const char*) {
  return yaml_string(value.text());
}
template <typename Enum, typename = std::enable_if_t<has_enum_names<Enum>::value>>
std::string default_yaml(const Enum& value, const char*) {
  return name_of(value);
}
template <typename T>
std::string default_yaml(const std::optional<T>& value, const char* literal) {
  return value ? default_yaml(*value, literal) : "null";
}

template <typename T>
struct is_optional : std::false_type {};
template <typename T>
struct is_optional<std::optional<T>> : std::true_type {};

template <typename T>
KeySpec make_key(const char* section, const char* name, const T& default_value,
                 const char* default_literal, const Allowed& allowed, const char* doc) {
  KeySpec key;
  key.section = section;
  key.name = name;
  key.type = key_type(default_value, allowed);
  key.default_yaml = default_yaml(default_value, default_literal);
  key.doc = doc;
  key.min = allowed.min;
  key.max = allowed.max;
  if (key.type == KeyType::choice) key.choices = choices_of(default_value, allowed);
  key.nullable = is_optional<T>::value;  // null = the preset's (or derived) value
  return key;
}

// Every key of trainer/config_keys.h, in its order.
std::vector<KeySpec> build_schema() {
  std::vector<KeySpec> keys;
#define CONFIG_SECTION(section, Struct)  \
  {                                      \
    const char* section_name = #section; \
    const Struct defaults{};
#define CONFIG_KEY(Type, name, default_value, allowed, doc) \
  keys.push_back(make_key<Type>(section_name, #name, defaults.name, #default_value, allowed, doc));
#define CONFIG_END_SECTION() }
#include "trainer/config_keys.h"
#undef CONFIG_SECTION
#undef CONFIG_KEY
#undef CONFIG_END_SECTION
  return keys;
}

}  // namespace

std::string KeySpec::describe_allowed() const {
  std::ostringstream out;
  auto bound = [](double v) {
    std::ostringstream s;
    if (v == static_cast<double>(static_cast<long long>(v))) {
      s << static_cast<long long>(v);
    } else {
      s << v;
    }
    return s.str();
  };
  switch (type) {
    case KeyType::integer:
      out << "an integer";
      if (min > -1e299 || max < 1e299) {
        if (min == max) {
          out << " equal to " << bound(min);
        } else if (max >= kMaxInt) {
          out << " >= " << bound(min);
        } else {
          out << " in [" << bound(min) << ", " << bound(max) << "]";
        }
      }
      break;
    case KeyType::number: out << "a number in [" << bound(min) << ", " << bound(max) << "]"; break;
    case KeyType::boolean: out << "true or false"; break;
    case KeyType::string: out << "a string"; break;
    case KeyType::choice: {
      out << "one of: ";
      for (size_t i = 0; i < choices.size(); ++i) out << (i ? ", " : "") << choices[i];
      break;
    }
    case KeyType::string_list: out << "a list of strings"; break;
  }
  if (nullable) out << " (or null)";
  return out.str();
}

const std::vector<std::string>& sections() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> list;
#define CONFIG_SECTION(section, Struct) list.push_back(#section);
#define CONFIG_KEY(...)
#define CONFIG_END_SECTION()
#include "trainer/config_keys.h"
#undef CONFIG_SECTION
#undef CONFIG_KEY
#undef CONFIG_END_SECTION
    return list;
  }();
  return names;
}

const std::vector<KeySpec>& schema() {
  static const std::vector<KeySpec> keys = build_schema();
  return keys;
}

const KeySpec* find_key(const std::string& full_name) {
  for (const auto& key : schema()) {
    if (key.full_name() == full_name) return &key;
  }
  return nullptr;
}

namespace {
// Levenshtein distance, O(|a|·|b|): keys are short.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}
}  // namespace

std::string closest_key(const std::string& full_name) {
  std::string best;
  size_t best_distance = SIZE_MAX;
  const auto dot = full_name.find('.');
  const std::string leaf = dot == std::string::npos ? full_name : full_name.substr(dot + 1);
  for (const auto& key : schema()) {
    // Compare whole names, but also the leaf alone so that a key put in the
    // wrong section ("training.seq_len") finds its home ("data.seq_len").
    size_t distance =
        std::min(edit_distance(full_name, key.full_name()), edit_distance(leaf, key.name) + 2);
    if (distance < best_distance) {
      best_distance = distance;
      best = key.full_name();
    }
  }
  return best;
}

std::string closest_name(const std::string& name, const std::vector<std::string>& names) {
  std::string best;
  size_t best_distance = SIZE_MAX;
  for (const auto& candidate : names) {
    const size_t distance = edit_distance(name, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  return best;
}

std::string reference_yaml() {
  std::ostringstream out;
  out << "# liger-train configuration reference: every key, its default and what it does.\n"
         "# Generated by `liger-train --print-reference` from trainer/config_keys.h;\n"
         "# a test keeps this file and the schema identical. Any key may be overridden on\n"
         "# the command line: --set section.key=value\n";
  for (const auto& section : sections()) {
    out << "\n" << section << ":\n";
    for (const auto& key : schema()) {
      if (key.section != section) continue;
      out << "  # " << key.doc << "\n";
      out << "  #   " << key.describe_allowed() << "\n";
      out << "  " << key.name << ": " << key.default_yaml << "\n";
    }
  }
  return out.str();
}

}  // namespace liger::config
