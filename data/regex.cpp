#include "data/regex.h"

#include "data/utf8.h"

#include <stdexcept>

#if LIGER_WITH_PCRE2
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#endif

namespace liger::data {

#if LIGER_WITH_PCRE2

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  const int length = pcre2_get_error_message(code, buffer, sizeof buffer);
  if (length < 0) return "PCRE2 error " + std::to_string(code);
  return std::string(reinterpret_cast<const char*>(buffer), static_cast<size_t>(length));
}

// Match data for one search; freed on scope exit.
class MatchData {
 public:
  explicit MatchData(const pcre2_code* code)
      : data_(pcre2_match_data_create_from_pattern(code, nullptr)) {
    if (data_ == nullptr) throw std::bad_alloc();
  }
  ~MatchData() { pcre2_match_data_free(data_); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
  pcre2_match_data* get() const { return data_; }

 private:
  pcre2_match_data* data_;
};

}  // namespace

struct Regex::Impl {
  pcre2_code* code = nullptr;
  ~Impl() { pcre2_code_free(code); }

  // pcre2_match with the JIT when it was compiled; retries without it when the
  // JIT stack runs out (very long runs of one character class).
  int match(std::string_view text, size_t offset, uint32_t options, pcre2_match_data* data) const {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    // The subject was validated once by the caller: skip PCRE2's own check.
    int rc = pcre2_match(code, subject, text.size(), offset, options | PCRE2_NO_UTF_CHECK, data,
                         nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code, subject, text.size(), offset,
                       options | PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data, nullptr);
    }
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
      throw std::runtime_error("regex " + std::to_string(rc) + ": " + pcre2_message(rc));
    }
    return rc;
  }
};

Regex::Regex(const std::string& pattern) : pattern_(pattern), impl_(std::make_unique<Impl>()) {
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
  if (impl_->code == nullptr) {
    throw std::invalid_argument("the regex does not compile: " + pcre2_message(error) +
                                " at offset " + std::to_string(error_offset) + " of " + pattern);
  }
  // The JIT is an optimisation: when it is unavailable the interpreter runs.
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  MatchData data(impl_->code);
  size_t offset = 0;
  while (offset <= text.size()) {
    if (impl_->match(text, offset, 0, data.get()) == PCRE2_ERROR_NOMATCH) break;
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0], end = ovector[1];
    matches.emplace_back(begin, end);
    if (end > begin) {
      offset = end;
    } else {
      // Empty match: resume after the next character.
      if (end >= text.size()) break;
      const size_t length = utf8::sequence_length(text, end);
      offset = end + (length == 0 ? 1 : length);
    }
  }
  return matches;
}

bool Regex::matches_at(std::string_view text, size_t offset) const {
  MatchData data(impl_->code);
  return impl_->match(text, offset, PCRE2_ANCHORED, data.get()) >= 0;
}

bool Regex::available() {
  return true;
}

#else  // !LIGER_WITH_PCRE2

struct Regex::Impl {};

Regex::Regex(const std::string& pattern) : pattern_(pattern) {
  throw std::invalid_argument(
      "this build of liger-train has no PCRE2, which Hugging Face tokenizer.json regexes need; "
      "install libpcre2-dev and rebuild (the CMake option LIGER_PCRE2=OFF removed it)");
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view) const {
  return {};
}
bool Regex::matches_at(std::string_view, size_t) const {
  return false;
}
bool Regex::available() {
  return false;
}

#endif

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

}  // namespace liger::data
