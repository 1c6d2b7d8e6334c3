#include "data/chat.h"

#include "data/data_error.h"

#include <stdexcept>

namespace liger::data {

namespace {

const char* const kTemplateChoices = "auto, llama3, mistral, gemma, chatml";

ChatSegment text(std::string value, bool train = false) {
  ChatSegment segment;
  segment.text = std::move(value);
  segment.train = train;
  return segment;
}

ChatSegment special(std::string token, bool train = false, std::string fallback = "") {
  ChatSegment segment;
  segment.kind = ChatSegment::Kind::special;
  segment.text = std::move(token);
  segment.train = train;
  segment.fallback = std::move(fallback);
  return segment;
}

ChatSegment eos(bool train) {
  ChatSegment segment;
  segment.kind = ChatSegment::Kind::eos;
  segment.text = "</s>";
  segment.train = train;
  return segment;
}

// Roles known, system only first, at least one assistant turn; for templates
// that need it, user/assistant alternate starting with user.
void check_messages(ChatTemplate chat_template, const std::vector<ChatMessage>& messages,
                    const std::string& file, int64_t line) {
  if (messages.empty()) {
    throw DataError(
        file, line,
        "\"messages\" is empty; a conversation needs at least a user and an assistant turn");
  }
  bool has_assistant = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      throw DataError(file, line,
                      "messages[" + std::to_string(i) + "] has role \"" + role +
                          "\"; the roles are system, user and assistant");
    }
    if (role == "system" && i != 0) {
      throw DataError(file, line,
                      "messages[" + std::to_string(i) +
                          "] is a system message; only the first message may "
                          "be one: move it to the front or merge it into a user turn");
    }
    has_assistant |= role == "assistant";
  }
  if (!has_assistant) {
    throw DataError(
        file, line,
        "the conversation has no assistant turn, so nothing in it is trained on; add the "
        "assistant's reply or remove the line");
  }
  if (chat_template == ChatTemplate::mistral || chat_template == ChatTemplate::gemma) {
    const size_t first = messages[0].role == "system" ? 1 : 0;
    for (size_t i = first; i < messages.size(); ++i) {
      const char* expected = (i - first) % 2 == 0 ? "user" : "assistant";
      if (messages[i].role != expected) {
        throw DataError(
            file, line,
            "messages[" + std::to_string(i) + "] has role \"" + messages[i].role + "\" where \"" +
                expected + "\" is due: the " + chat_template_name(chat_template) +
                " template needs user and assistant turns to alternate, starting with user");
      }
    }
  }
}

// ChatML has a system role: every message is one block.
std::vector<ChatSegment> render_chatml(const std::vector<ChatMessage>& messages) {
  std::vector<ChatSegment> out;
  for (const ChatMessage& m : messages) {
    const bool train = m.role == "assistant";
    out.push_back(special("<|im_start|>"));
    out.push_back(text(m.role + "\n"));
    out.push_back(text(m.content, train));
    out.push_back(special("<|im_end|>", train));
    out.push_back(text("\n"));
  }
  return out;
}

std::vector<ChatSegment> render_llama3(const std::vector<ChatMessage>& messages) {
  std::vector<ChatSegment> out;
  for (const ChatMessage& m : messages) {
    const bool train = m.role == "assistant";
    out.push_back(special("<|start_header_id|>"));
    out.push_back(text(m.role));
    out.push_back(special("<|end_header_id|>"));
    out.push_back(text("\n\n"));
    out.push_back(text(m.content, train));
    out.push_back(special("<|eot_id|>", train));
  }
  return out;
}

// Mistral and Gemma have no system role: it goes before the first user turn.
std::vector<ChatMessage> fold_system(const std::vector<ChatMessage>& messages) {
  if (messages.empty() || messages[0].role != "system") return messages;
  std::vector<ChatMessage> folded(messages.begin() + 1, messages.end());
  if (!folded.empty()) folded[0].content = messages[0].content + "\n\n" + folded[0].content;
  return folded;
}

std::vector<ChatSegment> render_mistral(const std::vector<ChatMessage>& messages) {
  std::vector<ChatSegment> out;
  for (const ChatMessage& m : fold_system(messages)) {
    if (m.role == "user") {
      out.push_back(special("[INST]", false, "[INST] "));
      out.push_back(text(m.content));
      out.push_back(special("[/INST]", false, " [/INST]"));
    } else {
      out.push_back(text(m.content, true));
      out.push_back(eos(true));
    }
  }
  return out;
}

