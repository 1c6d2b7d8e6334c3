// build_dataset: files of several formats into one packed dataset, with id checks.
#include "tests/catch.h"
#include "tests/data/data_test_helpers.h"

#include "data/dataset.h"
#include "data/loader.h"

using namespace liger::data;
using namespace liger::data::testing;

TEST_CASE("build_dataset reads every file in order with its own auto format", "[data][dataset]") {
  TempDir dir;
  DataSpec spec;
  spec.files = {dir.write("a.txt", "abc"),
                dir.write("b.jsonl", "{\"text\": \"de\"}\n{\"text\": \"f\"}\n"),
                dir.write("c.jsonl", "{\"prompt\": \"g\", \"completion\": \"h\"}\n")};
  spec.seq_len = 4;
  const auto data = build_dataset(spec, ByteTokenizer());
  // [1 a b c 2] [1 d e 2] [1 f 2] [1 g h 2]
  CHECK(data->num_documents() == 4);
  CHECK(data->num_tokens() == 5 + 4 + 3 + 4);
  CHECK(data->num_windows() == (16 - 1) / 4);
  CHECK(data->files() == spec.files);
  const auto& stream = data->stream();
  CHECK(stream.tokens[5] == 1);
  CHECK(stream.tokens[6] == ByteTokenizer::id('d'));
  CHECK(stream.loss_mask[13] == 0);  // the prompt "g"
  CHECK(stream.loss_mask[14] == 1);  // the completion "h"
}

TEST_CASE("build_dataset honours an explicit format and the BOS/EOS switches", "[data][dataset]") {
  TempDir dir;
  DataSpec spec;
  spec.files = {dir.write("notes.md", "abcdef")};
  spec.format = "text";
  spec.seq_len = 2;
  spec.add_bos = false;
  spec.add_eos = false;
  const auto data = build_dataset(spec, ByteTokenizer());
  CHECK(data->stream().tokens == byte_ids("abcdef"));
}

TEST_CASE("build_dataset rejects token ids outside the vocabulary, naming file:line",
          "[data][dataset]") {
  // Claims a vocabulary of 100 but emits byte ids up to 258.
  struct TooSmallVocab : ByteTokenizer {
    int64_t vocab_size() const override { return 100; }
  };
  TempDir dir;
  DataSpec spec;
  spec.files = {dir.write("t.jsonl", "{\"text\": \"\"}\n{\"text\": \"~\"}\n")};  // '~' -> 129
  spec.seq_len = 1;

  const std::string message = data_error_message([&] { build_dataset(spec, TooSmallVocab()); });
  CHECK_HAS(message, spec.files[0] + ":2:");
  CHECK_HAS(message, "token id 129");
  CHECK_HAS(message, "[0, 100)");

  // The model's vocabulary, when smaller than the tokenizer's, is the limit.
  spec.model_vocab_size = 50;
  const std::string model_message =
      data_error_message([&] { build_dataset(spec, ByteTokenizer()); });
  CHECK_HAS(model_message, "model's vocabulary [0, 50)");
}

TEST_CASE("build_dataset checks its spec", "[data][dataset]") {
  TempDir dir;
  DataSpec spec;
  spec.seq_len = 4;
  CHECK_HAS(data_error_message([&] { build_dataset(spec, ByteTokenizer()); }),
            "data.train lists no files");
  spec.files = {dir.write("a.txt", "abcdefgh")};
  spec.format = "parquet";
  CHECK_HAS(data_error_message([&] { build_dataset(spec, ByteTokenizer()); }), "data.format");
  spec.format = "auto";
  spec.seq_len = 0;
  CHECK_HAS(data_error_message([&] { build_dataset(spec, ByteTokenizer()); }), "data.seq_len");
  spec.seq_len = 64;
  const std::string message = data_error_message([&] { build_dataset(spec, ByteTokenizer()); });
  CHECK_HAS(message, spec.files[0]);
  CHECK_HAS(message, "10 tokens");
}

TEST_CASE("a slice of Shakespeare with the sample tokenizer makes batches end to end",
          "[data][dataset]") {
  TempDir dir;
  const auto tok = load_tokenizer(sample_model_path());
  DataSpec spec;
  spec.files = {dir.write("slice.txt", read_file(sample_text_path()).substr(0, 20000))};
  spec.seq_len = 128;
  const auto data = build_dataset(spec, *tok);
  CHECK(data->num_documents() == 1);
  CHECK(data->num_windows() > 10);
  CHECK(tok->decode(std::vector<int32_t>(data->stream().tokens.begin() + 1,
                                         data->stream().tokens.end() - 1)) ==
        read_file(spec.files[0]));

  DataLoader loader(data, LoaderOptions{4, 1234, 0, 1});
  const Batch batch = loader.next();
  CHECK(batch.batch_size == 4);
  CHECK(batch.seq_len == 128);
  CHECK(batch.input_ids.size() == 4 * 128);
  CHECK(batch.num_target_tokens() > 0);
}

TEST_CASE("data.packing reaches the dataset; isolated batches restart positions",
          "[data][dataset]") {
  TempDir dir;
  DataSpec spec;
  spec.files = {
      dir.write("t.jsonl", "{\"text\": \"ab\"}\n{\"text\": \"cde\"}\n{\"text\": \"f\"}\n")};
  spec.seq_len = 8;  // stream: B a b E | B c d e E | B f E  (12 tokens), one window
  spec.packing = "isolated";
  const auto data = build_dataset(spec, ByteTokenizer());
  CHECK(data->packing() == PackingMode::isolated);
  const Batch batch = batch_of_windows(*data, 0, 1);
  CHECK(batch.position_ids == std::vector<int64_t>{0, 1, 2, 3, 0, 1, 2, 3});
  CHECK(batch.document_ids == std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1});
  spec.packing = "cross_document";
  CHECK(batch_of_windows(*build_dataset(spec, ByteTokenizer()), 0, 1).position_ids ==
        std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7});
  spec.packing = "diagonal";
  CHECK_HAS(data_error_message([&] { build_dataset(spec, ByteTokenizer()); }), "data.packing");
}

TEST_CASE("hold_out_windows keeps the last windows for evaluation", "[data][dataset]") {
  TempDir dir;
  DataSpec spec;
  spec.files = {dir.write("a.txt", std::string(41, 'x'))};  // B + 41 + E = 43 tokens
  spec.seq_len = 4;                                         // 10 windows
  const auto data = build_dataset(spec, ByteTokenizer());
  REQUIRE(data->num_windows() == 10);
  const auto [train, eval] = hold_out_windows(data, 0.25);  // ceil(2.5) = 3
  CHECK(train->num_windows() == 7);
  CHECK(eval->num_windows() == 3);
  CHECK(batch_of_windows(*eval, 0, 3).input_ids == batch_of_windows(*data, 7, 3).input_ids);
  CHECK(batch_of_windows(*train, 0, 7).labels == batch_of_windows(*data, 0, 7).labels);
  CHECK(hold_out_windows(data, 0.01).second->num_windows() == 1);  // at least one window
  CHECK_HAS(data_error_message([&] { hold_out_windows(data, 0.95); }), "leaves no training window");
  CHECK_HAS(data_error_message([&] { hold_out_windows(data, 0.0); }), "data.eval_fraction");
  CHECK_THROWS_AS(batch_of_windows(*eval, 2, 2), std::out_of_range);
}
