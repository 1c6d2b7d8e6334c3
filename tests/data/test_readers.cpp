// Readers: formats, masks, auto detection and file:line errors.
#include "tests/catch.h"
#include "tests/data/data_test_helpers.h"

#include "data/readers.h"

using namespace liger::data;
using namespace liger::data::testing;

namespace {

// [1] ids(text) [2]
std::vector<int32_t> with_bos_eos(const std::string& text) {
  std::vector<int32_t> ids{1};
  for (const int32_t id : byte_ids(text)) ids.push_back(id);
  ids.push_back(2);
  return ids;
}

std::vector<uint8_t> mask(std::initializer_list<int> bits) {
  return std::vector<uint8_t>(bits.begin(), bits.end());
}

}  // namespace

TEST_CASE("a text file is one document whose tokens are all targets; BOS is not",
          "[data][readers]") {
  TempDir dir;
  const std::string path = dir.write("a.txt", "ab\nc");
  const ByteTokenizer tok;

  SECTION("BOS and EOS by default") {
    const auto docs = read_documents(path, DataFormat::text, tok);
    REQUIRE(docs.size() == 1);
    CHECK(docs[0].tokens == with_bos_eos("ab\nc"));
    CHECK(docs[0].loss_mask == mask({0, 1, 1, 1, 1, 1}));
    CHECK(docs[0].file == path);
    CHECK(docs[0].line == 1);
  }
  SECTION("without BOS and EOS") {
    const auto docs = read_documents(path, DataFormat::text, tok, ReadOptions{false, false});
    REQUIRE(docs.size() == 1);
    CHECK(docs[0].tokens == byte_ids("ab\nc"));
    CHECK(docs[0].loss_mask == mask({1, 1, 1, 1}));
  }
}

TEST_CASE("jsonl_text: one document per non-empty line, with its line number", "[data][readers]") {
  TempDir dir;
  const std::string path =
      dir.write("t.jsonl", "{\"text\": \"ab\", \"id\": 7}\n\n   \n{\"text\": \"c\"}\r\n");
  const auto docs = read_documents(path, DataFormat::jsonl_text, ByteTokenizer());
  REQUIRE(docs.size() == 2);
  CHECK(docs[0].tokens == with_bos_eos("ab"));
  CHECK(docs[0].loss_mask == mask({0, 1, 1, 1}));
  CHECK(docs[0].line == 1);
  CHECK(docs[1].tokens == with_bos_eos("c"));
  CHECK(docs[1].line == 4);
}

TEST_CASE("prompt_completion: prompt tokens are context, completion and EOS are targets",
          "[data][readers]") {
  TempDir dir;
  const std::string path = dir.write(
      "pc.jsonl",
      "{\"prompt\": \"Q?\", \"completion\": \"A\"}\n{\"prompt\": \"\", \"completion\": \"xy\"}\n");
  const ByteTokenizer tok;

  SECTION("default options") {
    const auto docs = read_documents(path, DataFormat::prompt_completion, tok);
    REQUIRE(docs.size() == 2);
    CHECK(docs[0].tokens == with_bos_eos("Q?A"));
    CHECK(docs[0].loss_mask == mask({0, 0, 0, 1, 1}));
    CHECK(docs[1].tokens == with_bos_eos("xy"));
    CHECK(docs[1].loss_mask == mask({0, 1, 1, 1}));
  }
  SECTION("without BOS") {
    const auto docs =
        read_documents(path, DataFormat::prompt_completion, tok, ReadOptions{false, true});
    CHECK(docs[0].tokens == std::vector<int32_t>{ByteTokenizer::id('Q'), ByteTokenizer::id('?'),
                                                 ByteTokenizer::id('A'), 2});
    CHECK(docs[0].loss_mask == mask({0, 0, 1, 1}));
  }
}

TEST_CASE("readers with SentencePiece give [BOS] encode(text) [EOS]", "[data][readers]") {
  TempDir dir;
  const auto tok = load_tokenizer(sample_model_path());
  const std::string path =
      dir.write("s.jsonl", "{\"text\": \"Now is the winter of our discontent\"}\n");
  const auto docs = read_documents(path, DataFormat::auto_detect, *tok);
  REQUIRE(docs.size() == 1);
  std::vector<int32_t> expected{1};
  for (const int32_t id : tok->encode("Now is the winter of our discontent"))
    expected.push_back(id);
  expected.push_back(2);
  CHECK(docs[0].tokens == expected);
}

