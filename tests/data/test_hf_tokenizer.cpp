// HfBpeTokenizer on small hand-made tokenizer.json files: byte-level mapping,
// merges in both formats, added tokens, BOS/EOS resolution, decode of partial
// UTF-8, and the DataErrors for what is not supported. (The comparison with
// the Python `tokenizers` package on trained tokenizers is test_bpe_oracle.cpp.)
#include "tests/catch.h"
#include "tests/data/data_test_helpers.h"

#include "data/chat.h"
#include "data/hf_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"

#include <nlohmann/json.hpp>

#include <functional>

using namespace liger::data;
using namespace liger::data::testing;
using nlohmann::json;

namespace {

// GPT-2's byte -> code point map, from its definition: printable Latin-1 bytes
// stay, the others become U+0100 + n in byte order.
std::string byte_symbol(unsigned char b) {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> out(256);
    int extra = 0;
    for (int i = 0; i < 256; ++i) {
      const bool printable = (i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE;
      const unsigned cp =
          printable ? static_cast<unsigned>(i) : 256u + static_cast<unsigned>(extra++);
      std::string utf8;
      if (cp < 0x80) {
        utf8 += static_cast<char>(cp);
      } else {
        utf8 += static_cast<char>(0xC0 | (cp >> 6));
        utf8 += static_cast<char>(0x80 | (cp & 0x3F));
      }
      out[i] = utf8;
    }
    return out;
  }();
  return table[b];
}

// A byte-level BPE: ids 0..255 are the bytes in order; each merge adds the
// merged token with the next id. Special tokens follow.
struct TokenizerSpec {
  std::vector<std::pair<std::string, std::string>> merges;  // in byte-level spelling ("Ġ", "t")
  bool legacy_merges = false;
  json pre_tokenizer = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  json added_tokens = json::array();
  json post_processor = nullptr;
  json normalizer = nullptr;
  json decoder = {{"type", "ByteLevel"}};
  std::function<void(json&)> edit;  // last changes to the file
};

json make_tokenizer_json(const TokenizerSpec& spec) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_symbol(static_cast<unsigned char>(b))] = b;
  json merges = json::array();
  int next = 256;
  for (const auto& [a, b] : spec.merges) {
    if (!vocab.contains(a + b)) vocab[a + b] = next++;
    merges.push_back(spec.legacy_merges ? json(a + " " + b) : json::array({a, b}));
  }
  json root = {{"version", "1.0"},
               {"truncation", nullptr},
               {"padding", nullptr},
               {"added_tokens", spec.added_tokens},
               {"normalizer", spec.normalizer},
               {"pre_tokenizer", spec.pre_tokenizer},
               {"post_processor", spec.post_processor},
               {"decoder", spec.decoder},
               {"model",
                {{"type", "BPE"},
                 {"dropout", nullptr},
                 {"unk_token", nullptr},
                 {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr},
                 {"fuse_unk", false},
                 {"byte_fallback", false},
                 {"ignore_merges", false},
                 {"vocab", vocab},
                 {"merges", merges}}}};
  if (spec.edit) spec.edit(root);
  return root;
}

