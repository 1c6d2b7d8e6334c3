// liger-tokenize: text, JSONL and chat files -> one tokens_bin file that
// liger-train reads (data.train: [data.bin]) as the same token stream, loss
// mask and document starts it would build from the files themselves.
// Argument parsing and wiring only; the work is data/pretokenize.h.
//
//   liger-tokenize --tokenizer data/samples/shakespeare_bpe1024.model --out data.bin text.txt
//   liger-tokenize --tokenizer /models/Llama-3.2-1B-Instruct --out sft.bin --threads 16 chats.jsonl
//
// The options mirror the data.* keys of the training config (same names, same
// defaults); give the values the training run uses.
#include "data/pretokenize.h"
#include "data/pretokenize_progress.h"
#include "data/readers.h"
#include "data/tokenizer.h"

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

std::string first_line(const std::string& message) {
  const auto newline = message.find('\n');
  return newline == std::string::npos ? message : message.substr(0, newline);
}

// The data/ library's messages name config keys; here the user typed options.
std::string in_command_line_terms(std::string message) {
  const std::pair<const char*, const char*> renames[] = {
      {"data.format", "--format"},           {"data.chat_template", "--chat-template"},
      {"data.token_dtype", "--token-dtype"}, {"data.add_bos", "--add-bos"},
      {"data.add_eos", "--add-eos"},         {"data.bos_token", "--bos-token"},
      {"data.eos_token", "--eos-token"},     {"data.tokenizer", "--tokenizer"},
      {"data.train", "the input files"}};
  for (const auto& [key, option] : renames) {
    const std::string from = key;
    for (size_t at = message.find(from); at != std::string::npos;
         at = message.find(from, at + std::string(option).size())) {
      message.replace(at, from.size(), option);
    }
  }
  return message;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "liger-tokenize: pre-tokenize text, JSONL and chat files into one tokens_bin file for "
      "liger-train (data.train: [OUT]); the options mirror the data.* config keys"};
  std::string tokenizer_path, out, format = "auto", chat_template = "auto", token_dtype = "auto";
  std::vector<std::string> files;
  liger::data::TokenizerOptions tokenizer_options;
  liger::data::PretokenizeOptions options;
  options.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  app.add_option("--tokenizer", tokenizer_path,
                 "tokenizer (data.tokenizer): a SentencePiece .model, a tokenizer.json, or a model "
                 "folder holding one")
      ->required();
  app.add_option("--out", out,
                 "output .bin file (written atomically; OUT.mask beside it when the loss mask or "
                 "document starts need it)")
      ->required();
  app.add_option("--format", format, "data.format")
      ->check(CLI::IsMember({"auto", "text", "jsonl_text", "prompt_completion", "chat",
                             "tokens_jsonl", "tokens_bin"}));
  app.add_option("--chat-template", chat_template, "data.chat_template")
      ->check(CLI::IsMember({"auto", "llama3", "mistral", "gemma"}));
  app.add_option("--bos-token", tokenizer_options.bos_token,
                 "data.bos_token ('' = the tokenizer's)");
  app.add_option("--eos-token", tokenizer_options.eos_token,
                 "data.eos_token ('' = the tokenizer's)");
  app.add_option("--add-bos", options.read.add_bos, "data.add_bos (true or false)");
  app.add_option("--add-eos", options.read.add_eos, "data.add_eos (true or false)");
  app.add_option("--token-dtype", token_dtype, "data.token_dtype, for tokens_bin inputs")
      ->check(CLI::IsMember({"auto", "uint16", "uint32"}));
  app.add_option("--threads", options.threads, "tokenizing threads (default: all cores)")
      ->check(CLI::PositiveNumber);
  app.add_option("files", files, "input files, read in this order (as data.train)")->required();
  CLI11_PARSE(app, argc, argv);

  try {
    options.files = files;
    options.format = liger::data::parse_data_format(format);
    options.read.chat_template = liger::data::parse_chat_template(chat_template);
    options.read.token_dtype = liger::data::parse_token_dtype(token_dtype);
    const auto tokenizer = liger::data::load_tokenizer(tokenizer_path, tokenizer_options);

    // On a terminal the line is redrawn 4 times a second; in a log, a line every 5 s.
    const bool terminal = ::isatty(STDERR_FILENO) != 0;
    liger::data::ProgressLine progress_line(std::cerr, terminal, terminal ? 0.25 : 5.0);
    liger::data::PretokenizeProgress last;
    const liger::data::TokenBinSummary summary = liger::data::pretokenize(
        *tokenizer, options, out, [&](const liger::data::PretokenizeProgress& progress) {
          progress_line.update(progress);
          last = progress;
        });
    progress_line.finish();

    const double per_second =
        last.seconds > 0 ? static_cast<double>(summary.tokens) / last.seconds : 0.0;
    const std::string mask_note =
        summary.mask_path.empty()
            ? "no mask file needed (the ids alone give the loss mask and document starts)"
            : "loss mask and document starts in " + summary.mask_path;
    std::printf("wrote %s: %lld tokens (%s), %lld documents, %.1f s, %.0f tokens/s; %s\n",
                summary.path.c_str(), static_cast<long long>(summary.tokens),
                liger::data::token_dtype_name(summary.dtype),
                static_cast<long long>(summary.documents), last.seconds, per_second,
                mask_note.c_str());
    return 0;
  } catch (const std::exception& error) {
    std::cerr << "error: " << in_command_line_terms(first_line(error.what())) << "\n";
  }
  return 1;
}
