#include "trainer/tokenizer_setup.h"

#include "data/chat.h"
#include "trainer/logging/log.h"

#include <string>

namespace liger::trainer {

std::unique_ptr<data::Tokenizer> load_run_tokenizer(const config::TrainConfig& c) {
  data::TokenizerOptions options;
  options.bos_token = c.data.bos_token;
  options.eos_token = c.data.eos_token;
  std::unique_ptr<data::Tokenizer> tokenizer = data::load_tokenizer(c.data.tokenizer, options);
  if (!c.model.hf_path.empty() && c.data.tokenizer == c.model.hf_path) {
    log::info("tokenizer from model.hf_path: " + tokenizer->describe());
  }

  // What data.chat_template = auto will take for chat data (data/chat.h).
  if (data::parse_chat_template(c.data.chat_template) == data::ChatTemplate::auto_detect &&
      !tokenizer->chat_template().empty()) {
    if (const auto family = data::chat_template_family(tokenizer->chat_template())) {
      log::info(std::string("chat template ") + data::chat_template_name(*family) + " from " +
                tokenizer->chat_template_file() + " (data.chat_template: auto)");
    } else {
      log::info("chat template: the one in " + tokenizer->chat_template_file() +
                " is none of llama3, mistral, gemma, chatml; chat data needs "
                "data.chat_template");
    }
  }

  const std::optional<bool> adds_bos = tokenizer->adds_bos();
  if (adds_bos && *adds_bos != c.data.add_bos) {
    log::warn(std::string("data.add_bos is ") + (c.data.add_bos ? "true" : "false") +
              " but the tokenizer " + c.data.tokenizer + (*adds_bos ? " puts" : " does not put") +
              " BOS first when transformers encodes with it (its tokenizer.json post-processor or "
              "tokenizer_config.json's add_bos_token); set data.add_bos: " +
              (*adds_bos ? "true" : "false") + " to train on text as the model reads it");
  }
  return tokenizer;
}

}  // namespace liger::trainer
