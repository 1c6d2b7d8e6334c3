// A fine-tune that starts from a Hugging Face model folder and ends in one:
// tests/trainer/hf_folder_oracle.py builds a small random Llama with a
// byte-level BPE tokenizer trained by the `tokenizers` package and a
// tokenizer_config.json holding Llama 3's special tokens and chat template.
// With model.hf_path alone (no data.tokenizer) the run must take the folder's
// tokenizer (the same ids as transformers' AutoTokenizer on chat and text) and
// chat template (the log says so); the export must load in transformers
// (AutoTokenizer, AutoModelForCausalLM, GenerationConfig) with the same ids,
// the same logits as our trained model (1e-5, fp32) and the right stop ids.
// Then the export of a tokenizer on its own: the SentencePiece sample (a
// tokenizer_config.json for LlamaTokenizer is written, and transformers
// encodes as we do), data.bos_token/eos_token and stop tokens written into
// the copies, and a missing tokenizer refused before anything is written.
#include "data/readers.h"
#include "models/safetensors.h"
#include "models/transformer.h"
#include "tests/catch.h"
#include "tests/models/parity_util.h"
#include "trainer/config.h"
#include "trainer/export.h"
#include "trainer/export_tokenizer.h"
#include "trainer/tokenizer_setup.h"
#include "trainer/trainer.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace fs = std::filesystem;
using namespace liger;
using nlohmann::json;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

