#include "data/readers.h"

#include "data/data_error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

namespace liger::data {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* const kFormatChoices =
    "auto, text, jsonl_text, prompt_completion, chat, tokens_jsonl, tokens_bin";
const char* const kTextExample = R"({"text": "..."})";
const char* const kPromptCompletionExample = R"({"prompt": "...", "completion": "..."})";
const char* const kChatExample =
    R"({"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]})";
const char* const kTokensExample = R"({"input_ids": [1, 2, 3], "labels": [-100, 2, 3]})";

// The example line of a JSONL format, for messages.
const char* example_of(DataFormat format) {
  switch (format) {
    case DataFormat::prompt_completion: return kPromptCompletionExample;
    case DataFormat::chat: return kChatExample;
    case DataFormat::tokens_jsonl: return kTokensExample;
    default: return kTextExample;
  }
}

// llm.c's .bin header: 256 int32, [0] magic, [1] version (1: uint16, 2: uint32), [2] token count.
constexpr int32_t kLlmcMagic = 20240520;
constexpr int64_t kLlmcHeaderBytes = 256 * 4;

// ---------------------------------------------------------------------------
// Files and lines
// ---------------------------------------------------------------------------

// Opens `path` for binary reading, or throws a DataError that says why not.
std::ifstream open_data_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    throw DataError(
        path, 1,
        "no such file; check the path in data.train (relative paths are resolved against "
        "the working directory " +
            fs::current_path(ec).string() + ")");
  }
  if (fs::is_directory(path, ec)) {
    throw DataError(path, 1,
                    "is a folder, not a file; list the data files themselves in data.train");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw DataError(path, 1,
                    std::string("cannot be opened for reading (") + std::strerror(errno) +
                        "); check the file's permissions");
  }
  return in;
}

bool is_blank(const std::string& text) {
  return std::all_of(text.begin(), text.end(),
                     [](unsigned char c) { return std::isspace(c) != 0; });
}

// Drops a UTF-8 byte order mark (editors on Windows like to write one).
void strip_utf8_bom(std::string& text) {
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);
}

// Drops the '\r' of a CRLF line ending.
void strip_carriage_return(std::string& line) {
  if (!line.empty() && line.back() == '\r') line.pop_back();
}

// ---------------------------------------------------------------------------
// JSON records
// ---------------------------------------------------------------------------

// nlohmann's parse message without its "[json.exception...]" tag and with the
// column only (we parse one line at a time, so its "line 1" would mislead).
std::string short_parse_message(const std::string& what) {
  std::string message = what;
  const auto tag_end = message.find("] ");
  if (message.rfind("[json.exception", 0) == 0 && tag_end != std::string::npos) {
    message.erase(0, tag_end + 2);
  }
  const std::string line_one = "at line 1, column ";
  const auto at = message.find(line_one);
  if (at != std::string::npos) message.replace(at, line_one.size(), "at column ");
  return message;
}

// Parses one JSONL line that must hold a JSON object.
json parse_json_object(const std::string& line, const std::string& path, int64_t line_no,
                       const std::string& expected) {
  json record;
  try {
    record = json::parse(line);
  } catch (const json::parse_error& e) {
    const auto first = line.find_first_not_of(" \t");
    const bool opens_multiline_json =
        line.find_first_not_of(" \t", first + 1) == std::string::npos &&
        (line[first] == '[' || line[first] == '{');
    if (opens_multiline_json) {
      throw DataError(
          path, line_no,
          "this looks like JSON spread over several lines, but the reader wants JSON Lines: "
          "one complete object per line, e.g. " +
              expected);
    }
    throw DataError(path, line_no,
                    "not valid JSON (" + short_parse_message(e.what()) +
                        "); each line must be one complete JSON object, e.g. " + expected);
  }
  if (!record.is_object()) {
    throw DataError(path, line_no,
                    std::string("expected a JSON object, got ") + record.type_name() +
                        "; each line must be "
                        "one object, e.g. " +
                        expected);
  }
  return record;
}

// "\"a\", \"b\"" — the fields a record has, for messages.
std::string field_names(const json& record) {
  if (record.empty()) return "no fields";
  std::string names;
  for (auto it = record.begin(); it != record.end(); ++it) {
    if (!names.empty()) names += ", ";
    names += "\"" + it.key() + "\"";
  }
  return names;
}

