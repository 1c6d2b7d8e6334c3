// What a Hugging Face model folder says about its tokenizer besides the
// vocabulary: the special tokens, whether encoding adds BOS/EOS, and the chat
// template. Read from the files beside tokenizer.json / tokenizer.model the
// way transformers (5.x) reads them:
//
//   tokenizer_config.json    bos_token, eos_token, pad_token: "<s>" | {"content": "<s>", ...} |
//   null
//                            add_bos_token, add_eos_token (booleans)
//                            chat_template: a Jinja string, or a list of {"name", "template"}
//                            (the one named "default")
//   special_tokens_map.json  bos/eos/pad_token over tokenizer_config.json's, but only when
//                            tokenizer_config.json has no "added_tokens_decoder" (transformers'
//                            legacy merge; newer folders keep both files in step)
//   chat_template.jinja      the chat template, over tokenizer_config.json's (how transformers 5
//                            saves it)
//
// Absent files and keys are simply not declared; a file that is not a JSON
// object is a DataError naming it.
#pragma once

#include <optional>
#include <string>

namespace liger::data {

struct HfSpecialToken {
  bool declared = false;  // some file names it (possibly as null)
  std::string content;    // its spelling; "" when declared null (the tokenizer has none)
  std::string file;       // the file that declared it
};

struct HfTokenizerConfig {
  std::string folder;
  HfSpecialToken bos, eos, pad;
  std::optional<bool> add_bos_token, add_eos_token;  // tokenizer_config.json's
  std::string chat_template;                         // Jinja source; "" = none
  std::string chat_template_file;                    // the file it came from
};

// The folder whose side files belong to the tokenizer at `tokenizer_path`:
// the path itself for a folder, else the file's folder.
std::string tokenizer_folder(const std::string& tokenizer_path);

// Reads the side files of `folder` (none of them is required).
HfTokenizerConfig read_hf_tokenizer_config(const std::string& folder);

}  // namespace liger::data
