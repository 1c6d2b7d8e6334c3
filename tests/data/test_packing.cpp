// Packing: windows of seq_len + 1 tokens, stride seq_len, labels masked by the loss mask.
#include "tests/catch.h"
#include "tests/data/data_test_helpers.h"

#include "data/packing.h"

using namespace liger::data;
using namespace liger::data::testing;

namespace {

Document make_doc(std::vector<int32_t> tokens, std::vector<uint8_t> loss_mask) {
  Document doc;
  doc.tokens = std::move(tokens);
  doc.loss_mask = std::move(loss_mask);
  return doc;
}

struct Window {
  std::vector<int64_t> input_ids, labels;
};

Window window(const PackedDataset& data, int64_t index) {
  Window w{std::vector<int64_t>(data.seq_len()), std::vector<int64_t>(data.seq_len())};
  data.fill_window(index, w.input_ids.data(), w.labels.data());
  return w;
}

constexpr int64_t X = kIgnoreIndex;

}  // namespace

TEST_CASE("windows overlap by one token and labels are the next token where it is a target",
          "[data][packing]") {
  // doc 1: BOS 10 11 12 EOS   doc 2 (prompt 20, completion 21): BOS 20 21 EOS
  const std::vector<Document> docs{make_doc({1, 10, 11, 12, 2}, {0, 1, 1, 1, 1}),
                                   make_doc({1, 20, 21, 2}, {0, 0, 1, 1})};
  // stream: 1 10 11 12 2 | 1 20 21 2   (9 tokens)
  const PackedDataset data = pack_documents(docs, 4, {"mem"});
  CHECK(data.num_tokens() == 9);
  CHECK(data.num_documents() == 2);
  REQUIRE(data.num_windows() == 2);  // (9 - 1) / 4

  const Window w0 = window(data, 0);
  CHECK(w0.input_ids == std::vector<int64_t>{1, 10, 11, 12});
  CHECK(w0.labels == std::vector<int64_t>{10, 11, 12, 2});

  // The BOS of doc 2 is never a target; its prompt token 20 is not either.
  const Window w1 = window(data, 1);
  CHECK(w1.input_ids == std::vector<int64_t>{2, 1, 20, 21});
  CHECK(w1.labels == std::vector<int64_t>{X, X, 21, 2});
}