TEST_CASE("auto picks the format from the extension and the first record", "[data][readers]") {
  TempDir dir;
  CHECK(detect_format(dir.write("a.txt", "{\"text\": \"still text\"}")) == DataFormat::text);
  CHECK(detect_format(dir.write("b.jsonl", "{\"text\": \"x\"}\n")) == DataFormat::jsonl_text);
  CHECK(detect_format(dir.write("c.jsonl", "\n\n{\"prompt\": \"p\", \"completion\": \"c\"}\n")) ==
        DataFormat::prompt_completion);
  // prompt + completion wins over text
  CHECK(detect_format(
            dir.write("d.json", "{\"text\": \"t\", \"prompt\": \"p\", \"completion\": \"c\"}")) ==
        DataFormat::prompt_completion);
  CHECK(detect_format(dir.write("E.JSONL", "{\"text\": \"x\"}")) == DataFormat::jsonl_text);

  // And read_documents with auto uses it.
  const auto docs = read_documents(dir.path("c.jsonl"), DataFormat::auto_detect, ByteTokenizer());
  REQUIRE(docs.size() == 1);
  CHECK(docs[0].loss_mask == mask({0, 0, 1, 1}));
  CHECK(docs[0].line == 3);
}

TEST_CASE("auto explains what it could not recognise", "[data][readers]") {
  TempDir dir;
  SECTION("unknown fields, named with file:line") {
    const std::string path = dir.write("x.jsonl", "\n{\"question\": \"q\", \"answer\": \"a\"}\n");
    const std::string message = data_error_message([&] { detect_format(path); });
    CHECK_HAS(message, path + ":2:");
    CHECK_HAS(message, "\"question\"");
    CHECK_HAS(message, "\"answer\"");
    CHECK_HAS(message, "\"text\"");
    CHECK_HAS(message, "\"prompt\" and \"completion\"");
    CHECK_HAS(message, "data.format");
  }
  SECTION("prompt without completion") {
    const std::string path = dir.write("y.jsonl", "{\"prompt\": \"q\"}\n");
    CHECK_HAS(data_error_message([&] { detect_format(path); }), path + ":1:");
  }
  SECTION("unknown extension") {
    const std::string path = dir.write("data.csv", "a,b\n");
    const std::string message = data_error_message([&] { detect_format(path); });
    CHECK_HAS(message, path + ":1:");
    CHECK_HAS(message, "'.csv'");
    CHECK_HAS(message, "data.format");
  }
  SECTION("pretty-printed JSON instead of JSON Lines") {
    const std::string path = dir.write("z.json", "[\n  {\"text\": \"a\"}\n]\n");
    const std::string message = data_error_message([&] { detect_format(path); });
    CHECK_HAS(message, path + ":1:");
    CHECK_HAS(message, "one complete object per line");
  }
}

TEST_CASE("parse_data_format knows the config spellings", "[data][readers]") {
  CHECK(parse_data_format("auto") == DataFormat::auto_detect);
  CHECK(parse_data_format("text") == DataFormat::text);
  CHECK(parse_data_format("jsonl_text") == DataFormat::jsonl_text);
  CHECK(parse_data_format("prompt_completion") == DataFormat::prompt_completion);
  for (const DataFormat f : {DataFormat::auto_detect, DataFormat::text, DataFormat::jsonl_text,
                             DataFormat::prompt_completion}) {
    CHECK(parse_data_format(data_format_name(f)) == f);
  }
  const std::string message = data_error_message([] { parse_data_format("csv"); });
  CHECK_HAS(message, "data.format");
  CHECK_HAS(message, "'csv'");
  CHECK_HAS(message, "prompt_completion");
}

