// The tokenizer half of an exported Hugging Face folder, so that the folder is
// complete for transformers (AutoTokenizer, GenerationConfig) and vLLM-style
// loaders:
//   - the run's tokenizer files, copied: tokenizer.json, tokenizer.model,
//     tokenizer_config.json, special_tokens_map.json, chat_template.jinja,
//     whichever the tokenizer's folder has (a tokenizer given as a file is
//     copied under its Hugging Face name, with the side files beside it);
//   - data.bos_token / data.eos_token, when the run set them, written into the
//     copied tokenizer_config.json (and special_tokens_map.json);
//   - a tokenizer_config.json where there is none: LlamaTokenizer over a
//     SentencePiece model (transformers reads tokenizer.model with the
//     `sentencepiece` and `protobuf` packages; it encodes as SentencePiece for
//     models without whitespace-collapsing normalization, such as Llama 2's
//     and the shipped sample), PreTrainedTokenizerFast over a tokenizer.json;
//     with the tokenizer's special tokens;
//   - generation_config.json: model.hf_path's (or the tokenizer folder's)
//     copied, else written with the tokenizer's BOS/EOS ids and, for the
//     llama family, the sampling defaults Meta publishes (do_sample,
//     temperature 0.6, top_p 0.9); either way its eos_token_id also lists the
//     tokenizer's EOS and its end-of-turn token (<|eot_id|>, <end_of_turn>,
//     <|im_end|>) when the vocabulary has one, as Llama 3 Instruct, Gemma 2
//     and Qwen publish, so that a chat fine-tune stops at the end of its turn.
#pragma once

#include "models/model_config.h"

#include "data/tokenizer.h"
#include "trainer/config.h"

#include <memory>
#include <string>
#include <vector>

namespace liger::trainer {

class TokenizerExport {
 public:
  // Finds and loads the tokenizer that `config` (a checkpoint's config.yaml)
  // names, before anything is written: a missing one is a ConfigError naming
  // data.tokenizer. `family` is the model's (ModelConfig::family).
  TokenizerExport(const config::TrainConfig& config, models::ModelFamily family);
  ~TokenizerExport();

  // Writes the files into the existing folder `out_dir`; returns one line
  // naming them ("tokenizer.json, tokenizer_config.json copied; ...").
  std::string write(const std::string& out_dir) const;

 private:
  struct Copy {
    std::string from;  // a file
    std::string name;  // its name in the export
  };
  config::TrainConfig config_;
  models::ModelFamily family_;
  std::unique_ptr<data::Tokenizer> tokenizer_;
  std::vector<Copy> copies_;
  std::string generation_source_;  // "" = write one

  std::string write_tokenizer_config(const std::string& out_dir, bool copied) const;
  std::string write_generation_config(const std::string& out_dir) const;
};

}  // namespace liger::trainer
