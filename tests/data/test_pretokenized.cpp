// Pre-tokenized data: JSONL with input_ids (+ labels) and flat .bin token
// files (nanoGPT raw, llm.c with header); ids beyond the vocabulary are
// DataErrors naming file:line or the byte offset.
#include "tests/catch.h"
#include "tests/data/data_test_helpers.h"

#include "data/dataset.h"
#include "data/readers.h"

#include <cstring>

using namespace liger::data;
using namespace liger::data::testing;

namespace {

template <class T>
std::string raw_tokens(const std::vector<T>& ids) {
  std::string bytes(ids.size() * sizeof(T), '\0');
  std::memcpy(bytes.data(), ids.data(), bytes.size());
  return bytes;
}

// llm.c: 256 int32 header (magic, version, count), then the tokens.
template <class T>
std::string llmc_file(const std::vector<T>& ids, int32_t version, int32_t count = -1) {
  std::vector<int32_t> header(256, 0);
  header[0] = 20240520;
  header[1] = version;
  header[2] = count >= 0 ? count : static_cast<int32_t>(ids.size());
  return raw_tokens(header) + raw_tokens(ids);
}

std::vector<uint8_t> mask(std::initializer_list<int> bits) {
  return std::vector<uint8_t>(bits.begin(), bits.end());
}

ReadOptions with_dtype(TokenDtype dtype) {
  ReadOptions options;
  options.token_dtype = dtype;
  return options;
}

}  // namespace

TEST_CASE("tokens_jsonl: ids as given; labels say what is trained", "[data][pretokenized]") {
  TempDir dir;
  const std::string path =
      dir.write("t.jsonl",
                "{\"input_ids\": [1, 10, 11, 2]}\n\n"
                "{\"input_ids\": [1, 20, 21, 22, 2], \"labels\": [-100, -100, 21, 22, 2]}\n");
  const auto docs = read_documents(path, DataFormat::auto_detect, ByteTokenizer());
  REQUIRE(docs.size() == 2);
  CHECK(docs[0].tokens == std::vector<int32_t>{1, 10, 11, 2});
  CHECK(docs[0].loss_mask == mask({0, 1, 1, 1}));  // no labels: all but BOS
  CHECK(docs[1].tokens == std::vector<int32_t>{1, 20, 21, 22, 2});
  CHECK(docs[1].loss_mask == mask({0, 0, 1, 1, 1}));
  CHECK(docs[1].line == 3);
  CHECK(detect_format(path) == DataFormat::tokens_jsonl);
}

TEST_CASE("tokens_jsonl errors name file:line", "[data][pretokenized]") {
  TempDir dir;
  auto error_of = [&](const std::string& line) {
    const std::string path = dir.write("bad.jsonl", "{\"input_ids\": [5]}\n" + line + "\n");
    const std::string message = data_error_message(
        [&] { read_documents(path, DataFormat::tokens_jsonl, ByteTokenizer()); });
    CHECK_HAS(message, path + ":2:");
    return message;
  };
  CHECK_HAS(error_of("{\"input_ids\": [5, 259]}"),
            "input_ids[1] = 259 is not a token id in the tokenizer's vocabulary [0, 259)");
  CHECK_HAS(error_of("{\"input_ids\": [-1]}"), "input_ids[0] = -1");
  CHECK_HAS(error_of("{\"input_ids\": [5, \"x\"]}"), "input_ids[1] = \"x\"");
  CHECK_HAS(error_of("{\"input_ids\": []}"), "an empty list");
  CHECK_HAS(error_of("{\"ids\": [1]}"), "missing field \"input_ids\"");
  CHECK_HAS(error_of("{\"input_ids\": [5, 6], \"labels\": [6]}"),
            "as long as \"input_ids\" (2), got 1 items");
  CHECK_HAS(error_of("{\"input_ids\": [5, 6], \"labels\": [6, 7]}"),
            "labels[0] = 6 is neither -100 nor input_ids[0] = 5");
}

