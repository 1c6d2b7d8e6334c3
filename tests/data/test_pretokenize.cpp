// pretokenize and the tokens_bin writer: the file it writes reads back, through
// the trainer's own dataset builder, as exactly the stream (tokens, loss mask,
// document starts) built from the source files; the id width follows the
// vocabulary; the thread count does not change a byte; the mask companion is
// tied to its token file; errors name the file and leave no output behind.
#include "tests/catch.h"
#include "tests/data/data_test_helpers.h"

#include "data/dataset.h"
#include "data/pretokenize.h"
#include "data/pretokenize_progress.h"
#include "data/token_bin_format.h"
#include "data/token_bin_writer.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <sstream>

using namespace liger::data;
using namespace liger::data::testing;

namespace {

namespace fs = std::filesystem;

// ByteTokenizer with a larger vocabulary (ids past 258 only come from tokens_jsonl).
class WideTokenizer : public ByteTokenizer {
 public:
  explicit WideTokenizer(int64_t vocab) : vocab_(vocab) {}
  int64_t vocab_size() const override { return vocab_; }

 private:
  int64_t vocab_;
};

// The packed stream build_dataset makes of `files` (as the trainer does).
std::shared_ptr<const PackedDataset> dataset_of(const std::vector<std::string>& files,
                                                const Tokenizer& tokenizer,
                                                const ReadOptions& read = {},
                                                const std::string& packing = "cross_document") {
  DataSpec spec;
  spec.files = files;
  spec.seq_len = 4;
  spec.packing = packing;
  spec.add_bos = read.add_bos;
  spec.add_eos = read.add_eos;
  spec.chat_template = chat_template_name(read.chat_template);
  return build_dataset(spec, tokenizer);
}

// Every window's rows (inputs, labels, positions, documents), flattened.
std::vector<int64_t> all_windows(const PackedDataset& dataset) {
  const int64_t n = dataset.seq_len();
  std::vector<int64_t> rows(static_cast<size_t>(dataset.num_windows() * 4 * n));
  for (int64_t w = 0; w < dataset.num_windows(); ++w) {
    int64_t* at = rows.data() + w * 4 * n;
    dataset.fill_window(w, WindowRows{at, at + n, at + 2 * n, at + 3 * n});
  }
  return rows;
}

// The bin read back must be the source's stream, token for token.
void check_same_stream(const PackedDataset& from_source, const PackedDataset& from_bin) {
  CHECK(from_bin.stream().tokens == from_source.stream().tokens);
  CHECK(from_bin.stream().loss_mask == from_source.stream().loss_mask);
  CHECK(from_bin.stream().doc_starts == from_source.stream().doc_starts);
  CHECK(all_windows(from_bin) == all_windows(from_source));
}

PretokenizeOptions options_for(const std::vector<std::string>& files, const ReadOptions& read = {},
                               int threads = 1) {
  PretokenizeOptions options;
  options.files = files;
  options.read = read;
  options.threads = threads;
  return options;
}

std::vector<int32_t> header_of(const std::string& path) {
  const std::string bytes = read_file(path);
  std::vector<int32_t> header(token_bin::kHeaderInts);
  REQUIRE(bytes.size() >= static_cast<size_t>(token_bin::kHeaderBytes));
  std::memcpy(header.data(), bytes.data(), token_bin::kHeaderBytes);
  return header;
}

bool exists(const std::string& path) {
  return fs::exists(path);
}

// Lines of prompt_completion data with lengths that vary line by line.
std::string prompt_completion_lines(int count) {
  std::string text;
  for (int i = 0; i < count; ++i) {
    text += "{\"prompt\": \"Q" + std::to_string(i) + std::string(static_cast<size_t>(i % 7), '?') +
            "\", \"completion\": \"A" + std::string(static_cast<size_t>(1 + i % 11), 'a') + "\"}\n";
    if (i % 5 == 0) text += "\n";  // blank lines are skipped
  }
  return text;
}

const char* const kChatLines =
    R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})"
    "\n"
    R"({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2"}, {"role": "assistant", "content": "4"}]})"
    "\n";

}  // namespace