// The string field `name` of `record`; DataError at path:line when it is missing
// or not a string.
const std::string& string_field(const json& record, const char* name, const std::string& path,
                                int64_t line_no, DataFormat format) {
  const auto it = record.find(name);
  if (it == record.end()) {
    throw DataError(path, line_no,
                    std::string("missing field \"") + name + "\" (the record has " +
                        field_names(record) + "); every line of a " + data_format_name(format) +
                        " file needs it, e.g. " + example_of(format) +
                        " (or set data.format to match the file)");
  }
  if (!it->is_string()) {
    throw DataError(path, line_no,
                    std::string("field \"") + name + "\" must be a string, got " + it->type_name() +
                        " (" + it->dump().substr(0, 60) + ")");
  }
  return it->get_ref<const std::string&>();
}

// ---------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------

// Assembles [BOS] pieces... [EOS] with their loss mask.
class DocumentBuilder {
 public:
  DocumentBuilder(const Tokenizer& tokenizer, const ReadOptions& options, const std::string& path,
                  int64_t line)
      : tokenizer_(tokenizer), options_(options) {
    doc_.file = path;
    doc_.line = line;
    if (options_.add_bos) append_id(tokenizer_.bos_id(), /*target=*/0);
  }

  // Appends the tokens of `text`, each with loss mask `target`.
  void append_text(const std::string& text, uint8_t target) {
    std::vector<int32_t> ids;
    try {
      ids = tokenizer_.encode(text);
    } catch (const std::exception& e) {
      throw DataError(doc_.file, doc_.line, e.what());
    }
    doc_.tokens.insert(doc_.tokens.end(), ids.begin(), ids.end());
    doc_.loss_mask.insert(doc_.loss_mask.end(), ids.size(), target);
  }

  void append_id(int32_t id, uint8_t target) {
    doc_.tokens.push_back(id);
    doc_.loss_mask.push_back(target);
  }

  Document finish(bool add_eos) {
    if (add_eos) append_id(tokenizer_.eos_id(), /*target=*/1);
    return std::move(doc_);
  }
  Document finish() { return finish(options_.add_eos); }

 private:
  const Tokenizer& tokenizer_;
  const ReadOptions& options_;
  Document doc_;
};

// The tokenizer must have the special tokens the options ask for (chat
// documents take no EOS; pre-tokenized ones neither).
void check_special_tokens(const Tokenizer& tokenizer, const ReadOptions& options,
                          DataFormat format) {
  if (format == DataFormat::tokens_jsonl || format == DataFormat::tokens_bin) return;
  if (options.add_bos && tokenizer.bos_id() < 0) {
    throw DataError("the tokenizer " + tokenizer.describe() +
                    " has no BOS token; set data.add_bos: false or name one with data.bos_token");
  }
  if (options.add_eos && format != DataFormat::chat && tokenizer.eos_id() < 0) {
    throw DataError("the tokenizer " + tokenizer.describe() +
                    " has no EOS token; set data.add_eos: false or name one with data.eos_token");
  }
}

// ---------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------

// The "messages" of a chat record, checked for shape (roles and order are
// checked by render_chat).
std::vector<ChatMessage> chat_messages(const json& record, const std::string& path,
                                       int64_t line_no) {
  const auto it = record.find("messages");
  if (it == record.end()) {
    throw DataError(path, line_no,
                    "missing field \"messages\" (the record has " + field_names(record) +
                        "); every line of a chat file needs it, e.g. " + kChatExample +
                        " (or set data.format to match the file)");
  }
  if (!it->is_array()) {
    throw DataError(
        path, line_no,
        std::string("\"messages\" must be a list of {\"role\", \"content\"} objects, got ") +
            it->type_name());
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& message = (*it)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!message.is_object()) {
      throw DataError(path, line_no,
                      where + " must be an object {\"role\": ..., \"content\": ...}, got " +
                          message.type_name());
    }
    const auto role = message.find("role");
    const auto content = message.find("content");
    if (role == message.end() || !role->is_string()) {
      throw DataError(path, line_no,
                      where + " needs a string \"role\" (system, user or assistant)");
    }
    if (content == message.end() || !content->is_string()) {
      throw DataError(
          path, line_no,
          where + " needs a string \"content\"" +
              (content == message.end() ? std::string()
                                        : std::string(", got ") + content->type_name()) +
              " (lists of content parts and tool calls are not supported)");
    }
    messages.push_back({role->get<std::string>(), content->get<std::string>()});
  }
  return messages;
}

