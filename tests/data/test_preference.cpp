// Preference pairs: which tokens are response targets (strings and chat
// message lists, explicit and implicit prompts), packing pairs into isolated
// rows, the loader's order, and the file:line errors.
#include "tests/catch.h"
#include "tests/data/data_test_helpers.h"

#include "data/packing.h"
#include "data/preference.h"

#include <map>

using namespace liger::data;
using namespace liger::data::testing;

namespace {

// ByteTokenizer plus chatml's two special tokens (ids 259, 260).
class ChatmlTokenizer : public ByteTokenizer {
 public:
  int32_t token_id(const std::string& token) const override {
    if (token == "<|im_start|>") return 259;
    if (token == "<|im_end|>") return 260;
    return -1;
  }
  int64_t vocab_size() const override { return 261; }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    for (const int32_t id : ids) {
      if (id == bos_id()) {
        text += "<bos>";
      } else if (id == eos_id()) {
        text += "</s>";
      } else if (id == 259) {
        text += "<|im_start|>";
      } else if (id == 260) {
        text += "<|im_end|>";
      } else {
        text += ByteTokenizer::decode({id});
      }
    }
    return text;
  }
};

// The document's text with the trained tokens between « and ».
std::string marked(const Document& doc, const Tokenizer& tok) {
  std::string out;
  bool open = false;
  for (size_t i = 0; i < doc.tokens.size(); ++i) {
    const bool train = doc.loss_mask[i] != 0;
    if (train != open) out += train ? "«" : "»";
    open = train;
    out += tok.decode({doc.tokens[i]});
  }
  if (open) out += "»";
  return out;
}

ReadOptions chatml_options() {
  ReadOptions options;
  options.chat_template = ChatTemplate::chatml;
  return options;
}

}  // namespace

TEST_CASE("preference pairs of strings: prompt as context, response and EOS as targets",
          "[preference]") {
  TempDir dir;
  const std::string path =
      dir.write("pairs.jsonl", R"({"prompt": "Q:", "chosen": "yes", "rejected": "no"})"
                               "\n\n"
                               R"({"prompt": "2+2=", "chosen": "4", "rejected": "five"})"
                               "\n");
  const ChatmlTokenizer tok;  // spells BOS and EOS out
  const auto pairs = read_preference_pairs(path, tok, ReadOptions{}, 64);
  REQUIRE(pairs.size() == 2);
  CHECK(marked(pairs[0].chosen, tok) == "<bos>Q:«yes</s>»");
  CHECK(marked(pairs[0].rejected, tok) == "<bos>Q:«no</s>»");
  CHECK(marked(pairs[1].rejected, tok) == "<bos>2+2=«five</s>»");
  CHECK(pairs[1].chosen.line == 3);
}

TEST_CASE("preference pairs of message lists: only the response's assistant turns are targets",
          "[preference]") {
  TempDir dir;
  const ChatmlTokenizer tok;
  SECTION("implicit prompt: the messages both lists start with, an assistant turn included") {
    const std::string path = dir.write(
        "pairs.jsonl",
        R"({"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"},)"
        R"( {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],)"
        R"( "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"},)"
        R"( {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]})"
        "\n");
    const auto pairs = read_preference_pairs(path, tok, chatml_options(), 256);
    REQUIRE(pairs.size() == 1);
    const std::string context =
        "<bos><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHey<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n";
    CHECK(marked(pairs[0].chosen, tok) == context + "«4<|im_end|>»\n");
    CHECK(marked(pairs[0].rejected, tok) == context + "«5<|im_end|>»\n");
  }
  SECTION("explicit prompt list") {
    const std::string path =
        dir.write("pairs.jsonl", R"({"prompt": [{"role": "user", "content": "Hi"}],)"
                                 R"( "chosen": [{"role": "assistant", "content": "Hello"}],)"
                                 R"( "rejected": [{"role": "assistant", "content": "Go away"}]})"
                                 "\n");
    const auto pairs = read_preference_pairs(path, tok, chatml_options(), 256);
    REQUIRE(pairs.size() == 1);
    CHECK(marked(pairs[0].chosen, tok) ==
          "<bos><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n«Hello<|im_end|>»\n");
    CHECK(marked(pairs[0].rejected, tok) ==
          "<bos><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n«Go away<|im_end|>»\n");
  }
}

TEST_CASE("preference data errors name file:line and the fix", "[preference]") {
  TempDir dir;
  const ByteTokenizer tok;
  auto error_of = [&](const std::string& content, int64_t seq_len = 64) {
    const std::string path = dir.write("bad.jsonl", content);
    return data_error_message([&] { read_preference_pairs(path, tok, ReadOptions{}, seq_len); });
  };
  const std::string good = R"({"prompt": "Q", "chosen": "a", "rejected": "b"})"
                           "\n";
  std::string message = error_of(good + R"({"prompt": "Q", "chosen": "a"})");
  INFO(message);
  CHECK(contains(message, "bad.jsonl:2: missing field \"rejected\""));
  message = error_of(good + good + R"({"prompt": "Q", "chosen": "", "rejected": "b"})");
  CHECK(contains(message, "bad.jsonl:3: the \"chosen\" response is an empty string"));
  message = error_of(R"({"chosen": [{"role": "user", "content": "Hi"}],)"
                     R"( "rejected": [{"role": "user", "content": "Hi"}]})");
  CHECK(contains(message, "bad.jsonl:1: the \"chosen\" response is empty"));
  message = error_of(R"({"chosen": "a", "rejected": "b"})");
  CHECK(contains(message, "bad.jsonl:1: missing field \"prompt\""));
  message = error_of(R"({"prompt": "a long prompt", "chosen": "a", "rejected": "b"})", 8);
  CHECK(contains(message,
                 "bad.jsonl:1: the \"chosen\" sequence (prompt + response) is 16 tokens "
                 "but data.seq_len = 8"));
  message = error_of(R"({"prompt": "Q", "chosen": "a", "rejected": 3})");
  CHECK(contains(message, "bad.jsonl:1: field \"rejected\" must be a string or a list"));
  message = error_of("{\"prompt\": \n");
  CHECK(contains(message, "bad.jsonl:1: not valid JSON"));
}