json added(int id, const std::string& content, bool special = true) {
  return {{"id", id},        {"content", content},     {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", !special}, {"special", special}};
}

const std::vector<std::pair<std::string, std::string>> kTheMerges = {
    {"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"Ġ", "a"}};  // ids 256 Ġt, 257 he, 258 Ġthe, 259 Ġa

std::string write_tokenizer(TempDir& dir, const TokenizerSpec& spec,
                            const std::string& name = "tokenizer.json") {
  return dir.write(name, make_tokenizer_json(spec).dump());
}

int32_t byte_id(char c) {
  return static_cast<unsigned char>(c);
}

}  // namespace

TEST_CASE("byte-level BPE: bytes map to printable symbols and merges apply by rank",
          "[data][hf_tokenizer]") {
  LIGER_NEEDS_PCRE2();
  TempDir dir;
  for (const bool legacy : {false, true}) {
    INFO("merges as " << (legacy ? "\"a b\" strings" : "[a, b] pairs"));
    TokenizerSpec spec;
    spec.merges = kTheMerges;
    spec.legacy_merges = legacy;
    const HfBpeTokenizer tok(write_tokenizer(dir, spec));
    CHECK(tok.vocab_size() == 260);
    // " the" is one pre-token "Ġthe": Ġ+t, h+e, then Ġt+he.
    CHECK(tok.encode(" the") == std::vector<int32_t>{258});
    CHECK(tok.encode("the") == std::vector<int32_t>{byte_id('t'), 257});
    CHECK(tok.encode(" the the") == std::vector<int32_t>{258, 258});
    CHECK(tok.encode(" a") == std::vector<int32_t>{259});
    // The space and control bytes are symbols of their own: "\n" is 'Ċ' (byte 10).
    CHECK(tok.encode("\n") == std::vector<int32_t>{10});
    CHECK(tok.token_text(10) == "Ċ");
    CHECK(tok.token_text(258) == "Ġthe");
    CHECK(tok.encode("") == std::vector<int32_t>{});
    for (const std::string& text :
         std::vector<std::string>{" the cat\n\tsat  on\r\nthe mat.",
                                  "caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80",
                                  std::string("nul\0byte", 8)}) {
      CHECK(tok.decode(tok.encode(text)) == text);
    }
  }
}

TEST_CASE("added tokens are matched before pre-tokenization, longest first",
          "[data][hf_tokenizer]") {
  LIGER_NEEDS_PCRE2();
  TempDir dir;
  TokenizerSpec spec;
  spec.merges = kTheMerges;
  spec.added_tokens = json::array(
      {added(260, "<|eot_id|>"), added(261, "<|eot_id|>x"), added(262, "<|begin_of_text|>")});
  const HfBpeTokenizer tok(write_tokenizer(dir, spec));
  CHECK(tok.vocab_size() == 263);
  CHECK(tok.encode("a<|eot_id|> the") == std::vector<int32_t>{byte_id('a'), 260, 258});
  CHECK(tok.encode("<|eot_id|>xy") == std::vector<int32_t>{261, byte_id('y')});
  std::vector<int32_t> unfinished = tok.encode("<|eot_id");  // not the token: plain text
  unfinished.push_back(byte_id('|'));
  CHECK(tok.encode("<|eot_id|") == unfinished);
  CHECK(tok.token_id("<|begin_of_text|>") == 262);
  CHECK(tok.token_id("Ġthe") == 258);
  CHECK(tok.token_id("nope") == -1);
  // Decoding keeps special tokens as they are spelled.
  CHECK(tok.decode({262, 258, 260}) == "<|begin_of_text|> the<|eot_id|>");
}

TEST_CASE("decode turns partial UTF-8 into U+FFFD and rejects unknown ids",
          "[data][hf_tokenizer]") {
  LIGER_NEEDS_PCRE2();
  TempDir dir;
  const HfBpeTokenizer tok(write_tokenizer(dir, TokenizerSpec{}));
  const std::string euro = "\xE2\x82\xAC";
  const std::vector<int32_t> ids = tok.encode(euro);
  REQUIRE(ids.size() == 3);
  CHECK(tok.decode({ids[0], ids[1]}) == "\xEF\xBF\xBD");  // one truncated sequence
  CHECK(tok.decode({ids[1]}) == "\xEF\xBF\xBD");          // a stray continuation byte
  CHECK(tok.decode({ids[0], ids[1], ids[2]}) == euro);
  CHECK(tok.decode({byte_id('a'), 0xFF, byte_id('b')}) ==
        "a\xEF\xBF\xBD"
        "b");
  CHECK_HAS(data_error_message([&] { tok.decode({256}); }), "outside [0, 256)");
  CHECK_HAS(data_error_message([&] { tok.decode({-1}); }), "cannot decode token id -1");
}

TEST_CASE("encode names the byte where the text stops being UTF-8", "[data][hf_tokenizer]") {
  LIGER_NEEDS_PCRE2();
  TempDir dir;
  const HfBpeTokenizer tok(write_tokenizer(dir, TokenizerSpec{}));
  const std::string message = data_error_message([&] { tok.encode("ok \xC3\x28 bad"); });
  CHECK_HAS(message, "not valid UTF-8 (byte 3 of");
  CHECK_HAS(message, "re-encode the data as UTF-8");
  CHECK_HAS(data_error_message([&] { tok.encode("\xED\xA0\x80"); }), "byte 0");  // a surrogate
}

TEST_CASE("BOS and EOS: options, tokenizer_config.json, template, well-known names",
          "[data][hf_tokenizer]") {
  LIGER_NEEDS_PCRE2();
  TempDir dir;
  TokenizerSpec spec;
  spec.added_tokens = json::array({added(256, "<|begin_of_text|>"), added(257, "<|end_of_text|>"),
                                   added(258, "<|eot_id|>"), added(259, "<s>")});

  SECTION("well-known names when nothing says otherwise") {
    const HfBpeTokenizer tok(write_tokenizer(dir, spec));
    CHECK(tok.bos_id() == 256);
    CHECK(tok.eos_id() == 257);
    CHECK_HAS(tok.describe(), "bos 256 <|begin_of_text|> from its name");
  }
  SECTION("the TemplateProcessing's token before $A is BOS") {
    spec.post_processor = {
        {"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array()},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {259}}, {"tokens", {"<s>"}}}}}}};
    const HfBpeTokenizer tok(write_tokenizer(dir, spec));
    CHECK(tok.bos_id() == 259);
    CHECK(tok.eos_id() == 257);
  }
  SECTION("tokenizer_config.json beside the file wins; null means none") {
    dir.write(
        "tokenizer_config.json",
        R"({"bos_token": {"content": "<|end_of_text|>", "lstrip": false}, "eos_token": "<|eot_id|>"})");
    const HfBpeTokenizer tok(write_tokenizer(dir, spec));
    CHECK(tok.bos_id() == 257);
    CHECK(tok.eos_id() == 258);
    CHECK_HAS(tok.describe(), "from tokenizer_config.json");

    dir.write("tokenizer_config.json", R"({"bos_token": null, "eos_token": "<|eot_id|>"})");
    CHECK(HfBpeTokenizer(write_tokenizer(dir, spec)).bos_id() == -1);

    dir.write("tokenizer_config.json", R"({"bos_token": "<missing>"})");
    const std::string message =
        data_error_message([&] { HfBpeTokenizer(write_tokenizer(dir, spec)); });
    CHECK_HAS(message, "tokenizer_config.json: bos_token = \"<missing>\"");
    CHECK_HAS(message, "data.bos_token");
  }
  SECTION("data.bos_token / data.eos_token override everything") {
    dir.write("tokenizer_config.json", R"({"bos_token": "<|end_of_text|>"})");
    TokenizerOptions options;
    options.bos_token = "<s>";
    options.eos_token = "<|eot_id|>";
    const HfBpeTokenizer tok(write_tokenizer(dir, spec), options);
    CHECK(tok.bos_id() == 259);
    CHECK(tok.eos_id() == 258);
    options.eos_token = "<|im_end|>";
    const std::string message =
        data_error_message([&] { HfBpeTokenizer(dir.path("tokenizer.json"), options); });
    CHECK_HAS(message, "data.eos_token = '<|im_end|>'");
    CHECK_HAS(message, "has no such token");
  }
  SECTION("none at all") {
    spec.added_tokens = json::array();
    const HfBpeTokenizer tok(write_tokenizer(dir, spec));
    CHECK(tok.bos_id() == -1);
    CHECK(tok.eos_id() == -1);
  }
}

TEST_CASE("load_tokenizer picks tokenizer.json by extension or in a model folder",
          "[data][hf_tokenizer]") {
  LIGER_NEEDS_PCRE2();
  TempDir dir;
  write_tokenizer(dir, TokenizerSpec{});
  CHECK(dynamic_cast<const HfBpeTokenizer*>(load_tokenizer(dir.path("tokenizer.json")).get()) !=
        nullptr);
  CHECK(dynamic_cast<const HfBpeTokenizer*>(load_tokenizer(dir.path("")).get()) != nullptr);
  // With both files, tokenizer.json when it is byte-level (as transformers prefers it)...
  dir.write("tokenizer.model", read_file(sample_model_path()));
  CHECK(dynamic_cast<const HfBpeTokenizer*>(load_tokenizer(dir.path("")).get()) != nullptr);
  // ...and the SentencePiece model beside a tokenizer.json that is not (Llama 2, Mistral, Gemma).
  TokenizerSpec metaspace;
  metaspace.pre_tokenizer = {{"type", "Metaspace"}, {"replacement", "\u2581"}};
  write_tokenizer(dir, metaspace);
  CHECK_FALSE(is_byte_level_bpe(dir.path("tokenizer.json")));
  CHECK(dynamic_cast<const SentencePieceTokenizer*>(load_tokenizer(dir.path("")).get()) != nullptr);
  // A byte-level step inside a Sequence counts; a file that is not JSON does not.
  TokenizerSpec sequence;
  sequence.pre_tokenizer = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                     {{"type", "ByteLevel"}, {"use_regex", false}}})}};
  CHECK(is_byte_level_bpe(write_tokenizer(dir, sequence)));
  CHECK_FALSE(is_byte_level_bpe(dir.write("broken.json", "{\"model\": ")));
}

TEST_CASE("a model folder's side files: special_tokens_map.json, adds_bos, chat template",
          "[data][hf_tokenizer]") {
  LIGER_NEEDS_PCRE2();
  TempDir dir;
  TokenizerSpec spec;
  spec.added_tokens = json::array({added(256, "<|begin_of_text|>"), added(257, "<|end_of_text|>"),
                                   added(258, "<|eot_id|>"), added(259, "<s>")});
  write_tokenizer(dir, spec);
  SECTION(
      "special_tokens_map.json fills in when tokenizer_config.json has no added_tokens_decoder") {
    dir.write("tokenizer_config.json", R"({"bos_token": "<s>"})");
    dir.write("special_tokens_map.json", R"({"eos_token": {"content": "<|eot_id|>"}})");
    const auto tok = load_tokenizer(dir.path(""));
    CHECK(tok->bos_id() == 259);
    CHECK(tok->eos_id() == 258);
    CHECK_HAS(tok->describe(), "eos 258 <|eot_id|> from special_tokens_map.json");
    // transformers ignores the map beside a config with added_tokens_decoder.
    dir.write("tokenizer_config.json", R"({"bos_token": "<s>", "added_tokens_decoder": {}})");
    CHECK(load_tokenizer(dir.path(""))->eos_id() == 257);
  }
  SECTION("adds_bos: the post-processor of a tokenizer.json decides") {
    CHECK(load_tokenizer(dir.path(""))->adds_bos() == false);
    spec.post_processor = {
        {"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens", {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {256}}}}}}};
    write_tokenizer(dir, spec);
    dir.write("tokenizer_config.json",
              R"({"add_bos_token": false})");  // ignored, as transformers does
    CHECK(load_tokenizer(dir.path(""))->adds_bos() == true);
  }
  SECTION("the chat template of tokenizer_config.json, chat_template.jinja over it") {
    CHECK(load_tokenizer(dir.path(""))->chat_template().empty());
    dir.write("tokenizer_config.json",
              R"({"chat_template": "{{ '<|start_header_id|>' }}{{ '<|eot_id|>' }}"})");
    auto tok = load_tokenizer(dir.path("tokenizer.json"));
    CHECK(detect_chat_template(*tok) == ChatTemplate::llama3);
    CHECK(tok->chat_template_file() == dir.path("tokenizer_config.json"));
    dir.write("chat_template.jinja", "{{ '<start_of_turn>' }}{{ '<end_of_turn>' }}");
    tok = load_tokenizer(dir.path(""));
    CHECK(detect_chat_template(*tok) == ChatTemplate::gemma);
    CHECK(tok->chat_template_file() == dir.path("chat_template.jinja"));
  }
}