// Appends the rendered conversation: special tokens by id, each run of text
// with one loss flag tokenized on its own.
void append_chat(DocumentBuilder& doc, const std::vector<ChatSegment>& segments,
                 const Tokenizer& tokenizer, ChatTemplate chat_template, const std::string& path,
                 int64_t line_no) {
  std::string run;
  bool run_train = false;
  auto flush = [&] {
    if (!run.empty()) doc.append_text(run, run_train ? 1 : 0);
    run.clear();
  };
  for (const ChatSegment& segment : segments) {
    int32_t id = -1;
    if (segment.kind == ChatSegment::Kind::eos) {
      id = tokenizer.eos_id();
    } else if (segment.kind == ChatSegment::Kind::special) {
      id = tokenizer.token_id(segment.text);
    }
    const bool as_text =
        segment.kind == ChatSegment::Kind::text ||
        (segment.kind == ChatSegment::Kind::special && id < 0 && !segment.fallback.empty());
    if (as_text) {
      if (!run.empty() && run_train != segment.train) flush();
      run_train = segment.train;
      run += segment.kind == ChatSegment::Kind::text ? segment.text : segment.fallback;
      continue;
    }
    if (id < 0) {
      throw DataError(path, line_no,
                      std::string("the ") + chat_template_name(chat_template) +
                          " chat template needs the token " +
                          (segment.kind == ChatSegment::Kind::eos ? std::string("EOS")
                                                                  : "'" + segment.text + "'") +
                          ", which the tokenizer " + tokenizer.describe() +
                          " does not have; use the model's own tokenizer (data.tokenizer) or set "
                          "data.chat_template to the model's family");
    }
    flush();
    doc.append_id(id, segment.train ? 1 : 0);
  }
  flush();
}

// ---------------------------------------------------------------------------
// Pre-tokenized data
// ---------------------------------------------------------------------------

int64_t vocab_limit(const Tokenizer& tokenizer, const ReadOptions& options) {
  return options.vocab_limit > 0 ? options.vocab_limit : tokenizer.vocab_size();
}

// {"input_ids": [...], "labels": [...]?} -> a document taken as it is.
Document tokens_document(const json& record, const std::string& path, int64_t line_no,
                         const Tokenizer& tokenizer, const ReadOptions& options) {
  const int64_t limit = vocab_limit(tokenizer, options);
  const auto ids_it = record.find("input_ids");
  if (ids_it == record.end()) {
    throw DataError(path, line_no,
                    "missing field \"input_ids\" (the record has " + field_names(record) +
                        "); every line of a tokens_jsonl file needs it, e.g. " + kTokensExample +
                        " (or set data.format to match the file)");
  }
  if (!ids_it->is_array() || ids_it->empty()) {
    throw DataError(path, line_no,
                    std::string("\"input_ids\" must be a non-empty list of token ids, got ") +
                        (ids_it->is_array() ? "an empty list" : ids_it->type_name()));
  }
  Document doc;
  doc.file = path;
  doc.line = line_no;
  doc.tokens.reserve(ids_it->size());
  for (size_t i = 0; i < ids_it->size(); ++i) {
    const json& value = (*ids_it)[i];
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= limit) {
      throw DataError(path, line_no,
                      "input_ids[" + std::to_string(i) + "] = " + value.dump() +
                          " is not a token id in " + options.vocab_owner + " [0, " +
                          std::to_string(limit) +
                          "); pre-tokenize with the tokenizer the model was trained with");
    }
    doc.tokens.push_back(static_cast<int32_t>(value.get<int64_t>()));
  }
  const auto labels_it = record.find("labels");
  if (labels_it == record.end() || labels_it->is_null()) {
    const int32_t bos = tokenizer.bos_id();
    for (const int32_t id : doc.tokens) doc.loss_mask.push_back(id == bos ? 0 : 1);
    return doc;
  }
  if (!labels_it->is_array() || labels_it->size() != ids_it->size()) {
    throw DataError(path, line_no,
                    "\"labels\" must be a list as long as \"input_ids\" (" +
                        std::to_string(ids_it->size()) + "), got " +
                        (labels_it->is_array() ? std::to_string(labels_it->size()) + " items"
                                               : std::string(labels_it->type_name())));
  }
  for (size_t i = 0; i < labels_it->size(); ++i) {
    const json& label = (*labels_it)[i];
    const bool ignored = label.is_number_integer() && label.get<int64_t>() == -100;
    const bool same = label.is_number_integer() && label.get<int64_t>() == doc.tokens[i];
    if (!ignored && !same) {
      throw DataError(
          path, line_no,
          "labels[" + std::to_string(i) + "] = " + label.dump() +
              " is neither -100 nor input_ids[" + std::to_string(i) +
              "] = " + std::to_string(doc.tokens[i]) +
              "; labels must be input_ids with -100 where nothing is trained (unshifted, "
              "the Hugging Face convention)");
    }
    doc.loss_mask.push_back(ignored ? 0 : 1);
  }
  return doc;
}

