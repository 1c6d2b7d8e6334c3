// Chat SFT: the rendered strings of each template, which tokens carry loss
// (shown between « and »), and the file:line errors of bad conversations.
#include "tests/catch.h"
#include "tests/data/data_test_helpers.h"

#include "data/chat.h"
#include "data/hf_tokenizer.h"
#include "data/readers.h"

#include <map>
#include <nlohmann/json.hpp>

using namespace liger::data;
using namespace liger::data::testing;

namespace {

// ByteTokenizer plus the special tokens of the chat templates it is given
// (ids from 259); encode() never produces them, as with a real tokenizer's
// control tokens.
class ChatTokenizer : public ByteTokenizer {
 public:
  explicit ChatTokenizer(std::vector<std::string> specials) {
    for (auto& name : specials)
      specials_.emplace(name, 259 + static_cast<int32_t>(specials_.size()));
  }
  static ChatTokenizer llama3() {
    return ChatTokenizer({"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"});
  }
  static ChatTokenizer gemma() { return ChatTokenizer({"<start_of_turn>", "<end_of_turn>"}); }
  static ChatTokenizer mistral() { return ChatTokenizer({"[INST]", "[/INST]"}); }
  static ChatTokenizer chatml() { return ChatTokenizer({"<|im_start|>", "<|im_end|>"}); }

  int32_t token_id(const std::string& token) const override {
    const auto it = specials_.find(token);
    return it == specials_.end() ? -1 : it->second;
  }
  int64_t vocab_size() const override { return 259 + static_cast<int64_t>(specials_.size()); }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string text;
    for (const int32_t id : ids) {
      if (id == bos_id())
        text += "<bos>";
      else if (id == eos_id())
        text += "</s>";
      else if (id >= 259)
        text += name_of(id);
      else
        text += ByteTokenizer::decode({id});
    }
    return text;
  }

 private:
  std::string name_of(int32_t id) const {
    for (const auto& [name, value] : specials_) {
      if (value == id) return name;
    }
    return "?";
  }
  std::map<std::string, int32_t> specials_;
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

std::vector<ChatMessage> conversation() {
  return {{"system", "Be brief."},
          {"user", "Hi"},
          {"assistant", "Hello!"},
          {"user", "2+2?"},
          {"assistant", "4"}};
}

std::string chat_line(const std::vector<ChatMessage>& messages) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  return nlohmann::json{{"messages", list}}.dump() + "\n";
}

Document read_one(const std::string& path, const Tokenizer& tok,
                  ChatTemplate chat_template = ChatTemplate::auto_detect) {
  ReadOptions options;
  options.chat_template = chat_template;
  const auto docs = read_documents(path, DataFormat::chat, tok, options);
  REQUIRE(docs.size() == 1);
  REQUIRE(docs[0].tokens.size() == docs[0].loss_mask.size());
  return docs[0];
}

}  // namespace

