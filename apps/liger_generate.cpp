// liger-generate: text from a checkpoint or a Hugging Face folder, greedy or
// temperature + top-p, with a KV cache. Argument parsing and wiring only.
//
//   liger-generate --checkpoint runs/tiny/step-400 --prompt "ROMEO:" [--max-new-tokens 64]
//   liger-generate --hf path/to/hf-model --prompt "..." --temperature 0   (greedy)
#include "data/data_error.h"
#include "data/tokenizer.h"
#include "models/generate.h"
#include "trainer/export.h"

#include <CLI/CLI.hpp>

#include <iostream>
#include <optional>

namespace {

std::string first_line(const std::string& message) {
  const auto newline = message.find('\n');
  return newline == std::string::npos ? message : message.substr(0, newline);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"liger-generate: sample text from a checkpoint or a Hugging Face model"};
  std::string checkpoint, hf, tokenizer_path, prompt, device = "auto", dtype;
  liger::models::GenerationOptions options;
  bool no_cache = false, print_ids = false;
  auto* source = app.add_option_group("model", "where the model comes from");
  source->add_option("--checkpoint", checkpoint, "checkpoint folder (runs/NAME/step-N)");
  source->add_option("--hf", hf, "Hugging Face model folder (config.json + *.safetensors)");
  source->require_option(1);
  app.add_option("--prompt", prompt, "text to continue")->required();
  app.add_option("--tokenizer", tokenizer_path,
                 "tokenizer (default: the checkpoint's data.tokenizer, or the --hf folder)");
  app.add_option("--max-new-tokens", options.max_new_tokens, "tokens to generate at most")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--temperature", options.temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", options.top_p, "nucleus sampling threshold")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", options.seed, "sampling seed");
  app.add_option("--device", device, "auto, cpu or cuda")
      ->check(CLI::IsMember(liger::config::enum_names<liger::config::Device>()));
  app.add_option("--dtype", dtype,
                 "fp32, bf16 or fp16 (default: the checkpoint's model.dtype; fp32 for --hf)")
      ->check(CLI::IsMember(liger::config::enum_input_names<liger::config::Dtype>()));
  app.add_flag("--no-cache", no_cache,
               "re-run the whole context for every token (slow; for checks)");
  app.add_flag("--print-ids", print_ids, "print the token ids instead of the text");
  CLI11_PARSE(app, argc, argv);
  options.use_cache = !no_cache;

  // The names were checked against the same tables above.
  const liger::config::Device target =
      *liger::config::enum_from_name<liger::config::Device>(device);
  const std::optional<liger::config::Dtype> chosen_dtype =
      dtype.empty() ? std::nullopt : liger::config::enum_from_name<liger::config::Dtype>(dtype);

  try {
    liger::models::Transformer model{nullptr};
    bool add_bos = true;
    if (!checkpoint.empty()) {
      liger::trainer::LoadedModel loaded =
          liger::trainer::load_checkpoint_model(checkpoint, target, chosen_dtype);
      model = loaded.model;
      add_bos = loaded.config.data.add_bos;
      if (tokenizer_path.empty()) tokenizer_path = loaded.config.data.tokenizer;
    } else {
      model = liger::trainer::load_hf_model(hf, target,
                                            chosen_dtype.value_or(liger::config::Dtype::fp32));
      if (tokenizer_path.empty()) tokenizer_path = hf;
    }
    const auto tokenizer = liger::data::load_tokenizer(tokenizer_path);
    const auto& config = model->config();

    std::vector<int64_t> ids;
    const int64_t bos = config.bos_token_id >= 0 ? config.bos_token_id : tokenizer->bos_id();
    if (add_bos && bos >= 0) ids.push_back(bos);
    for (int32_t id : tokenizer->encode(prompt)) ids.push_back(id);
    const size_t prompt_length = ids.size();
    options.eos_id = tokenizer->eos_id();
    options.stop_ids = config.eos_token_ids;

    const std::vector<int64_t> tokens = liger::models::generate(*model, ids, options);
    if (print_ids) {
      for (size_t i = 0; i < tokens.size(); ++i) std::cout << (i ? " " : "") << tokens[i];
      std::cout << "\n";
      return 0;
    }
    std::vector<int32_t> generated;
    for (size_t i = prompt_length; i < tokens.size(); ++i) {
      const bool stop = tokens[i] == options.eos_id ||
                        std::find(options.stop_ids.begin(), options.stop_ids.end(), tokens[i]) !=
                            options.stop_ids.end();
      if (!stop) generated.push_back(static_cast<int32_t>(tokens[i]));
    }
    std::cout << prompt << tokenizer->decode(generated) << "\n";
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "error: " << first_line(error.what()) << "\n";
  }
  return 1;
}