// A flat binary token file (nanoGPT / llm.c), split into documents at BOS
// tokens (else after EOS tokens).
void read_token_bin(const std::string& path, const Tokenizer& tokenizer, const ReadOptions& options,
                    const std::function<void(Document&&)>& sink) {
  std::ifstream in = open_data_file(path);
  std::error_code ec;
  const auto file_bytes = static_cast<int64_t>(fs::file_size(path, ec));
  if (ec) throw DataError(path, 1, "cannot tell the file's size (" + ec.message() + ")");

  // An llm.c header, if there is one.
  int64_t header_bytes = 0;
  TokenDtype dtype = options.token_dtype;
  if (file_bytes >= kLlmcHeaderBytes) {
    std::array<int32_t, 256> header{};
    in.read(reinterpret_cast<char*>(header.data()), kLlmcHeaderBytes);  // little-endian hosts only
    if (header[0] == kLlmcMagic && (header[1] == 1 || header[1] == 2)) {
      const TokenDtype header_dtype = header[1] == 1 ? TokenDtype::uint16 : TokenDtype::uint32;
      const int64_t width = header[1] == 1 ? 2 : 4;
      if (kLlmcHeaderBytes + int64_t{header[2]} * width != file_bytes) {
        throw DataError(path + ": the llm.c header promises " + std::to_string(header[2]) +
                        " tokens of " + std::to_string(width) + " bytes, but the file has " +
                        std::to_string(file_bytes) +
                        " bytes; the file is truncated or not an llm.c token file");
      }
      if (dtype != TokenDtype::auto_detect && dtype != header_dtype) {
        throw DataError(path + ": the llm.c header says " + token_dtype_name(header_dtype) +
                        " tokens but data.token_dtype is " + token_dtype_name(dtype) +
                        "; set data.token_dtype to auto or " + token_dtype_name(header_dtype));
      }
      dtype = header_dtype;
      header_bytes = kLlmcHeaderBytes;
    }
  }
  if (dtype == TokenDtype::auto_detect) {
    throw DataError(
        path +
        ": a .bin token file without an llm.c header; set data.token_dtype to uint16 or "
        "uint32 (the width its token ids were written with; nanoGPT writes uint16)");
  }
  const int64_t width = dtype == TokenDtype::uint16 ? 2 : 4;
  const int64_t payload = file_bytes - header_bytes;
  if (payload % width != 0) {
    throw DataError(path + ": " + std::to_string(payload) +
                    " bytes of tokens is not a multiple of " + std::to_string(width) + " (" +
                    token_dtype_name(dtype) +
                    "); check data.token_dtype or whether the file is truncated");
  }
  if (payload == 0) {
    throw DataError(path + ": the file holds no tokens; remove it from data.train");
  }
  in.clear();
  in.seekg(header_bytes);

  const int64_t limit = vocab_limit(tokenizer, options);
  const int32_t bos = tokenizer.bos_id(), eos = tokenizer.eos_id();
  Document doc;
  doc.file = path;
  auto emit = [&] {
    if (doc.tokens.empty()) return;
    sink(std::move(doc));
    doc = Document();
    doc.file = path;
  };
  constexpr int64_t kChunkTokens = 1 << 20;
  std::vector<char> buffer(static_cast<size_t>(kChunkTokens * width));
  const int64_t total = payload / width;
  for (int64_t first = 0; first < total; first += kChunkTokens) {
    const int64_t count = std::min(kChunkTokens, total - first);
    in.read(buffer.data(), count * width);
    if (!in)
      throw DataError(path + ": reading the file failed at byte " +
                      std::to_string(header_bytes + first * width));
    for (int64_t i = 0; i < count; ++i) {
      int64_t id = 0;
      if (width == 2) {
        uint16_t value;
        std::memcpy(&value, buffer.data() + i * 2, 2);
        id = value;
      } else {
        uint32_t value;
        std::memcpy(&value, buffer.data() + i * 4, 4);
        id = value;
      }
      if (id >= limit) {
        const int64_t index = first + i;
        throw DataError(path + ": at byte offset " + std::to_string(header_bytes + index * width) +
                        " (token " + std::to_string(index) + "): token id " + std::to_string(id) +
                        " is outside " + options.vocab_owner + " [0, " + std::to_string(limit) +
                        "); check data.token_dtype (" + token_dtype_name(dtype) +
                        ") and that the file was made with the model's tokenizer");
      }
      const auto token = static_cast<int32_t>(id);
      if (bos >= 0 && token == bos) emit();
      doc.tokens.push_back(token);
      doc.loss_mask.push_back(token == bos ? 0 : 1);
      if (bos < 0 && eos >= 0 && token == eos) emit();
    }
  }
  emit();
}