TEST_CASE("the chat templates render system prompts and multiple turns", "[data][chat]") {
  const auto messages = conversation();
  CHECK(chat_text(render_chat(ChatTemplate::llama3, messages, "f", 1)) ==
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>");
  // Mistral and Gemma have no system role: it goes before the first user turn.
  CHECK(chat_text(render_chat(ChatTemplate::mistral, messages, "f", 1)) ==
        "[INST]Be brief.\n\nHi[/INST]Hello!</s>[INST]2+2?[/INST]4</s>");
  CHECK(chat_text(render_chat(ChatTemplate::gemma, messages, "f", 1)) ==
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\n2+2?<end_of_turn>\n"
        "<start_of_turn>model\n4<end_of_turn>\n");
  // ChatML keeps the system role as a message of its own.
  CHECK(chat_text(render_chat(ChatTemplate::chatml, messages, "f", 1)) ==
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n");
}

TEST_CASE("only assistant turns and their end-of-turn tokens carry loss", "[data][chat]") {
  TempDir dir;
  const std::string path = dir.write("chat.jsonl", chat_line(conversation()));

  SECTION("llama3") {
    const auto tok = ChatTokenizer::llama3();
    CHECK(marked(read_one(path, tok), tok) ==
          "<bos><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
          "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n«Hello!<|eot_id|>»"
          "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
          "<|start_header_id|>assistant<|end_header_id|>\n\n«4<|eot_id|>»");
    // Special tokens are placed by id, one token each.
    const Document doc = read_one(path, tok);
    CHECK(doc.tokens[0] == tok.bos_id());
    CHECK(doc.tokens[1] == tok.token_id("<|start_header_id|>"));
    CHECK(doc.tokens.back() == tok.token_id("<|eot_id|>"));
    CHECK(doc.loss_mask.back() == 1);
  }
  SECTION("gemma: the newline after <end_of_turn> is context") {
    const auto tok = ChatTokenizer::gemma();
    CHECK(marked(read_one(path, tok), tok) ==
          "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
          "<start_of_turn>model\n«Hello!<end_of_turn>»\n"
          "<start_of_turn>user\n2+2?<end_of_turn>\n"
          "<start_of_turn>model\n«4<end_of_turn>»\n");
  }
  SECTION("chatml: the assistant's content and <|im_end|>, not the header or the newline") {
    const auto tok = ChatTokenizer::chatml();
    CHECK(marked(read_one(path, tok), tok) ==
          "<bos><|im_start|>system\nBe brief.<|im_end|>\n"
          "<|im_start|>user\nHi<|im_end|>\n"
          "<|im_start|>assistant\n«Hello!<|im_end|>»\n"
          "<|im_start|>user\n2+2?<|im_end|>\n"
          "<|im_start|>assistant\n«4<|im_end|>»\n");
    // Special tokens are placed by id, one token each; the last token is the newline.
    const Document doc = read_one(path, tok);
    CHECK(doc.tokens[1] == tok.token_id("<|im_start|>"));
    CHECK(doc.tokens[doc.tokens.size() - 2] == tok.token_id("<|im_end|>"));
    CHECK(doc.loss_mask[doc.loss_mask.size() - 2] == 1);
    CHECK(doc.loss_mask.back() == 0);
  }
  SECTION("mistral: EOS ends each assistant turn") {
    const auto tok = ChatTokenizer::mistral();
    CHECK(marked(read_one(path, tok), tok) ==
          "<bos>[INST]Be brief.\n\nHi[/INST]«Hello!</s>»[INST]2+2?[/INST]«4</s>»");
  }
  SECTION("mistral with a tokenizer that has no [INST] token: the markers are text") {
    const ByteTokenizer tok;
    const Document doc = read_one(path, tok, ChatTemplate::mistral);
    std::string text;
    for (size_t i = 0; i < doc.tokens.size(); ++i) {
      text += doc.tokens[i] == 1   ? "<bos>"
              : doc.tokens[i] == 2 ? "</s>"
                                   : tok.decode({doc.tokens[i]});
      if (i + 1 < doc.tokens.size() && doc.loss_mask[i + 1] != doc.loss_mask[i]) text += "|";
    }
    CHECK(text == "<bos>[INST] Be brief.\n\nHi [/INST]|Hello!</s>|[INST] 2+2? [/INST]|4</s>");
  }
  SECTION("data.add_bos: false leaves BOS out") {
    const auto tok = ChatTokenizer::llama3();
    ReadOptions options;
    options.add_bos = false;
    const auto docs = read_documents(path, DataFormat::chat, tok, options);
    CHECK(docs[0].tokens[0] == tok.token_id("<|start_header_id|>"));
  }
}

TEST_CASE("chat through a Hugging Face tokenizer: specials by id, text decodes back",
          "[data][chat]") {
  LIGER_NEEDS_PCRE2();
  TempDir dir;
  // A byte-level BPE with no merges and Llama 3's special tokens.
  nlohmann::json vocab = nlohmann::json::object();
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const unsigned cp =
        printable ? static_cast<unsigned>(b) : 256u + static_cast<unsigned>(extra++);
    std::string symbol;
    if (cp < 0x80) {
      symbol += static_cast<char>(cp);
    } else {
      symbol += static_cast<char>(0xC0 | (cp >> 6));
      symbol += static_cast<char>(0x80 | (cp & 0x3F));
    }
    vocab[symbol] = b;
  }
  nlohmann::json added = nlohmann::json::array();
  int id = 256;
  for (const char* name : {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                           "<|end_header_id|>", "<|eot_id|>"}) {
    added.push_back({{"id", id++}, {"content", name}, {"special", true}, {"normalized", false}});
  }
  const nlohmann::json file = {
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  const HfBpeTokenizer tok(dir.write("tokenizer.json", file.dump()));
  CHECK(detect_chat_template(tok) == ChatTemplate::llama3);

  const std::string path =
      dir.write("chat.jsonl", chat_line({{"user", "Hi <|eot_id|> there"}, {"assistant", "Yo"}}));
  const Document doc = read_one(path, tok);
  CHECK(tok.decode(doc.tokens) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi <|eot_id|> there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|>");
  // Loss on "Yo" (2 byte tokens) and the final <|eot_id|>.
  int64_t targets = 0;
  for (const uint8_t m : doc.loss_mask) targets += m;
  CHECK(targets == 3);
  CHECK(doc.tokens[0] == tok.bos_id());
}

TEST_CASE("auto-detection of chat data and of the template", "[data][chat]") {
  TempDir dir;
  const std::string path = dir.write("c.jsonl", "\n" + chat_line(conversation()));
  CHECK(detect_format(path) == DataFormat::chat);
  CHECK(detect_chat_template(ChatTokenizer::llama3()) == ChatTemplate::llama3);
  CHECK(detect_chat_template(ChatTokenizer::gemma()) == ChatTemplate::gemma);
  CHECK(detect_chat_template(ChatTokenizer::mistral()) == ChatTemplate::mistral);
  CHECK(detect_chat_template(ChatTokenizer::chatml()) == ChatTemplate::chatml);
  const std::string message =
      data_error_message([&] { read_documents(path, DataFormat::auto_detect, ByteTokenizer()); });
  CHECK_HAS(message, "data.chat_template");
  CHECK_HAS(message, "llama3, mistral, gemma or chatml");
  CHECK(parse_chat_template("gemma") == ChatTemplate::gemma);
  CHECK(parse_chat_template("chatml") == ChatTemplate::chatml);
  CHECK(std::string(chat_template_name(ChatTemplate::chatml)) == "chatml");
  CHECK_HAS(data_error_message([] { parse_chat_template("vicuna"); }), "'vicuna'");
}

TEST_CASE("bad conversations are DataErrors naming file:line", "[data][chat]") {
  TempDir dir;
  const ChatTokenizer tok({"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                           "<start_of_turn>", "<end_of_turn>", "[INST]", "[/INST]"});
  auto error_of = [&](const std::string& second_line,
                      ChatTemplate chat_template = ChatTemplate::llama3) {
    const std::string path = dir.write("bad.jsonl", chat_line(conversation()) + second_line + "\n");
    ReadOptions options;
    options.chat_template = chat_template;
    const std::string message =
        data_error_message([&] { read_documents(path, DataFormat::chat, tok, options); });
    CHECK_HAS(message, path + ":2:");
    return message;
  };
  CHECK_HAS(error_of(R"({"messages": [{"role": "bot", "content": "x"}]})"),
            "messages[0] has role \"bot\"; the roles are system, user and assistant");
  CHECK_HAS(error_of(R"({"messages": []})"), "\"messages\" is empty");
  CHECK_HAS(error_of(R"({"messages": [{"role": "user", "content": "x"}]})"), "no assistant turn");
  CHECK_HAS(
      error_of(
          R"({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "y"}, {"role": "assistant", "content": "z"}]})"),
      "only the first message");
  CHECK_HAS(error_of(R"({"messages": [{"role": "user", "content": ["a", "b"]}]})"),
            "needs a string \"content\", got array");
  CHECK_HAS(error_of(R"({"messages": [{"content": "x"}]})"), "needs a string \"role\"");
  CHECK_HAS(error_of(R"({"messages": "hi"})"), "must be a list");
  CHECK_HAS(error_of(R"({"conversation": []})"), "missing field \"messages\"");
  CHECK_HAS(
      error_of(
          R"({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]})",
          ChatTemplate::mistral),
      "messages[1] has role \"user\" where \"assistant\" is due");
  CHECK_HAS(
      error_of(R"({"messages": [{"role": "assistant", "content": "a"}]})", ChatTemplate::gemma),
      "starting with user");
  // llama3 does not need alternation.
  const std::string path = dir.write(
      "ok.jsonl",
      R"({"messages": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]})");
  CHECK(read_documents(path, DataFormat::chat, tok, ReadOptions{}).size() == 1);

  SECTION("a template whose tokens the tokenizer lacks") {
    const std::string p = dir.write("t.jsonl", chat_line(conversation()));
    ReadOptions options;
    options.chat_template = ChatTemplate::gemma;
    const auto llama3_only = ChatTokenizer::llama3();
    const std::string message =
        data_error_message([&] { read_documents(p, DataFormat::chat, llama3_only, options); });
    CHECK_HAS(message, p + ":1:");
    CHECK_HAS(message, "gemma chat template needs the token '<start_of_turn>'");
    options.chat_template = ChatTemplate::chatml;
    CHECK_HAS(
        data_error_message([&] { read_documents(p, DataFormat::chat, llama3_only, options); }),
        "chatml chat template needs the token '<|im_start|>'");
  }
}
