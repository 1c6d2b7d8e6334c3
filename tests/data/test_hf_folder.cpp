// A tokenizer in a Hugging Face model folder: the side files
// (tokenizer_config.json, special_tokens_map.json, chat_template.jinja) read
// as transformers reads them, the special tokens they give a SentencePiece
// model, and data.chat_template = auto recognising the folder's Jinja chat
// template. (The byte-level BPE's side of it is in test_hf_tokenizer.cpp; the
// whole fine-tune from a folder is tests/trainer/test_hf_folder.cpp.)
#include "tests/catch.h"
#include "tests/data/data_test_helpers.h"

#include "data/chat.h"
#include "data/hf_tokenizer_config.h"
#include "data/readers.h"
#include "data/sentencepiece_tokenizer.h"

#include <nlohmann/json.hpp>

#include <filesystem>

using namespace liger::data;
using namespace liger::data::testing;

namespace {

// The shipped sample model (<unk> 0, <s> 1, </s> 2) as a model folder's tokenizer.model.
std::string sample_folder(const TempDir& dir) {
  dir.write("tokenizer.model", read_file(sample_model_path()));
  return dir.path("");
}

const char* const kLlama3Jinja =
    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}{% endfor %}";
const char* const kMistralJinja =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
    "message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% "
    "endfor %}";
const char* const kGemmaJinja =
    "{% for message in messages %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim "
    "+ "
    "'<end_of_turn>\\n' }}{% endfor %}";
const char* const kChatmlJinja =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ "
    "'<|im_end|>' + '\\n'}}{% endfor %}";
// A format liger-train does not render (Phi-3's markers).
const char* const kPhi3Jinja =
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + "
    "'<|end|>' + '\\n'}}{% endfor %}";

}  // namespace

TEST_CASE("read_hf_tokenizer_config reads the side files as transformers does",
          "[data][hf_folder]") {
  TempDir dir;
  SECTION("nothing there: nothing declared") {
    const HfTokenizerConfig config = read_hf_tokenizer_config(dir.path(""));
    CHECK_FALSE(config.bos.declared);
    CHECK_FALSE(config.add_bos_token.has_value());
    CHECK(config.chat_template.empty());
  }
  SECTION("tokens as strings, {content} or null; flags; a list of chat templates") {
    dir.write("tokenizer_config.json", R"({
      "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "pad_token": null,
      "add_bos_token": true, "add_eos_token": false,
      "chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "[INST][/INST]"}]})");
    const HfTokenizerConfig config = read_hf_tokenizer_config(dir.path(""));
    CHECK(config.bos.content == "<s>");
    CHECK(config.eos.content == "</s>");
    CHECK(config.eos.file == dir.path("tokenizer_config.json"));
    CHECK(config.pad.declared);
    CHECK(config.pad.content.empty());
    CHECK(config.add_bos_token == true);
    CHECK(config.add_eos_token == false);
    CHECK(config.chat_template == "[INST][/INST]");
    CHECK(config.chat_template_file == dir.path("tokenizer_config.json"));
  }
  SECTION("tokenizer_folder: a folder is itself, a file its folder") {
    CHECK(tokenizer_folder(dir.path("")) == dir.path(""));
    CHECK(std::filesystem::path(tokenizer_folder(dir.path("tokenizer.json"))) ==
          std::filesystem::path(dir.path("")).parent_path());
    CHECK(tokenizer_folder("tokenizer.model") == ".");
  }
  SECTION("files that are not what they should be name themselves") {
    dir.write("tokenizer_config.json", "{\"bos_token\": ");
    CHECK_HAS(data_error_message([&] { read_hf_tokenizer_config(dir.path("")); }),
              dir.path("tokenizer_config.json") + ": not valid JSON");
    dir.write("tokenizer_config.json", R"({"bos_token": 7})");
    CHECK_HAS(data_error_message([&] { read_hf_tokenizer_config(dir.path("")); }),
              "bos_token = 7 is not a token");
    dir.write("tokenizer_config.json", R"({"add_bos_token": "yes"})");
    CHECK_HAS(data_error_message([&] { read_hf_tokenizer_config(dir.path("")); }),
              "add_bos_token = \"yes\" is not true or false");
  }
}