std::vector<ChatSegment> render_gemma(const std::vector<ChatMessage>& messages) {
  std::vector<ChatSegment> out;
  for (const ChatMessage& m : fold_system(messages)) {
    const bool train = m.role == "assistant";
    out.push_back(special("<start_of_turn>"));
    out.push_back(text(train ? "model\n" : "user\n"));
    out.push_back(text(m.content, train));
    out.push_back(special("<end_of_turn>", train));
    out.push_back(text("\n"));
  }
  return out;
}

}  // namespace

ChatTemplate parse_chat_template(const std::string& name) {
  if (name == "auto") return ChatTemplate::auto_detect;
  if (name == "llama3") return ChatTemplate::llama3;
  if (name == "mistral") return ChatTemplate::mistral;
  if (name == "gemma") return ChatTemplate::gemma;
  if (name == "chatml") return ChatTemplate::chatml;
  throw DataError("data.chat_template: unknown template '" + name +
                  "'; choose one of: " + kTemplateChoices);
}

const char* chat_template_name(ChatTemplate chat_template) {
  switch (chat_template) {
    case ChatTemplate::auto_detect: return "auto";
    case ChatTemplate::llama3: return "llama3";
    case ChatTemplate::mistral: return "mistral";
    case ChatTemplate::gemma: return "gemma";
    case ChatTemplate::chatml: return "chatml";
  }
  return "unknown";
}

std::optional<ChatTemplate> chat_template_family(const std::string& jinja) {
  auto has = [&](const char* marker) { return jinja.find(marker) != std::string::npos; };
  if (has("<|start_header_id|>") && has("<|eot_id|>")) return ChatTemplate::llama3;
  if (has("<start_of_turn>") && has("<end_of_turn>")) return ChatTemplate::gemma;
  if (has("[INST]") && has("[/INST]")) return ChatTemplate::mistral;
  if (has("<|im_start|>") && has("<|im_end|>")) return ChatTemplate::chatml;
  return std::nullopt;
}

ChatTemplate detect_chat_template(const Tokenizer& tokenizer) {
  if (!tokenizer.chat_template().empty()) {
    if (const auto family = chat_template_family(tokenizer.chat_template())) return *family;
    throw DataError(
        tokenizer.chat_template_file() +
        ": its chat template is none of the formats liger-train renders (no "
        "<|start_header_id|> as llama3, [INST] as mistral, <start_of_turn> as gemma or "
        "<|im_start|> as chatml); set data.chat_template to llama3, mistral, gemma or chatml if "
        "the model was tuned on one of them, or give the data as prompt_completion");
  }
  if (tokenizer.token_id("<|start_header_id|>") >= 0 && tokenizer.token_id("<|eot_id|>") >= 0) {
    return ChatTemplate::llama3;
  }
  if (tokenizer.token_id("<start_of_turn>") >= 0 && tokenizer.token_id("<end_of_turn>") >= 0) {
    return ChatTemplate::gemma;
  }
  if (tokenizer.token_id("[INST]") >= 0 && tokenizer.token_id("[/INST]") >= 0)
    return ChatTemplate::mistral;
  if (tokenizer.token_id("<|im_start|>") >= 0 && tokenizer.token_id("<|im_end|>") >= 0)
    return ChatTemplate::chatml;
  throw DataError("data.chat_template = auto cannot tell the chat template from the tokenizer " +
                  tokenizer.describe() +
                  ": it has none of <|start_header_id|> (llama3), <start_of_turn> (gemma), [INST] "
                  "(mistral), <|im_start|> (chatml); set data.chat_template to llama3, mistral, "
                  "gemma or chatml");
}

std::vector<ChatSegment> render_chat(ChatTemplate chat_template,
                                     const std::vector<ChatMessage>& messages,
                                     const std::string& file, int64_t line) {
  check_messages(chat_template, messages, file, line);
  switch (chat_template) {
    case ChatTemplate::llama3: return render_llama3(messages);
    case ChatTemplate::mistral: return render_mistral(messages);
    case ChatTemplate::gemma: return render_gemma(messages);
    case ChatTemplate::chatml: return render_chatml(messages);
    case ChatTemplate::auto_detect: break;
  }
  throw std::logic_error("render_chat: the template must be resolved before rendering");
}

std::string chat_text(const std::vector<ChatSegment>& segments) {
  std::string out;
  for (const ChatSegment& segment : segments) out += segment.text;
  return out;
}

}  // namespace liger::data
