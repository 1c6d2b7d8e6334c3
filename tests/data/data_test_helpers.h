// Shared helpers for the data/ tests: a byte tokenizer with predictable ids,
// temporary files, the shipped samples, and catching a DataError's message.
#pragma once

#include "data/data_error.h"
#include "data/regex.h"
#include "data/tokenizer.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace liger::data::testing {

// Byte b -> id b + 3; BOS 1, EOS 2, vocab 259. Makes expected ids easy to write.
class ByteTokenizer : public Tokenizer {
 public:
  static int32_t id(char c) { return static_cast<int32_t>(static_cast<unsigned char>(c)) + 3; }

  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids;
    for (const char c : text) ids.push_back(id(c));
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    for (const int32_t i : ids) {
      if (i >= 3) text += static_cast<char>(i - 3);
    }
    return text;
  }
  int64_t vocab_size() const override { return 259; }
  int32_t bos_id() const override { return 1; }
  int32_t eos_id() const override { return 2; }
};

// Ids of `text` under ByteTokenizer.
inline std::vector<int32_t> byte_ids(const std::string& text) {
  return ByteTokenizer().encode(text);
}

// A fresh directory under the system temp folder, removed with its contents.
class TempDir {
 public:
  TempDir() {
    std::random_device entropy;
    const auto base = std::filesystem::temp_directory_path();
    for (int attempt = 0; attempt < 100; ++attempt) {
      path_ = base / ("liger-data-test-" + std::to_string(entropy()));
      if (std::filesystem::create_directory(path_)) return;
    }
    throw std::runtime_error("TempDir: could not create a temporary directory");
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Writes `content` (bytes as given) to `name` inside the directory; returns its path.
  std::string write(const std::string& name, const std::string& content) const {
    const auto file = path_ / name;
    std::ofstream out(file, std::ios::binary);
    out << content;
    if (!out) throw std::runtime_error("TempDir: cannot write " + file.string());
    return file.string();
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// <repo>/relative, via LIGER_SOURCE_DIR (set by ctest), else the working directory.
inline std::string source_path(const std::string& relative) {
  const char* root = std::getenv("LIGER_SOURCE_DIR");
  return (std::filesystem::path(root ? root : ".") / relative).string();
}

inline std::string sample_text_path() {
  return source_path("data/samples/tinyshakespeare.txt");
}
inline std::string sample_model_path() {
  return source_path("data/samples/shakespeare_bpe1024.model");
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path + " (is LIGER_SOURCE_DIR set?)");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The message of the DataError that `action` throws, or a marker when it throws none.
template <class Action>
std::string data_error_message(Action&& action) {
  try {
    action();
  } catch (const DataError& e) {
    return e.what();
  }
  return "<no DataError thrown>";
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace liger::data::testing

// CHECK that `text` contains `part`, showing `text` when it does not.
#define CHECK_HAS(text, part)                                \
  do {                                                       \
    INFO("text: " << (text));                                \
    CHECK(::liger::data::testing::contains((text), (part))); \
  } while (false)

// tokenizer.json needs PCRE2; a build without it (-DLIGER_PCRE2=OFF) skips the test.
#define LIGER_NEEDS_PCRE2()                                       \
  do {                                                            \
    if (!::liger::data::Regex::available()) {                     \
      WARN("skipped: this build has no PCRE2 (LIGER_PCRE2=OFF)"); \
      return;                                                     \
    }                                                             \
  } while (false)