TEST_CASE("the last partial window is dropped", "[data][packing]") {
  const std::vector<Document> docs{
      make_doc({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, std::vector<uint8_t>(10, 1))};
  CHECK(pack_documents(docs, 3, {"mem"}).num_windows() == 3);  // starts 0, 3, 6; 6..9 fits
  CHECK(pack_documents(docs, 4, {"mem"}).num_windows() == 2);  // starts 0, 4; 8..12 does not fit
  CHECK(pack_documents(docs, 9, {"mem"}).num_windows() == 1);  // exactly seq_len + 1 tokens
  const PackedDataset data = pack_documents(docs, 4, {"mem"});
  CHECK(window(data, 1).input_ids == std::vector<int64_t>{5, 6, 7, 8});
  CHECK(window(data, 1).labels == std::vector<int64_t>{6, 7, 8, 9});
  CHECK_THROWS_AS(window(data, 2), std::out_of_range);
  CHECK_THROWS_AS(window(data, -1), std::out_of_range);
}

TEST_CASE("too little data for one window names the files, the count and the fix",
          "[data][packing]") {
  const std::vector<Document> docs{make_doc({1, 2, 3, 4, 5}, std::vector<uint8_t>(5, 1))};
  const std::string message = data_error_message([&] {
    pack_documents(docs, 8, {"a.txt", "b.jsonl"});
  });
  CHECK_HAS(message, "a.txt, b.jsonl");
  CHECK_HAS(message, "5 tokens");
  CHECK_HAS(message, "9");  // seq_len + 1
  CHECK_HAS(message, "smaller data.seq_len (at most 4)");

  CHECK_HAS(data_error_message([&] { pack_documents(docs, 0, {"a.txt"}); }),
            "data.seq_len must be at least 1");
}

TEST_CASE("describe_files shortens long file lists", "[data][packing]") {
  const std::vector<Document> docs{make_doc({1, 2, 3}, {1, 1, 1})};
  CHECK(pack_documents(docs, 1, {"a", "b", "c", "d", "e"}).describe_files() ==
        "a, b, c and 2 more");
}

namespace {

struct FullWindow {
  std::vector<int64_t> input_ids, labels, position_ids, document_ids;
};

FullWindow full_window(const PackedDataset& data, int64_t index) {
  const auto n = static_cast<size_t>(data.seq_len());
  FullWindow w{std::vector<int64_t>(n), std::vector<int64_t>(n), std::vector<int64_t>(n),
               std::vector<int64_t>(n)};
  data.fill_window(index, WindowRows{w.input_ids.data(), w.labels.data(), w.position_ids.data(),
                                     w.document_ids.data()});
  return w;
}

// doc A: BOS 10 11 EOS   doc B: BOS 20 EOS   doc C: BOS 30 31 32 33 EOS, without BOS/EOS where
// asked.
std::vector<Document> three_docs(bool with_bos) {
  auto doc = [&](std::vector<int32_t> body) {
    std::vector<int32_t> tokens;
    std::vector<uint8_t> mask;
    if (with_bos) {
      tokens.push_back(1);
      mask.push_back(0);
    }
    for (const int32_t t : body) {
      tokens.push_back(t);
      mask.push_back(1);
    }
    tokens.push_back(2);
    mask.push_back(1);
    return make_doc(tokens, mask);
  };
  return {doc({10, 11}), doc({20}), doc({30, 31, 32, 33})};
}

}  // namespace

TEST_CASE("windows carry document ids and position ids that restart per document",
          "[data][packing]") {
  // stream: 1 10 11 2 | 1 20 2 | 1 30 31 32 33 2   (14 tokens), windows of 6: starts 0, 6
  SECTION("cross_document: positions run 0..T-1, labels cross documents") {
    const PackedDataset data = pack_documents(three_docs(true), 6, {"mem"});
    CHECK(data.packing() == PackingMode::cross_document);
    const FullWindow w = full_window(data, 0);
    CHECK(w.input_ids == std::vector<int64_t>{1, 10, 11, 2, 1, 20});
    CHECK(w.document_ids == std::vector<int64_t>{0, 0, 0, 0, 1, 1});
    CHECK(w.position_ids == std::vector<int64_t>{0, 1, 2, 3, 4, 5});
    CHECK(w.labels == std::vector<int64_t>{10, 11, 2, X, 20, 2});
  }
  SECTION("isolated: positions restart at each document start") {
    const PackedDataset data = pack_documents(three_docs(true), 6, {"mem"}, PackingMode::isolated);
    const FullWindow w0 = full_window(data, 0);
    CHECK(w0.document_ids == std::vector<int64_t>{0, 0, 0, 0, 1, 1});
    CHECK(w0.position_ids == std::vector<int64_t>{0, 1, 2, 3, 0, 1});
    CHECK(w0.labels == std::vector<int64_t>{10, 11, 2, X, 20, 2});
    // Window 1 starts inside doc B (at its EOS): that piece counts from 0.
    const FullWindow w1 = full_window(data, 1);
    CHECK(w1.input_ids == std::vector<int64_t>{2, 1, 30, 31, 32, 33});
    CHECK(w1.document_ids == std::vector<int64_t>{0, 1, 1, 1, 1, 1});
    CHECK(w1.position_ids == std::vector<int64_t>{0, 0, 1, 2, 3, 4});
    CHECK(w1.labels == std::vector<int64_t>{X, 30, 31, 32, 33, 2});
  }
  SECTION("isolated without BOS: a document's last token does not predict the next document") {
    // stream: 10 11 2 | 20 2 | 30 31 32 33 2
    const PackedDataset cross = pack_documents(three_docs(false), 5, {"mem"});
    const PackedDataset isolated =
        pack_documents(three_docs(false), 5, {"mem"}, PackingMode::isolated);
    CHECK(full_window(cross, 0).labels == std::vector<int64_t>{11, 2, 20, 2, 30});
    const FullWindow w = full_window(isolated, 0);
    CHECK(w.labels == std::vector<int64_t>{11, 2, X, 2, X});
    CHECK(w.position_ids == std::vector<int64_t>{0, 1, 2, 0, 1});
    CHECK(w.document_ids == std::vector<int64_t>{0, 0, 0, 1, 1});
  }
  CHECK(parse_packing_mode("isolated") == PackingMode::isolated);
  CHECK_HAS(data_error_message([] { parse_packing_mode("block"); }), "cross_document, isolated");
}

TEST_CASE("windows(first, count) is a view sharing the stream", "[data][packing]") {
  const std::vector<Document> docs{
      make_doc({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, std::vector<uint8_t>(10, 1))};
  const PackedDataset data = pack_documents(docs, 3, {"mem"});  // 3 windows
  const PackedDataset tail = data.windows(1, 2);
  CHECK(tail.num_windows() == 2);
  CHECK(&tail.stream() == &data.stream());
  CHECK(window(tail, 0).input_ids == window(data, 1).input_ids);
  CHECK(window(tail, 1).labels == window(data, 2).labels);
  CHECK_THROWS_AS(data.windows(2, 2), std::out_of_range);
  CHECK_THROWS_AS(window(tail, 2), std::out_of_range);
}