TEST_CASE("tokens_bin: raw uint16/uint32 files with data.token_dtype, split at BOS",
          "[data][pretokenized]") {
  TempDir dir;
  const std::vector<uint16_t> ids16 = {1, 10, 11, 2, 1, 12, 2};
  const std::string path16 = dir.write("t16.bin", raw_tokens(ids16));
  const auto docs = read_documents(path16, DataFormat::auto_detect, ByteTokenizer(),
                                   with_dtype(TokenDtype::uint16));
  REQUIRE(docs.size() == 2);
  CHECK(docs[0].tokens == std::vector<int32_t>{1, 10, 11, 2});
  CHECK(docs[0].loss_mask == mask({0, 1, 1, 1}));
  CHECK(docs[1].tokens == std::vector<int32_t>{1, 12, 2});

  const std::vector<uint32_t> ids32 = {1, 200, 258, 2};
  const std::string path32 = dir.write("t32.bin", raw_tokens(ids32));
  const auto docs32 = read_documents(path32, DataFormat::tokens_bin, ByteTokenizer(),
                                     with_dtype(TokenDtype::uint32));
  REQUIRE(docs32.size() == 1);
  CHECK(docs32[0].tokens == std::vector<int32_t>{1, 200, 258, 2});

  SECTION("without a header the width must be given") {
    const std::string message = data_error_message(
        [&] { read_documents(path16, DataFormat::tokens_bin, ByteTokenizer()); });
    CHECK_HAS(message, path16);
    CHECK_HAS(message, "set data.token_dtype to uint16 or uint32");
  }
  SECTION("a size that is not a whole number of tokens") {
    const std::string odd = dir.write("odd.bin", raw_tokens(ids16) + "x");
    CHECK_HAS(data_error_message([&] {
                read_documents(odd, DataFormat::tokens_bin, ByteTokenizer(),
                               with_dtype(TokenDtype::uint16));
              }),
              "15 bytes of tokens is not a multiple of 2 (uint16)");
  }
  SECTION("a token id beyond the vocabulary names its byte offset") {
    const std::string bad = dir.write("bad.bin", raw_tokens(std::vector<uint16_t>{1, 10, 300, 2}));
    const std::string message = data_error_message([&] {
      read_documents(bad, DataFormat::tokens_bin, ByteTokenizer(), with_dtype(TokenDtype::uint16));
    });
    CHECK_HAS(message, bad +
                           ": at byte offset 4 (token 2): token id 300 is outside the tokenizer's "
                           "vocabulary [0, 259)");
    CHECK_HAS(message, "data.token_dtype");
  }
}

TEST_CASE("tokens_bin: an llm.c header gives the width and the count", "[data][pretokenized]") {
  TempDir dir;
  const std::vector<uint32_t> ids = {1, 5, 6, 2, 1, 7, 2};
  const std::string path = dir.write("llmc.bin", llmc_file(ids, 2));
  const auto docs = read_documents(path, DataFormat::tokens_bin, ByteTokenizer());
  REQUIRE(docs.size() == 2);
  CHECK(docs[1].tokens == std::vector<int32_t>{1, 7, 2});

  const std::string v1 = dir.write("v1.bin", llmc_file(std::vector<uint16_t>{1, 9, 2}, 1));
  CHECK(read_documents(v1, DataFormat::tokens_bin, ByteTokenizer())[0].tokens ==
        std::vector<int32_t>{1, 9, 2});

  CHECK_HAS(data_error_message([&] {
              read_documents(path, DataFormat::tokens_bin, ByteTokenizer(),
                             with_dtype(TokenDtype::uint16));
            }),
            "the llm.c header says uint32 tokens but data.token_dtype is uint16");
  const std::string truncated = dir.write("short.bin", llmc_file(ids, 2, 9));
  CHECK_HAS(data_error_message(
                [&] { read_documents(truncated, DataFormat::tokens_bin, ByteTokenizer()); }),
            "promises 9 tokens");
  // Offsets count the header too.
  const std::string bad = dir.write("badh.bin", llmc_file(std::vector<uint32_t>{1, 70000}, 2));
  CHECK_HAS(
      data_error_message([&] { read_documents(bad, DataFormat::tokens_bin, ByteTokenizer()); }),
      "at byte offset 1028 (token 1): token id 70000");
}

TEST_CASE("build_dataset checks pre-tokenized ids against the model's vocabulary too",
          "[data][pretokenized]") {
  TempDir dir;
  DataSpec spec;
  spec.files = {
      dir.write("t.bin", raw_tokens(std::vector<uint16_t>{1, 10, 11, 200, 2, 1, 12, 13, 2}))};
  spec.format = "tokens_bin";
  spec.token_dtype = "uint16";
  spec.seq_len = 4;
  spec.model_vocab_size = 259;
  const auto dataset = build_dataset(spec, ByteTokenizer());
  CHECK(dataset->num_documents() == 2);
  CHECK(dataset->num_windows() == 2);
  spec.model_vocab_size = 100;
  CHECK_HAS(data_error_message([&] { build_dataset(spec, ByteTokenizer()); }),
            "token id 200 is outside the model's vocabulary [0, 100)");
  spec.token_dtype = "int8";
  CHECK_HAS(data_error_message([&] { build_dataset(spec, ByteTokenizer()); }), "data.token_dtype");
}