TEST_CASE("pretokenize: the sample text read back as the trainer reads the text",
          "[data][pretokenize]") {
  TempDir dir;
  const auto tokenizer = load_tokenizer(sample_model_path());
  const std::string out = dir.path("shakespeare.bin");
  const TokenBinSummary summary = pretokenize(*tokenizer, options_for({sample_text_path()}), out);
  CHECK(summary.mask_path.empty());  // text: the ids alone say it all
  CHECK_FALSE(exists(out + ".mask"));
  CHECK(summary.dtype == TokenDtype::uint16);  // vocab 1024
  const auto header = header_of(out);
  CHECK(header[0] == token_bin::kTokensMagic);
  CHECK(header[1] == token_bin::kTokensVersionUint16);
  CHECK(header[2] == summary.tokens);
  CHECK(fs::file_size(out) == static_cast<uintmax_t>(token_bin::kHeaderBytes + 2 * summary.tokens));

  const auto from_text = dataset_of({sample_text_path()}, *tokenizer);
  const auto from_bin = dataset_of({out}, *tokenizer);
  CHECK(summary.tokens == from_text->num_tokens());
  check_same_stream(*from_text, *from_bin);
}

TEST_CASE("pretokenize: prompt_completion, chat, JSONL text and text files in one .bin",
          "[data][pretokenize]") {
  TempDir dir;
  const ByteTokenizer tokenizer;
  const std::vector<std::string> files = {
      dir.write("pc.jsonl", prompt_completion_lines(20)),
      dir.write("chat.jsonl", kChatLines),
      dir.write("plain.jsonl", "{\"text\": \"one\"}\n{\"text\": \"two\"}\n"),
      dir.write("story.txt", "Once upon a time.\n"),
      dir.write("ids.jsonl", "{\"input_ids\": [1, 40, 41, 2], \"labels\": [-100, -100, 41, 2]}\n"),
  };
  ReadOptions read;
  read.chat_template = ChatTemplate::mistral;  // ByteTokenizer: [INST] markers as text

  for (const std::string packing : {"cross_document", "isolated"}) {
    SECTION(packing) {
      const std::string out = dir.path("mixed.bin");
      const TokenBinSummary summary = pretokenize(tokenizer, options_for(files, read, 3), out);
      CHECK(summary.mask_path == out + ".mask");  // prompts and chat turns are not targets
      CHECK(exists(out + ".mask"));
      check_same_stream(*dataset_of(files, tokenizer, read, packing),
                        *dataset_of({out}, tokenizer, read, packing));
    }
  }

  SECTION("text without BOS: the document starts need the mask file") {
    read.add_bos = false;
    const std::vector<std::string> texts = {dir.write("a.txt", "first"),
                                            dir.write("b.txt", "second")};
    const std::string out = dir.path("texts.bin");
    const TokenBinSummary summary = pretokenize(tokenizer, options_for(texts, read), out);
    CHECK_FALSE(summary.mask_path.empty());
    check_same_stream(*dataset_of(texts, tokenizer, read, "isolated"),
                      *dataset_of({out}, tokenizer, read, "isolated"));
    // Without the mask file the reader would see one document.
    fs::remove(out + ".mask");
    CHECK(dataset_of({out}, tokenizer, read)->stream().doc_starts == std::vector<int64_t>{0});
  }
}