TEST_CASE("packing pairs: whole pairs, isolated sequences, labels only on responses",
          "[preference]") {
  TempDir dir;
  const ByteTokenizer tok;
  const std::string path =
      dir.write("pairs.jsonl", R"({"prompt": "Q", "chosen": "ab", "rejected": "c"})"
                               "\n"
                               R"({"prompt": "RS", "chosen": "d", "rejected": "efg"})"
                               "\n");
  const auto pairs = read_preference_pairs(path, tok, ReadOptions{}, 10);
  // Lengths: chosen 5 ([bos] Q a b [eos]) and 5 ([bos] R S d [eos]),
  // rejected 4 ([bos] Q c [eos]) and 7 ([bos] R S e f g [eos]).
  const PreferenceBatch batch = pack_preference_pairs({&pairs[0], &pairs[1]}, 10);
  CHECK(batch.num_pairs == 2);
  // First fit: row 0 = chosen 0 + chosen 1; row 1 = rejected 0 + 6 padding;
  // row 2 = rejected 1 + 3 padding.
  REQUIRE(batch.rows == 3);
  const std::vector<int64_t> sequence = {0, 0, 0, 0, 0,  1,  1,  1,  1,  1,  //
                                         2, 2, 2, 2, -1, -1, -1, -1, -1, -1,
                                         3, 3, 3, 3, 3,  3,  3,  -1, -1, -1};
  CHECK(batch.sequence == sequence);
  const std::vector<int64_t> positions = {0, 1, 2, 3, 4, 0, 1, 2, 3, 4,  //
                                          0, 1, 2, 3, 0, 1, 2, 3, 4, 5,  //
                                          0, 1, 2, 3, 4, 5, 6, 0, 1, 2};
  CHECK(batch.position_ids == positions);
  const std::vector<int64_t> documents = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1,  //
                                          0, 0, 0, 0, 1, 1, 1, 1, 1, 1,  //
                                          0, 0, 0, 0, 0, 0, 0, 1, 1, 1};
  CHECK(batch.document_ids == documents);
  CHECK(batch.rows_share_sequences);  // row 0 holds two sequences
  const auto id = [](char c) { return static_cast<int64_t>(ByteTokenizer::id(c)); };
  const int64_t x = kIgnoreIndex;
  // Each position predicts the next token of its own sequence where that is a response target.
  const std::vector<int64_t> labels = {x, id('a'), id('b'), 2,       x,       x, x, id('d'), 2, x,
                                       x, id('c'), 2,       x,       x,       x, x, x,       x, x,
                                       x, x,       id('e'), id('f'), id('g'), 2, x, x,       x, x};
  CHECK(batch.labels == labels);
  CHECK(batch.chosen_targets == 3 + 2);
  CHECK(batch.rejected_targets == 2 + 4);
  CHECK(batch.input_ids[0] == 1);   // BOS
  CHECK(batch.input_ids[15] == 0);  // padding
}

TEST_CASE("packing pairs: rows of one sequence need no document mask", "[preference]") {
  TempDir dir;
  const ByteTokenizer tok;
  const std::string path =
      dir.write("pairs.jsonl", R"({"prompt": "Q", "chosen": "ab", "rejected": "c"})"
                               "\n");
  const auto pairs = read_preference_pairs(path, tok, ReadOptions{}, 6);
  // chosen 5 tokens, rejected 4: no two fit in a row of 6.
  const PreferenceBatch batch = pack_preference_pairs({&pairs[0]}, 6);
  REQUIRE(batch.rows == 2);
  CHECK_FALSE(batch.rows_share_sequences);
  // The document ids are still filled: 0 for the sequence, 1 for its padding.
  const std::vector<int64_t> documents = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1};
  CHECK(batch.document_ids == documents);
}

TEST_CASE("the preference loader serves whole pairs in a seeded order and resumes",
          "[preference]") {
  TempDir dir;
  const ByteTokenizer tok;
  std::string lines;
  for (int i = 0; i < 5; ++i) {
    lines += R"({"prompt": "Q)" + std::to_string(i) +
             R"(", "chosen": "a", "rejected": "b"})"
             "\n";
  }
  const auto pairs = std::make_shared<const std::vector<PreferencePair>>(
      read_preference_pairs(dir.write("pairs.jsonl", lines), tok, ReadOptions{}, 16));
  PreferenceLoader loader(pairs, 2, 7, 16);
  CHECK(loader.batches_per_epoch() == 2);
  std::vector<PreferenceBatch> seen;
  for (int i = 0; i < 3; ++i) seen.push_back(loader.next());
  CHECK(loader.state().epoch == 1);
  CHECK(loader.state().position == 2);
  // A loader restored to the state after the first batch serves the same next ones.
  PreferenceLoader resumed(pairs, 2, 7, 16);
  resumed.restore({0, 2});
  CHECK(resumed.next().input_ids == seen[1].input_ids);
  CHECK(resumed.next().input_ids == seen[2].input_ids);
  CHECK(seen[0].num_pairs == 2);
  CHECK(seen[0].input_ids != seen[1].input_ids);
  CHECK(contains(data_error_message([&] { PreferenceLoader(pairs, 6, 7, 16); }),
                 "holds 5 pairs, fewer than training.micro_batch_size = 6"));
}