TEST_CASE("reader errors name file:line and the fix", "[data][readers]") {
  TempDir dir;
  const ByteTokenizer tok;
  auto read = [&](const std::string& path, DataFormat format) {
    return data_error_message([&] { read_documents(path, format, tok); });
  };

  SECTION("missing file") {
    const std::string path = dir.path("missing.txt");
    const std::string message = read(path, DataFormat::auto_detect);
    CHECK_HAS(message, path + ":1:");
    CHECK_HAS(message, "no such file");
    CHECK_HAS(message, "data.train");
  }
  SECTION("a folder instead of a file") {
    const std::string message = read(dir.path(""), DataFormat::text);
    CHECK_HAS(message, "is a folder");
  }
  SECTION("empty text file") {
    const std::string path = dir.write("empty.txt", "");
    const std::string message = read(path, DataFormat::auto_detect);
    CHECK_HAS(message, path + ":1:");
    CHECK_HAS(message, "empty");
    CHECK_HAS(message, "no documents");
  }
  SECTION("JSONL file with only empty lines") {
    const std::string path = dir.write("blank.jsonl", "\n  \n\n");
    CHECK_HAS(read(path, DataFormat::jsonl_text), path + ":1:");
    CHECK_HAS(read(path, DataFormat::jsonl_text), "no documents");
    CHECK_HAS(read(path, DataFormat::auto_detect), "no documents");
  }
  SECTION("a line that is not JSON") {
    const std::string path =
        dir.write("bad.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": oops}\n");
    const std::string message = read(path, DataFormat::jsonl_text);
    CHECK_HAS(message, path + ":3:");
    CHECK_HAS(message, "not valid JSON");
    CHECK_HAS(message, "{\"text\": \"...\"}");
  }
  SECTION("a line that is JSON but not an object") {
    const std::string path = dir.write("arr.jsonl", "{\"text\": \"a\"}\n[1, 2]\n");
    const std::string message = read(path, DataFormat::jsonl_text);
    CHECK_HAS(message, path + ":2:");
    CHECK_HAS(message, "expected a JSON object, got array");
  }
  SECTION("missing field") {
    const std::string path =
        dir.write("pc.jsonl", "{\"prompt\": \"p\", \"completion\": \"c\"}\n{\"prompt\": \"p\"}\n");
    const std::string message = read(path, DataFormat::prompt_completion);
    CHECK_HAS(message, path + ":2:");
    CHECK_HAS(message, "missing field \"completion\"");
    CHECK_HAS(message, "the record has \"prompt\"");
  }
  SECTION("wrong field type") {
    const std::string path = dir.write("t.jsonl", "\n{\"text\": 42}\n");
    const std::string message = read(path, DataFormat::jsonl_text);
    CHECK_HAS(message, path + ":2:");
    CHECK_HAS(message, "field \"text\" must be a string, got number");
  }
}

TEST_CASE("readers tolerate a UTF-8 byte order mark and CRLF line ends", "[data][readers]") {
  TempDir dir;
  const std::string path =
      dir.write("bom.jsonl", "\xEF\xBB\xBF{\"text\": \"a\"}\r\n{\"text\": \"b\"}\r\n");
  CHECK(detect_format(path) == DataFormat::jsonl_text);
  const auto docs = read_documents(path, DataFormat::auto_detect, ByteTokenizer());
  REQUIRE(docs.size() == 2);
  CHECK(docs[0].tokens == with_bos_eos("a"));
  const auto text_docs =
      read_documents(dir.write("bom.txt", "\xEF\xBB\xBFhi"), DataFormat::text, ByteTokenizer());
  CHECK(text_docs[0].tokens == with_bos_eos("hi"));
}

TEST_CASE("a tokenizer without BOS cannot serve add_bos", "[data][readers]") {
  struct NoBos : ByteTokenizer {
    int32_t bos_id() const override { return -1; }
  };
  TempDir dir;
  const std::string path = dir.write("a.txt", "x");
  CHECK_HAS(data_error_message([&] { read_documents(path, DataFormat::text, NoBos()); }),
            "data.add_bos: false");
  CHECK(read_documents(path, DataFormat::text, NoBos(), ReadOptions{false, true})[0].tokens ==
        std::vector<int32_t>{ByteTokenizer::id('x'), 2});
}