TEST_CASE("pretokenize: uint16 up to a vocabulary of 65536, uint32 past it",
          "[data][pretokenize]") {
  CHECK(token_dtype_for_vocab(1024) == TokenDtype::uint16);
  CHECK(token_dtype_for_vocab(65536) == TokenDtype::uint16);
  CHECK(token_dtype_for_vocab(65537) == TokenDtype::uint32);

  TempDir dir;
  // The largest id each vocabulary has, between ordinary ones.
  for (const int64_t vocab : {int64_t{65536}, int64_t{65537}, int64_t{200000}}) {
    const WideTokenizer tokenizer(vocab);
    const std::string top = std::to_string(vocab - 1);
    const std::string ids =
        dir.write("ids.jsonl", "{\"input_ids\": [1, 40, " + top + ", 41, 2, 65535, 3]}\n");
    const std::string out = dir.path("ids.bin");
    const TokenBinSummary summary = pretokenize(tokenizer, options_for({ids}), out);
    const bool wide = vocab > 65536;
    CHECK(summary.dtype == (wide ? TokenDtype::uint32 : TokenDtype::uint16));
    CHECK(header_of(out)[1] ==
          (wide ? token_bin::kTokensVersionUint32 : token_bin::kTokensVersionUint16));
    CHECK(fs::file_size(out) ==
          static_cast<uintmax_t>(token_bin::kHeaderBytes + 7 * (wide ? 4 : 2)));
    CHECK(dataset_of({out}, tokenizer)->stream().tokens ==
          std::vector<int32_t>{1, 40, static_cast<int32_t>(vocab - 1), 41, 2, 65535, 3});
  }
}

TEST_CASE("pretokenize: the thread count does not change a byte", "[data][pretokenize]") {
  TempDir dir;
  const std::vector<std::string> files = {
      dir.write("pc.jsonl", prompt_completion_lines(300)), dir.write("a.txt", "alpha beta"),
      dir.write("chat.jsonl", kChatLines), dir.write("b.txt", "gamma")};
  ReadOptions read;
  read.chat_template = ChatTemplate::mistral;
  // The byte tokenizer, and SentencePiece (the sample) on several threads at once.
  const ByteTokenizer bytes;
  const auto sample = load_tokenizer(sample_model_path());
  const std::vector<const Tokenizer*> tokenizers = {&bytes, sample.get()};
  for (const Tokenizer* tokenizer : tokenizers) {
    INFO(tokenizer->describe());
    std::string bin_one, mask_one;
    for (const int threads : {1, 2, 3, 8}) {
      PretokenizeOptions options = options_for(files, read, threads);
      options.batch_documents = 7;  // many batches, a text file inside some of them
      const std::string out = dir.path("t" + std::to_string(threads) + ".bin");
      pretokenize(*tokenizer, options, out);
      if (threads == 1) {
        bin_one = read_file(out);
        mask_one = read_file(out + ".mask");
        continue;
      }
      INFO("threads " << threads);
      CHECK(read_file(out) == bin_one);
      CHECK(read_file(out + ".mask") == mask_one);
    }
    // And the batch size neither.
    PretokenizeOptions one_batch = options_for(files, read, 4);
    one_batch.batch_documents = 1 << 20;
    pretokenize(*tokenizer, one_batch, dir.path("big.bin"));
    CHECK(read_file(dir.path("big.bin")) == bin_one);
  }
}

TEST_CASE("tokens_bin mask file: belongs to its token file; a stale one is removed",
          "[data][pretokenize]") {
  TempDir dir;
  const ByteTokenizer tokenizer;
  const std::string pc = dir.write("pc.jsonl", prompt_completion_lines(10));
  const std::string out = dir.path("d.bin");
  pretokenize(tokenizer, options_for({pc}), out);
  REQUIRE(exists(out + ".mask"));
  const std::string bin = read_file(out);

  SECTION("other ids, same count: rejected") {
    std::string changed = bin;
    changed[token_bin::kHeaderBytes + 2] ^= 1;  // the second token's low byte
    dir.write("d.bin", changed);
    CHECK_HAS(data_error_message([&] { dataset_of({out}, tokenizer); }),
              "d.bin.mask: was written for other tokens than those of");
  }
  SECTION("another count: rejected") {
    const std::string mask = read_file(out + ".mask");
    dir.write("d.bin.mask", mask.substr(0, mask.size() - 1));
    CHECK_HAS(data_error_message([&] { dataset_of({out}, tokenizer); }),
              "the two files do not belong together");
  }
  SECTION("not a mask file: rejected") {
    dir.write("d.bin.mask", "hello");
    CHECK_HAS(data_error_message([&] { dataset_of({out}, tokenizer); }),
              "not a loss-mask file of liger-tokenize");
  }
  SECTION("rewritten from text: the old mask goes") {
    const std::string text = dir.write("t.txt", "plain text");
    const TokenBinSummary summary = pretokenize(tokenizer, options_for({text}), out);
    CHECK(summary.mask_path.empty());
    CHECK_FALSE(exists(out + ".mask"));
    check_same_stream(*dataset_of({text}, tokenizer), *dataset_of({out}, tokenizer));
  }
}