json read_json(const std::string& path) {
  return json::parse(read_text(path));
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

int oracle(const std::string& arguments) {
  return testing::run_and_print(testing::python() + " " + testing::repo_dir() +
                                "/tests/trainer/hf_folder_oracle.py " + arguments);
}

// The oracle's folder (OUT/hf, OUT/chat.jsonl, OUT/expected.json), made once per process.
const std::string& made() {
  static const std::string dir = [] {
    const std::string out = testing::temp_dir("hf_folder");
    if (oracle("make " + out + " " + testing::repo_dir()) != 0) {
      throw std::runtime_error(
          "hf_folder_oracle.py make failed: are transformers and tokenizers installed for " +
          testing::python() + "? (scripts/setup.sh)");
    }
    return out;
  }();
  return dir;
}

std::vector<int32_t> ids_of(const json& list) {
  return list.get<std::vector<int32_t>>();
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A run with model.hf_path and nothing about the tokenizer or the template.
config::TrainConfig folder_run(const std::string& out) {
  const std::string yaml =
      "model:\n  hf_path: " + made() +
      "/hf\n"
      "data:\n  train: [" +
      made() +
      "/chat.jsonl]\n  seq_len: 64\n"
      "training:\n  device: cpu\n  steps: 3\n  micro_batch_size: 2\n  lr: 0.001\n"
      "  warmup_steps: 1\n  threads: 2\n"
      "checkpoint:\n  output_dir: " +
      out +
      "\n  every: 0\n  save_final: true\n"
      "logging:\n  level: info\n  progress_bar: off\n  sample_tokens: 0\n";
  return config::parse_config(yaml, "hf_folder.yaml");
}

}  // namespace

// CHECK that `text` contains `part`, showing `text` when it does not.
#define CHECK_HAS(text, part)        \
  do {                               \
    INFO("text: " << (text));        \
    CHECK(contains((text), (part))); \
  } while (false)

TEST_CASE(
    "model.hf_path alone: the folder's tokenizer and chat template; the export loads in "
    "transformers") {
  const json expected = read_json(made() + "/expected.json");
  const std::string hf = made() + "/hf";
  const std::string out = testing::temp_dir("hf_folder_run");
  const config::TrainConfig config = folder_run(out);
  CHECK(config.data.tokenizer == hf);

  // Our tokenizer, as the trainer loads it, answers what AutoTokenizer answers.
  const auto tokenizer = trainer::load_run_tokenizer(config);
  CHECK(tokenizer->bos_id() == expected.at("bos_id").get<int32_t>());
  CHECK(tokenizer->eos_id() == expected.at("eos_id").get<int32_t>());
  CHECK(tokenizer->encode(expected.at("text").get<std::string>()) ==
        ids_of(expected.at("text_ids")));
  // Chat documents: BOS, then the llama3 rendering (the template came from the folder).
  const auto documents =
      data::read_documents(made() + "/chat.jsonl", data::DataFormat::auto_detect, *tokenizer);
  const json& chat_ids = expected.at("chat_ids");
  REQUIRE(documents.size() >= chat_ids.size());
  for (size_t i = 0; i < chat_ids.size(); ++i) {
    INFO("conversation " << i);
    CHECK(documents[i].tokens == ids_of(chat_ids[i]));
  }

  trainer::Trainer t(config);
  const trainer::TrainResult result = t.run();
  REQUIRE(result.final_step == 3);
  const std::string log = read_text(out + "/train.log");
  CHECK_HAS(log, "tokenizer from model.hf_path: hf-bpe " + hf + "/tokenizer.json");
  CHECK_HAS(log, "chat template llama3 from " + hf + "/tokenizer_config.json");

  const std::string exported = out + "/hf";
  const std::string summary =
      trainer::export_checkpoint(result.checkpoint_path, exported, config::Dtype::fp32);
  CHECK_HAS(summary, "tokenizer.json, tokenizer_config.json copied");
  CHECK_HAS(summary, "generation_config.json copied (eos 1 4)");
  for (const char* name : {"config.json", "model.safetensors", "tokenizer.json",
                           "tokenizer_config.json", "generation_config.json"}) {
    CHECK(fs::exists(exported + "/" + name));
  }

  REQUIRE(oracle("check " + exported + " " + out + "/check") == 0);
  const json checked = read_json(out + "/check.json");
  CHECK(checked.at("chat_ids") == chat_ids);
  CHECK(checked.at("text_ids") == expected.at("text_ids"));
  CHECK(checked.at("bos_id") == tokenizer->bos_id());
  CHECK(checked.at("eos_id") == tokenizer->eos_id());
  const json& generation = checked.at("generation");
  CHECK(generation.at("bos_token_id") == tokenizer->bos_id());
  CHECK(generation.at("eos_token_id") ==
        json::array({tokenizer->eos_id(), tokenizer->token_id("<|eot_id|>")}));
  CHECK(generation.at("do_sample") == true);
  CHECK(generation.at("temperature") == 0.6);

  const models::safetensors::File logits_file(out + "/check.safetensors");
  const at::Tensor ids = logits_file.read("input_ids");
  CHECK(ids.size(1) == static_cast<int64_t>(chat_ids[0].size()));
  torch::NoGradGuard no_grad;
  const at::Tensor ours = t.model().logits(t.model().forward(ids));
  CHECK(testing::relative_to_max(ours, logits_file.read("logits")) <= 1e-5);
}

TEST_CASE(
    "the export of a SentencePiece sample run: transformers' LlamaTokenizer encodes as we do") {
  const std::string out = testing::temp_dir("hf_folder_sp");
  const config::TrainConfig config = config::parse_config(
      "", "sp.yaml",
      {"data.tokenizer=" + testing::repo_dir() + "/data/samples/shakespeare_bpe1024.model"});
  const auto tokenizer = trainer::load_run_tokenizer(config);
  const std::string summary =
      trainer::TokenizerExport(config, models::ModelFamily::llama).write(out);
  CHECK_HAS(summary, "tokenizer.model copied");
  CHECK_HAS(summary, "tokenizer_config.json written (LlamaTokenizer)");
  CHECK_HAS(summary, "generation_config.json written (eos 2)");
  const json tokenizer_config = read_json(out + "/tokenizer_config.json");
  CHECK(tokenizer_config.at("add_prefix_space") == false);
  CHECK(tokenizer_config.at("bos_token") == "<s>");
  const json generation = read_json(out + "/generation_config.json");
  CHECK(generation.at("bos_token_id") == 1);
  CHECK(generation.at("eos_token_id") == 2);
  CHECK(generation.at("top_p") == 0.9);  // the llama family's published sampling defaults

  const std::string text =
      "First Citizen:\nBefore we proceed any further, hear me speak.\n"
      "All:  Speak, speak.\t1234 caf\xC3\xA9 \xE2\x80\x94 'tis 2024!\n\n";
  write_text(out + "/text.txt", text);
  REQUIRE(oracle("check-tokenizer " + out + " " + out + "/text.txt " + out + "/check.json") == 0);
  const json checked = read_json(out + "/check.json");
  CHECK(checked.at("class") == "LlamaTokenizer");
  CHECK(ids_of(checked.at("ids")) == tokenizer->encode(text));
  CHECK(checked.at("bos_id") == 1);
  CHECK(checked.at("eos_id") == 2);
  std::vector<int32_t> with_bos = {1};
  for (const int32_t id : tokenizer->encode("To be")) with_bos.push_back(id);
  CHECK(ids_of(checked.at("ids_with_specials")) == with_bos);  // data.add_bos -> add_bos_token
}

TEST_CASE(
    "the export of a folder's tokenizer: overrides and stop tokens written, a missing one "
    "refused") {
  const std::string hf = made() + "/hf";
  SECTION("data.eos_token goes into the copied tokenizer_config.json; its chat template stays") {
    const std::string out = testing::temp_dir("hf_folder_eos");
    const config::TrainConfig config =
        config::parse_config("", "a.yaml", {"data.tokenizer=" + hf, "data.eos_token=<|eot_id|>"});
    const std::string summary =
        trainer::TokenizerExport(config, models::ModelFamily::llama).write(out);
    CHECK_HAS(summary, "data.bos_token/eos_token written into tokenizer_config.json");
    const json tokenizer_config = read_json(out + "/tokenizer_config.json");
    CHECK(tokenizer_config.at("eos_token") == "<|eot_id|>");
    CHECK(tokenizer_config.at("bos_token") == "<|begin_of_text|>");
    CHECK(tokenizer_config.at("chat_template") ==
          read_json(hf + "/tokenizer_config.json").at("chat_template"));
    // The folder's generation_config.json (eos [1, 4]) already stops at <|eot_id|>.
    CHECK(read_json(out + "/generation_config.json").at("eos_token_id") == json::array({1, 4}));
  }
  SECTION(
      "a source generation_config.json that lacks the end-of-turn token gets it; none: one is "
      "written") {
    const std::string folder = testing::temp_dir("hf_folder_tokenizer_only");
    for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
      write_text(folder + "/" + name, read_text(hf + "/" + name));
    }
    write_text(folder + "/generation_config.json",
               R"({"bos_token_id": 0, "eos_token_id": 1, "max_length": 77})");
    const std::string out = testing::temp_dir("hf_folder_stops");
    config::TrainConfig config = config::parse_config("", "a.yaml", {"data.tokenizer=" + folder});
    trainer::TokenizerExport(config, models::ModelFamily::mistral).write(out);
    json generation = read_json(out + "/generation_config.json");
    CHECK(generation.at("eos_token_id") == json::array({1, 4}));
    CHECK(generation.at("max_length") == 77);  // the rest is copied as it was

    fs::remove(folder + "/generation_config.json");
    trainer::TokenizerExport(config, models::ModelFamily::mistral).write(out);
    generation = read_json(out + "/generation_config.json");
    CHECK(generation ==
          json({{"bos_token_id", 0}, {"eos_token_id", {1, 4}}}));  // no sampling keys for mistral
  }
  SECTION("a tokenizer that is not there is an error before anything is written") {
    const config::TrainConfig config =
        config::parse_config("", "a.yaml", {"data.tokenizer=no/such/tokenizer.json"});
    try {
      trainer::TokenizerExport(config, models::ModelFamily::llama);
      FAIL("no error");
    } catch (const config::ConfigError& error) {
      CHECK_HAS(error.what(), "data.tokenizer = 'no/such/tokenizer.json' is not found");
      CHECK_HAS(error.what(), "run liger-export where the run was started");
    }
  }
}