TEST_CASE("unsupported tokenizer.json features are DataErrors naming the feature and file",
          "[data][hf_tokenizer]") {
  LIGER_NEEDS_PCRE2();
  TempDir dir;
  struct Case {
    const char* name;
    std::function<void(json&)> edit;
    std::vector<std::string> expected;
  };
  const std::vector<Case> cases = {
      {"WordPiece model",
       [](json& j) { j["model"]["type"] = "WordPiece"; },
       {"model.type = \"WordPiece\""}},
      {"NFKC normalizer",
       [](json& j) {
         j["normalizer"] = {{"type", "NFKC"}};
       },
       {"normalizer \"NFKC\"", "NFC normalizer only"}},
      {"Metaspace pre-tokenizer",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}};
       },
       {"pre_tokenizer \"Metaspace\"", "tokenizer.model"}},
      {"no ByteLevel step",
       [](json& j) {
         j["pre_tokenizer"] = {{"type", "Split"},
                               {"pattern", {{"String", " "}}},
                               {"behavior", "Removed"},
                               {"invert", false}};
       },
       {"without a ByteLevel step"}},
      {"byte fallback", [](json& j) { j["model"]["byte_fallback"] = true; }, {"byte_fallback"}},
      {"dropout",
       [](json& j) { j["model"]["dropout"] = 0.1; },
       {"model.dropout", "\"dropout\": null"}},
      {"subword prefix",
       [](json& j) { j["model"]["continuing_subword_prefix"] = "##"; },
       {"continuing_subword_prefix"}},
      {"no decoder", [](json& j) { j["decoder"] = nullptr; }, {"decoder null"}},
      {"WordPiece decoder",
       [](json& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       },
       {"decoder \"WordPiece\""}},
      {"RoBERTa post-processor",
       [](json& j) {
         j["post_processor"] = {{"type", "RobertaProcessing"}};
       },
       {"post_processor \"RobertaProcessing\""}},
      {"two-token template",
       [](json& j) {
         j["post_processor"] = {{"type", "TemplateProcessing"},
                                {"single", json::array({{{"SpecialToken", {{"id", "a"}}}},
                                                        {{"SpecialToken", {{"id", "b"}}}},
                                                        {{"Sequence", {{"id", "A"}}}}})}};
       },
       {"TemplateProcessing single"}},
      {"a regex PCRE2 rejects",
       [](json& j) {
         j["pre_tokenizer"] = {
             {"type", "Sequence"},
             {"pretokenizers", json::array({{{"type", "Split"},
                                             {"pattern", {{"Regex", "(unclosed"}}},
                                             {"behavior", "Isolated"},
                                             {"invert", false}},
                                            {{"type", "ByteLevel"}, {"use_regex", false}}})}};
       },
       {"pre_tokenizer.pretokenizers[0].pattern.Regex", "does not compile"}},
      {"a merge of three parts",
       [](json& j) { j["model"]["merges"] = json::array({"a b c"}); },
       {"model.merges[0] = \"a b c\""}},
      {"a merge of unknown tokens",
       [](json& j) {
         j["model"]["merges"] = json::array({json::array({"zz", "q"})});
       },
       {"\"zz\", which is not in model.vocab"}},
      {"no model", [](json& j) { j.erase("model"); }, {"no \"model\" object"}},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    TokenizerSpec spec;
    spec.edit = c.edit;
    const std::string path = write_tokenizer(dir, spec);
    const std::string message = data_error_message([&] { HfBpeTokenizer tok(path); });
    CHECK_HAS(message, path);
    for (const auto& part : c.expected) CHECK_HAS(message, part);
  }
  SECTION("not JSON at all") {
    const std::string path = dir.write("broken.json", "{\"model\": ");
    const std::string message = data_error_message([&] { load_tokenizer(path); });
    CHECK_HAS(message, path);
    CHECK_HAS(message, "not valid JSON");
  }
  SECTION("missing file") {
    CHECK_HAS(data_error_message([&] { load_tokenizer(dir.path("nope.json")); }), "not found");
  }
}