// A text file is one document; all of its tokens are targets.
void read_text_file(const std::string& path, const Tokenizer& tokenizer, const ReadOptions& options,
                    const std::function<void(Document&&)>& sink) {
  std::ifstream in = open_data_file(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw DataError(path, 1, "reading the file failed; check that it is readable");
  strip_utf8_bom(text);
  if (is_blank(text)) {
    throw DataError(
        path, 1,
        std::string(text.empty() ? "the file is empty" : "the file has only whitespace") +
            ": no documents; put training text in it or remove it from data.train");
  }
  DocumentBuilder doc(tokenizer, options, path, 1);
  doc.append_text(text, 1);
  sink(doc.finish());
}

// One document per non-empty line: "text", or "prompt" (context) + "completion" (targets).
void read_jsonl_file(const std::string& path, DataFormat format, const Tokenizer& tokenizer,
                     const ReadOptions& options, const std::function<void(Document&&)>& sink) {
  const std::string expected = example_of(format);
  ChatTemplate chat_template = options.chat_template;
  if (format == DataFormat::chat && chat_template == ChatTemplate::auto_detect) {
    chat_template = detect_chat_template(tokenizer);
  }
  std::ifstream in = open_data_file(path);
  std::string line;
  int64_t line_no = 0;
  int64_t documents = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line_no == 1) strip_utf8_bom(line);
    strip_carriage_return(line);
    if (is_blank(line)) continue;

    const json record = parse_json_object(line, path, line_no, expected);
    ++documents;
    if (format == DataFormat::tokens_jsonl) {
      sink(tokens_document(record, path, line_no, tokenizer, options));
      continue;
    }
    DocumentBuilder doc(tokenizer, options, path, line_no);
    if (format == DataFormat::jsonl_text) {
      doc.append_text(string_field(record, "text", path, line_no, format), 1);
    } else if (format == DataFormat::chat) {
      const std::vector<ChatMessage> messages = chat_messages(record, path, line_no);
      append_chat(doc, render_chat(chat_template, messages, path, line_no), tokenizer,
                  chat_template, path, line_no);
      sink(doc.finish(/*add_eos=*/false));
      continue;
    } else {
      const std::string& prompt = string_field(record, "prompt", path, line_no, format);
      const std::string& completion = string_field(record, "completion", path, line_no, format);
      doc.append_text(prompt, 0);
      doc.append_text(completion, 1);
    }
    sink(doc.finish());
  }
  if (in.bad()) {
    throw DataError(path, line_no + 1, "reading the file failed; check that it is readable");
  }
  if (documents == 0) {
    throw DataError(
        path, 1,
        std::string(line_no == 0 ? "the file is empty" : "the file has only empty lines") +
            ": no documents; put one JSON object per line in it, e.g. " + expected +
            ", or remove it from data.train");
  }
}

std::string lowercase_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

}  // namespace

