// Regex: the Unicode regular expressions of Hugging Face pre-tokenizers
// (\p{L}, \p{N}, \s, lookahead, (?i:...)) run through PCRE2 in UTF mode with
// Unicode properties for \s, \w and \d (PCRE2_UCP), JIT-compiled when the
// platform allows. PCRE2 stays behind this header.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace liger::data {

class Regex {
 public:
  // Compiles `pattern`; std::invalid_argument with PCRE2's message and the
  // offset of the problem when it does not compile (or PCRE2 is not built in).
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // Every non-overlapping match in `text` (valid UTF-8), left to right, as
  // byte ranges [begin, end). An empty match is reported and the search then
  // resumes one character later (as Oniguruma's find_iter does).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  // Whether the pattern matches starting exactly at byte `offset` of `text`.
  bool matches_at(std::string_view text, size_t offset) const;

  const std::string& pattern() const { return pattern_; }

  // Whether this build has PCRE2 (the LIGER_PCRE2 CMake option).
  static bool available();

 private:
  struct Impl;
  std::string pattern_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace liger::data
