// The tokenizer interface over SentencePiece and the shipped sample model.
#include "tests/catch.h"
#include "tests/data/data_test_helpers.h"

#include "data/sentencepiece_tokenizer.h"

#include <algorithm>

using namespace liger::data;
using namespace liger::data::testing;

TEST_CASE("the sample SentencePiece model has the promised special ids and size",
          "[data][tokenizer]") {
  const auto tok = load_tokenizer(sample_model_path());
  CHECK(tok->vocab_size() == 1024);
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);
  CHECK_HAS(tok->describe(), "sentencepiece");
  CHECK_HAS(tok->describe(), "vocab 1024");
}

TEST_CASE("the sample model round-trips the whole Shakespeare sample exactly",
          "[data][tokenizer]") {
  const auto tok = load_tokenizer(sample_model_path());
  const std::string text = read_file(sample_text_path());
  const std::vector<int32_t> ids = tok->encode(text);
  CHECK(tok->decode(ids) == text);
  // BPE compresses: well under half a token per byte on the text it was trained on.
  CHECK(ids.size() * 2 < text.size());
  CHECK(std::all_of(ids.begin(), ids.end(),
                    [&](int32_t id) { return id >= 0 && id < tok->vocab_size(); }));
}

TEST_CASE("the sample model keeps newlines, runs of spaces and bytes it never saw",
          "[data][tokenizer]") {
  const auto tok = load_tokenizer(sample_model_path());
  for (const std::string text :
       {"First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
        "  two leading spaces,  two inside, trailing  ", "\n\nstarts with blank lines",
        "tab\tand caf\xC3\xA9 and \xE2\x82\xAC (bytes the sample lacks)", "", "\n"}) {
    INFO("text: " << text);
    CHECK(tok->decode(tok->encode(text)) == text);
  }
  // A newline is one token of its own, so Shakespeare's line structure is cheap to learn.
  const std::vector<int32_t> newline = tok->encode("\n");
  REQUIRE(newline.size() == 1);
  CHECK(tok->encode("\n\n") == std::vector<int32_t>{newline[0], newline[0]});
}

TEST_CASE("encode adds no BOS or EOS; decode rejects ids outside the vocabulary",
          "[data][tokenizer]") {
  const auto tok = load_tokenizer(sample_model_path());
  const std::vector<int32_t> ids = tok->encode("To be, or not to be");
  REQUIRE(!ids.empty());
  CHECK(ids.front() != tok->bos_id());
  CHECK(ids.back() != tok->eos_id());
  CHECK_HAS(data_error_message([&] { tok->decode({5, 1024}); }), "1024");
  CHECK_HAS(data_error_message([&] { tok->decode({-1}); }), "outside [0, 1024)");
}

TEST_CASE("load_tokenizer errors name the path and say what is accepted", "[data][tokenizer]") {
  TempDir dir;

  SECTION("missing .model file") {
    const std::string path = dir.path("nope.model");
    const std::string message = data_error_message([&] { load_tokenizer(path); });
    CHECK_HAS(message, path);
    CHECK_HAS(message, "not found");
  }
  SECTION("corrupt .model file") {
    const std::string path =
        dir.write("broken.model", "this is not a protobuf \x01\x02\x03 at all");
    const std::string message = data_error_message([&] { load_tokenizer(path); });
    CHECK_HAS(message, path);
    CHECK_HAS(message, "not a valid SentencePiece model");
  }
  SECTION("empty .model file") {
    const std::string path = dir.write("empty.model", "");
    CHECK_HAS(data_error_message([&] { load_tokenizer(path); }), path);
  }
  SECTION("a tokenizer.json that is not one") {
    const std::string path = dir.write("tokenizer.json", "{}");
    const std::string message = data_error_message([&] { load_tokenizer(path); });
    CHECK_HAS(message, path);
    CHECK_HAS(message, "\"model\"");
  }
  SECTION("unknown extension") {
    const std::string path = dir.write("vocab.bin", "x");
    const std::string message = data_error_message([&] { load_tokenizer(path); });
    CHECK_HAS(message, "'.bin'");
    CHECK_HAS(message, ".model");
    CHECK_HAS(message, "tokenizer.json");
  }
  SECTION("a model folder with neither tokenizer.model nor tokenizer.json") {
    dir.write("config.json", "{}");
    const std::string message = data_error_message([&] { load_tokenizer(dir.path("")); });
    CHECK_HAS(message, "neither tokenizer.model nor tokenizer.json");
    CHECK_HAS(message, "byte-level BPE");
  }
}

TEST_CASE("load_tokenizer accepts a model folder holding tokenizer.model", "[data][tokenizer]") {
  TempDir dir;
  dir.write("tokenizer.model", read_file(sample_model_path()));
  const auto tok = load_tokenizer(dir.path(""));
  CHECK(tok->vocab_size() == 1024);
  CHECK(dynamic_cast<const SentencePieceTokenizer*>(tok.get()) != nullptr);
}

TEST_CASE("data.bos_token / data.eos_token pick SentencePiece pieces by spelling",
          "[data][tokenizer]") {
  const auto plain = load_tokenizer(sample_model_path());
  CHECK(plain->token_id("<s>") == 1);
  CHECK(plain->token_id("</s>") == 2);
  CHECK(plain->token_id("no such piece") == -1);

  TokenizerOptions options;
  options.bos_token = "</s>";
  options.eos_token = "<s>";
  const auto swapped = load_tokenizer(sample_model_path(), options);
  CHECK(swapped->bos_id() == 2);
  CHECK(swapped->eos_id() == 1);

  options.bos_token = "<nope>";
  const std::string message =
      data_error_message([&] { load_tokenizer(sample_model_path(), options); });
  CHECK_HAS(message, "data.bos_token = '<nope>'");
  CHECK_HAS(message, "no such piece");
}