TEST_CASE("a SentencePiece model in a folder takes the folder's special tokens",
          "[data][hf_folder]") {
  TempDir dir;
  const std::string folder = sample_folder(dir);
  SECTION("without side files: the model's own") {
    const auto tok = load_tokenizer(folder);
    CHECK(tok->bos_id() == 1);
    CHECK(tok->eos_id() == 2);
    CHECK_FALSE(tok->adds_bos().has_value());
  }
  SECTION("tokenizer_config.json's tokens and add_bos_token; data.* options over them") {
    dir.write("tokenizer_config.json",
              R"({"bos_token": "</s>", "eos_token": null, "add_bos_token": false})");
    const auto tok = load_tokenizer(folder);
    CHECK(tok->bos_id() == 2);
    CHECK(tok->eos_id() == -1);
    CHECK(tok->adds_bos() == false);
    CHECK_HAS(tok->describe(), "bos 2 from tokenizer_config.json, eos none");
    TokenizerOptions options;
    options.bos_token = "<s>";
    options.eos_token = "</s>";
    const auto chosen = load_tokenizer(folder, options);
    CHECK(chosen->bos_id() == 1);
    CHECK(chosen->eos_id() == 2);
  }
  SECTION("a token the model does not have names the file and the key") {
    dir.write("special_tokens_map.json", R"({"eos_token": "<|im_end|>"})");
    const std::string message = data_error_message([&] { load_tokenizer(folder); });
    CHECK_HAS(message, dir.path("special_tokens_map.json") +
                           ": eos_token = \"<|im_end|>\" is not a piece of");
    CHECK_HAS(message, "data.eos_token");
  }
  SECTION("unk and the dummy prefix, for an export's tokenizer_config.json") {
    const auto tok = load_tokenizer(folder);
    const auto* sp = dynamic_cast<const SentencePieceTokenizer*>(tok.get());
    REQUIRE(sp != nullptr);
    CHECK(sp->unk_id() == 0);
    CHECK(sp->token_text(1) == "<s>");
    CHECK_FALSE(sp->adds_dummy_prefix());  // the sample is trained with --add_dummy_prefix=false
  }
}

TEST_CASE("data.chat_template auto: the folder's Jinja template decides, by its markers",
          "[data][hf_folder]") {
  CHECK(chat_template_family(kLlama3Jinja) == ChatTemplate::llama3);
  CHECK(chat_template_family(kMistralJinja) == ChatTemplate::mistral);
  CHECK(chat_template_family(kGemmaJinja) == ChatTemplate::gemma);
  CHECK(chat_template_family(kChatmlJinja) == ChatTemplate::chatml);
  CHECK_FALSE(chat_template_family(kPhi3Jinja).has_value());
  CHECK_FALSE(chat_template_family("").has_value());

  TempDir dir;
  const std::string folder = sample_folder(dir);
  const std::string chat = dir.write(
      "chat.jsonl",
      R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})"
      "\n");
  SECTION("the template wins over the tokens (the sample has none of them)") {
    dir.write("tokenizer_config.json", nlohmann::json({{"chat_template", kMistralJinja}}).dump());
    const auto tok = load_tokenizer(folder);
    CHECK(detect_chat_template(*tok) == ChatTemplate::mistral);
    // Rendered as mistral: the sample has no [INST] piece, so the markers are text.
    const auto docs = read_documents(chat, DataFormat::auto_detect, *tok);
    REQUIRE(docs.size() == 1);
    CHECK(tok->decode(docs[0].tokens) == "[INST] Hi [/INST]Yo");
  }
  SECTION("an unrecognised template is one error naming the file and data.chat_template") {
    dir.write("tokenizer_config.json", nlohmann::json({{"chat_template", kPhi3Jinja}}).dump());
    const auto tok = load_tokenizer(folder);
    const std::string message =
        data_error_message([&] { read_documents(chat, DataFormat::chat, *tok); });
    CHECK_HAS(message, dir.path("tokenizer_config.json") + ": its chat template is none of");
    CHECK_HAS(message, "set data.chat_template to llama3, mistral, gemma or chatml");
    CHECK(message.find('\n') == std::string::npos);
    // Only chat data needs a template; an explicit one is used as given.
    CHECK(read_documents(dir.write("t.txt", "plain text"), DataFormat::text, *tok).size() == 1);
    ReadOptions options;
    options.chat_template = ChatTemplate::gemma;
    CHECK_HAS(data_error_message([&] { read_documents(chat, DataFormat::chat, *tok, options); }),
              "needs the token '<start_of_turn>'");
  }
}
