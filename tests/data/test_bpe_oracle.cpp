// The Hugging Face byte-level BPE against the Python `tokenizers` package:
// tests/data/bpe_oracle.py trains tokenizers and writes what `tokenizers`
// answers; here ours must answer the same ids and the same decode.
//
// Hidden ([.oracle]): ctest runs the script first (fixture bpe_oracle) and then
// `test_data [oracle]` with LIGER_BPE_ORACLE_DIR set.
#include "tests/catch.h"
#include "tests/data/data_test_helpers.h"

#include "data/hf_tokenizer.h"
#include "data/unicode_nfc.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <sstream>

using namespace liger::data;
using namespace liger::data::testing;

namespace {

std::string oracle_dir() {
  const char* dir = std::getenv("LIGER_BPE_ORACLE_DIR");
  if (dir == nullptr || *dir == '\0') {
    FAIL(
        "LIGER_BPE_ORACLE_DIR is not set: run this through ctest (test data_bpe_oracle), or run "
        "tests/data/bpe_oracle.py OUT_DIR and set LIGER_BPE_ORACLE_DIR=OUT_DIR");
    return "";
  }
  return dir;
}

// "ids differ at 17 of 120/121: ours ... 'Ġthe'(42) ... theirs ..." with some context.
std::string first_difference(const HfBpeTokenizer& tok, const std::vector<int32_t>& ours,
                             const std::vector<int32_t>& theirs) {
  size_t at = 0;
  while (at < ours.size() && at < theirs.size() && ours[at] == theirs[at]) ++at;
  auto show = [&](const std::vector<int32_t>& ids) {
    std::ostringstream out;
    for (size_t i = at >= 3 ? at - 3 : 0; i < ids.size() && i < at + 4; ++i) {
      out << (i == at ? " >>" : " ") << "'" << tok.token_text(ids[i]) << "'(" << ids[i] << ")";
    }
    return out.str();
  };
  std::ostringstream out;
  out << "ids differ at " << at << " (ours " << ours.size() << " ids, tokenizers " << theirs.size()
      << ")\n  ours:      " << show(ours) << "\n  tokenizers:" << show(theirs);
  return out.str();
}

}  // namespace

TEST_CASE("byte-level BPE gives the ids and decode of Python tokenizers",
          "[.oracle][data][tokenizer]") {
  const std::string dir = oracle_dir();
  const nlohmann::json oracle = nlohmann::json::parse(read_file(dir + "/oracle.json"));
  const auto& variants = oracle.at("variants");
  REQUIRE(variants.size() >= 4);
  for (const auto& variant : variants) {
    const std::string name = variant.at("name");
    INFO("tokenizer variant " << name << " (tokenizers "
                              << oracle.at("tokenizers_version").get<std::string>() << ")");
    const HfBpeTokenizer tok(dir + "/" + variant.at("tokenizer").get<std::string>());
    CHECK(tok.vocab_size() == variant.at("vocab_size").get<int64_t>());

    int64_t tokens = 0;
    for (const auto& item : variant.at("cases")) {
      const std::string text = item.at("text");
      const std::vector<int32_t> expected = item.at("ids").get<std::vector<int32_t>>();
      const std::vector<int32_t> ids = tok.encode(text);
      INFO("text (" << text.size() << " bytes): " << text.substr(0, 200));
      if (ids != expected) FAIL_CHECK(first_difference(tok, ids, expected));
      CHECK(tok.decode(expected) == item.at("decoded").get<std::string>());
      tokens += static_cast<int64_t>(expected.size());
    }
    // The held-out text is the first case: the bulk of the comparison.
    CHECK(variant.at("cases")[0].at("ids").size() > 5000);
    for (const auto& item : variant.at("single_tokens")) {
      const std::vector<int32_t> ids = item.at("ids").get<std::vector<int32_t>>();
      INFO("single token " << ids[0] << " '" << tok.token_text(ids[0]) << "'");
      CHECK(tok.decode(ids) == item.at("decoded").get<std::string>());
    }
    // Throughput on the whole Shakespeare sample (for the log; not a pass/fail criterion).
    const std::string text = read_file(sample_text_path());
    const auto start = std::chrono::steady_clock::now();
    const size_t count = tok.encode(text).size();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    WARN("variant " << name << ": " << variant.at("cases").size() << " texts, " << tokens
                    << " tokens identical to tokenizers; encodes tinyshakespeare ("
                    << text.size() / 1e6 << " MB, " << count << " tokens) in " << seconds << " s");
  }
}

TEST_CASE("NFC gives what Python's unicodedata gives", "[.oracle][data][tokenizer]") {
  const std::string dir = oracle_dir();
  const nlohmann::json oracle = nlohmann::json::parse(read_file(dir + "/oracle.json"));
  INFO("Unicode " << oracle.at("unicode_version").get<std::string>());
  const auto& cases = oracle.at("nfc");
  REQUIRE(cases.size() > 100);
  for (const auto& item : cases) {
    const std::string text = item.at("text");
    INFO("text: " << text.substr(0, 120));
    CHECK(unicode::nfc(text) == item.at("nfc").get<std::string>());
  }
}