DataFormat parse_data_format(const std::string& name) {
  if (name == "auto") return DataFormat::auto_detect;
  if (name == "text") return DataFormat::text;
  if (name == "jsonl_text") return DataFormat::jsonl_text;
  if (name == "prompt_completion") return DataFormat::prompt_completion;
  if (name == "chat") return DataFormat::chat;
  if (name == "tokens_jsonl") return DataFormat::tokens_jsonl;
  if (name == "tokens_bin") return DataFormat::tokens_bin;
  throw DataError("data.format: unknown format '" + name + "'; choose one of: " + kFormatChoices);
}

TokenDtype parse_token_dtype(const std::string& name) {
  if (name == "auto") return TokenDtype::auto_detect;
  if (name == "uint16") return TokenDtype::uint16;
  if (name == "uint32") return TokenDtype::uint32;
  throw DataError("data.token_dtype: unknown dtype '" + name +
                  "'; choose one of: auto, uint16, uint32");
}

const char* token_dtype_name(TokenDtype dtype) {
  switch (dtype) {
    case TokenDtype::auto_detect: return "auto";
    case TokenDtype::uint16: return "uint16";
    case TokenDtype::uint32: return "uint32";
  }
  return "unknown";
}

const char* data_format_name(DataFormat format) {
  switch (format) {
    case DataFormat::auto_detect: return "auto";
    case DataFormat::text: return "text";
    case DataFormat::jsonl_text: return "jsonl_text";
    case DataFormat::prompt_completion: return "prompt_completion";
    case DataFormat::chat: return "chat";
    case DataFormat::tokens_jsonl: return "tokens_jsonl";
    case DataFormat::tokens_bin: return "tokens_bin";
  }
  return "unknown";
}

DataFormat detect_format(const std::string& path) {
  const std::string ext = lowercase_extension(path);
  if (ext == ".txt") return DataFormat::text;
  if (ext == ".bin") return DataFormat::tokens_bin;
  if (ext != ".jsonl" && ext != ".json") {
    throw DataError(path, 1,
                    "format auto cannot tell the format from the extension '" + ext +
                        "' (it knows .txt, .bin, .jsonl and .json); set data.format to one of " +
                        kFormatChoices);
  }

  const std::string expected = std::string(kTextExample) + " or " + kPromptCompletionExample +
                               " or " + kChatExample + " or " + kTokensExample;
  std::ifstream in = open_data_file(path);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line_no == 1) strip_utf8_bom(line);
    strip_carriage_return(line);
    if (is_blank(line)) continue;

    const json record = parse_json_object(line, path, line_no, expected);
    if (record.contains("messages")) return DataFormat::chat;
    if (record.contains("input_ids")) return DataFormat::tokens_jsonl;
    if (record.contains("prompt") && record.contains("completion"))
      return DataFormat::prompt_completion;
    if (record.contains("text")) return DataFormat::jsonl_text;
    throw DataError(
        path, line_no,
        "format auto cannot tell the format: the record has " + field_names(record) +
            "; it expects \"text\" (jsonl_text), \"prompt\" and \"completion\" "
            "(prompt_completion), \"messages\" (chat) or \"input_ids\" (tokens_jsonl). Rename "
            "the fields or set data.format");
  }
  throw DataError(
      path, 1,
      std::string(line_no == 0 ? "the file is empty" : "the file has only empty lines") +
          ": no documents; put one JSON object per line in it, e.g. " + expected +
          ", or remove it from data.train");
}

void for_each_document(const std::string& path, DataFormat format, const Tokenizer& tokenizer,
                       const ReadOptions& options, const std::function<void(Document&&)>& sink) {
  if (format == DataFormat::auto_detect) format = detect_format(path);
  check_special_tokens(tokenizer, options, format);
  if (format == DataFormat::text) {
    read_text_file(path, tokenizer, options, sink);
  } else if (format == DataFormat::tokens_bin) {
    read_token_bin(path, tokenizer, options, sink);
  } else {
    read_jsonl_file(path, format, tokenizer, options, sink);
  }
}

std::vector<Document> read_documents(const std::string& path, DataFormat format,
                                     const Tokenizer& tokenizer, const ReadOptions& options) {
  std::vector<Document> documents;
  for_each_document(path, format, tokenizer, options,
                    [&documents](Document&& doc) { documents.push_back(std::move(doc)); });
  return documents;
}

}  // namespace liger::data