TEST_CASE("pretokenize errors name the file and leave nothing behind", "[data][pretokenize]") {
  TempDir dir;
  const ByteTokenizer tokenizer;
  const std::string good = dir.write("good.txt", "some text");
  const std::string out = dir.path("out.bin");
  // The message; and nothing written: no output, no temporary file.
  auto error_of = [&](const PretokenizeOptions& options, const std::string& target) {
    const std::string message =
        data_error_message([&] { pretokenize(tokenizer, options, target); });
    CHECK_FALSE(exists(target));
    for (const auto& entry : fs::directory_iterator(fs::path(good).parent_path())) {
      INFO(entry.path().string());
      CHECK(entry.path().string().find(".tmp-") == std::string::npos);
    }
    return message;
  };

  CHECK_HAS(error_of(options_for({good, dir.path("nope.txt")}), out),
            dir.path("nope.txt") + ":1: no such input file");

  const std::string csv = dir.write("table.csv", "a,b\n");
  CHECK_HAS(error_of(options_for({good, csv}), out),
            "table.csv:1: format auto cannot tell the format from the extension '.csv'");

  CHECK_HAS(error_of(options_for({good}), dir.path("no/such/folder/out.bin")),
            "no/such/folder/out.bin: cannot be written");

  // Malformed lines 5 and 250, 4 threads: the first in input order is reported.
  std::istringstream lines(prompt_completion_lines(300));
  std::string line, broken;
  for (int no = 1; std::getline(lines, line); ++no) {
    broken += (no == 5 || no == 250 ? "{oops" : line) + "\n";
  }
  const std::string bad = dir.write("bad.jsonl", broken);
  PretokenizeOptions options = options_for({bad}, {}, 4);
  options.format = DataFormat::prompt_completion;
  options.batch_documents = 16;
  CHECK_HAS(error_of(options, out), "bad.jsonl:5: not valid JSON");

  CHECK_HAS(data_error_message([&] { pretokenize(tokenizer, options_for({good}), dir.path("")); }),
            "is a folder; give the output file's name");
}

TEST_CASE("progress line: redrawn on a terminal, whole lines elsewhere", "[data][pretokenize]") {
  PretokenizeProgress progress;
  progress.documents = 1234;
  progress.tokens = 2500000;
  progress.bytes_read = 50;
  progress.total_bytes = 200;
  progress.seconds = 2.0;
  progress.file = "a.jsonl";
  CHECK(describe_progress(progress) ==
        "25% of 0.0 MB, 1,234 documents, 2,500,000 tokens, 1,250,000 tokens/s (a.jsonl)");

  std::ostringstream log;
  ProgressLine in_log(log, /*terminal=*/false, /*interval_s=*/5.0);
  in_log.update(progress);  // 2 s: not yet
  progress.seconds = 6.0;
  in_log.update(progress);
  progress.seconds = 7.0;
  in_log.update(progress);  // 1 s after the last line: skipped
  progress.seconds = 11.5;
  in_log.update(progress);
  in_log.finish();
  const std::string logged = log.str();
  CHECK(logged.find('\r') == std::string::npos);
  CHECK(std::count(logged.begin(), logged.end(), '\n') == 2);

  std::ostringstream terminal;
  ProgressLine on_terminal(terminal, /*terminal=*/true, /*interval_s=*/0.0);
  on_terminal.update(progress);
  on_terminal.update(progress);
  on_terminal.finish();
  const std::string drawn = terminal.str();
  CHECK(std::count(drawn.begin(), drawn.end(), '\r') == 2);
  CHECK(std::count(drawn.begin(), drawn.end(), '\n') == 1);
}
