// Chat templates: a conversation ([{role, content}, ...]) rendered the way a
// model family was instruction-tuned, as segments that say which parts are
// loss targets (the assistant's content and its end-of-turn token) and which
// are special tokens (placed by id, never tokenized from their spelling).
//
//   llama3   <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>   (per message)
//   mistral  [INST]{user}[/INST]{assistant}</s>      system: "{system}\n\n" before the first user
//            (with a tokenizer that has no [INST] token, e.g. Mistral v1's SentencePiece,
//            the markers are text: "[INST] {user} [/INST]")
//   gemma
//   <start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n{assistant}<end_of_turn>\n
//            system: "{system}\n\n" before the first user
//   chatml   <|im_start|>{role}\n{content}<|im_end|>\n   (per message; Qwen 2, 2.5 and 3)
//            the loss covers the assistant's content and <|im_end|>, not the "\n" after it;
//            no default system message is added (Qwen2.5's Jinja adds one when none is given)
//
// BOS is not part of the rendering: the reader puts it first (data.add_bos).
// Roles are system (first message only), user and assistant; mistral and gemma
// need user/assistant turns to alternate, starting with user.
#pragma once

#include "data/tokenizer.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace liger::data {

enum class ChatTemplate { auto_detect, llama3, mistral, gemma, chatml };

// The config spelling (auto, llama3, mistral, gemma, chatml); DataError for anything else.
ChatTemplate parse_chat_template(const std::string& name);
const char* chat_template_name(ChatTemplate chat_template);

// The family of a Jinja chat template (tokenizer_config.json's chat_template;
// we do not run Jinja) by its markers: <|start_header_id|> -> llama3,
// <start_of_turn> -> gemma, [INST] -> mistral, <|im_start|> -> chatml;
// nullopt for anything else.
std::optional<ChatTemplate> chat_template_family(const std::string& jinja);

// data.chat_template = auto: the template a tokenizer was made for.
//   - the tokenizer's folder declares a chat template (tokenizer.chat_template()):
//     its family; DataError naming the file and data.chat_template when it is
//     none of llama3, mistral, gemma, chatml;
//   - else from its special tokens: <|start_header_id|> -> llama3,
//     <start_of_turn> -> gemma, [INST] -> mistral, <|im_start|> -> chatml;
//     DataError (asking for data.chat_template) when none is found.
ChatTemplate detect_chat_template(const Tokenizer& tokenizer);

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatSegment {
  enum class Kind { text, special, eos };
  Kind kind = Kind::text;
  std::string text;      // the text; a special token's spelling; "</s>" for eos
  bool train = false;    // 1 in the loss mask
  std::string fallback;  // special: text used when the tokenizer lacks the token ("" = required)
};

// Checks `messages` (roles, order, an assistant turn to train on) and renders
// them with `chat_template` (not auto_detect). DataError naming file:line.
std::vector<ChatSegment> render_chat(ChatTemplate chat_template,
                                     const std::vector<ChatMessage>& messages,
                                     const std::string& file, int64_t line);

// The rendering as one string, special tokens spelled out (for tests and logs).
std::string chat_text(const std::vector<ChatSegment>& segments);

}  // namespace liger::data
