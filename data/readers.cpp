#include "data/readers.h"

#include "data/data_error.h"
#include "data/token_bin_format.h"

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
#include <stdexcept>
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

// llm.c's .bin header (data/token_bin_format.h).
constexpr int32_t kLlmcMagic = token_bin::kTokensMagic;
constexpr int64_t kLlmcHeaderBytes = token_bin::kHeaderBytes;

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

// The companion NAME.bin.mask of a token file, when there is one
// (data/token_bin_format.h): its per-token flags, read in step with the tokens.
class MaskCompanion {
 public:
  // Opens path + ".mask" if it exists and checks its header against the
  // token file's `tokens` count.
  MaskCompanion(const std::string& bin_path, int64_t tokens)
      : path_(bin_path + token_bin::kMaskSuffix) {
    std::error_code ec;
    if (!fs::exists(path_, ec)) return;
    in_ = open_data_file(path_);
    const auto file_bytes = static_cast<int64_t>(fs::file_size(path_, ec));
    std::array<int32_t, token_bin::kHeaderInts> header{};
    if (!ec && file_bytes >= token_bin::kHeaderBytes) {
      in_.read(reinterpret_cast<char*>(header.data()), token_bin::kHeaderBytes);  // little-endian
    }
    if (ec || !in_ || header[0] != token_bin::kMaskMagic || header[1] != token_bin::kMaskVersion) {
      throw DataError(path_ +
                      ": not a loss-mask file of liger-tokenize (no mask header); it is read "
                      "beside " +
                      bin_path +
                      " because of its name: remake both with liger-tokenize or "
                      "remove it");
    }
    if (header[2] != tokens || file_bytes != token_bin::kHeaderBytes + tokens) {
      throw DataError(path_ + ": holds the flags of " + std::to_string(header[2]) + " tokens in " +
                      std::to_string(file_bytes) + " bytes, but " + bin_path + " has " +
                      std::to_string(tokens) +
                      " tokens; the two files do not belong together: remake both with "
                      "liger-tokenize");
    }
    expected_hash_ = static_cast<uint64_t>(static_cast<uint32_t>(header[3])) |
                     static_cast<uint64_t>(static_cast<uint32_t>(header[4])) << 32;
    present_ = true;
  }

  bool present() const { return present_; }

  // The flags of the next `count` tokens.
  const std::vector<uint8_t>& read(int64_t count) {
    flags_.resize(static_cast<size_t>(count));
    in_.read(reinterpret_cast<char*>(flags_.data()), count);
    if (!in_) throw DataError(path_ + ": reading the file failed; check that it is readable");
    for (const uint8_t flags : flags_) {
      if ((flags & ~(token_bin::kTokenTarget | token_bin::kTokenStartsDocument)) != 0) {
        throw DataError(path_ + ": a token's flags byte is " + std::to_string(flags) +
                        " (only bits 0 and 1 are used); the file is corrupt: remake it with "
                        "liger-tokenize");
      }
    }
    return flags_;
  }

  // After the last token: the ids read must be those the mask was written for.
  void check_hash(const token_bin::TokenHash& hash, const std::string& bin_path) const {
    if (hash.value() != expected_hash_) {
      throw DataError(path_ + ": was written for other tokens than those of " + bin_path +
                      " (same count, different ids); remake both with liger-tokenize");
    }
  }

 private:
  std::string path_;
  std::ifstream in_;
  bool present_ = false;
  uint64_t expected_hash_ = 0;
  std::vector<uint8_t> flags_;
};

// A flat binary token file (nanoGPT / llm.c), split into documents at BOS
// tokens (else after EOS tokens), every token but BOS a target; or as its
// companion NAME.bin.mask says (data/token_bin_format.h).
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
  const int64_t total = payload / width;
  MaskCompanion mask(path, total);
  token_bin::TokenHash hash;
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
  int32_t previous = -1;
  for (int64_t first = 0; first < total; first += kChunkTokens) {
    const int64_t count = std::min(kChunkTokens, total - first);
    in.read(buffer.data(), count * width);
    if (!in)
      throw DataError(path + ": reading the file failed at byte " +
                      std::to_string(header_bytes + first * width));
    const std::vector<uint8_t>* stored_flags = mask.present() ? &mask.read(count) : nullptr;
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
      hash.add(static_cast<uint32_t>(token));
      const uint8_t flags =
          stored_flags ? (*stored_flags)[static_cast<size_t>(i)]
                       : token_bin::token_flags_implied(token, previous, first + i == 0, bos, eos);
      if (flags & token_bin::kTokenStartsDocument) emit();
      doc.tokens.push_back(token);
      doc.loss_mask.push_back((flags & token_bin::kTokenTarget) ? 1 : 0);
      previous = token;
    }
  }
  if (mask.present()) mask.check_hash(hash, path);
  emit();
}

// A text file is one raw document: its whole text, BOM dropped.
void read_raw_text_file(const std::string& path, const std::function<void(RawDocument&&)>& sink) {
  std::ifstream in = open_data_file(path);
  RawDocument raw;
  raw.file = path;
  raw.text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (in.bad()) throw DataError(path, 1, "reading the file failed; check that it is readable");
  strip_utf8_bom(raw.text);
  if (is_blank(raw.text)) {
    throw DataError(
        path, 1,
        std::string(raw.text.empty() ? "the file is empty" : "the file has only whitespace") +
            ": no documents; put training text in it or remove it from data.train");
  }
  sink(std::move(raw));
}

// Each non-empty line of a JSONL file is one raw document (parsed when tokenized).
void read_raw_jsonl_file(const std::string& path, DataFormat format,
                         const std::function<void(RawDocument&&)>& sink) {
  std::ifstream in = open_data_file(path);
  std::string line;
  int64_t line_no = 0;
  int64_t documents = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line_no == 1) strip_utf8_bom(line);
    strip_carriage_return(line);
    if (is_blank(line)) continue;
    ++documents;
    sink(RawDocument{std::move(line), path, line_no});
    line = std::string();
  }
  if (in.bad()) {
    throw DataError(path, line_no + 1, "reading the file failed; check that it is readable");
  }
  if (documents == 0) {
    throw DataError(
        path, 1,
        std::string(line_no == 0 ? "the file is empty" : "the file has only empty lines") +
            ": no documents; put one JSON object per line in it, e.g. " + example_of(format) +
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

void for_each_raw_document(const std::string& path, DataFormat format,
                           const std::function<void(RawDocument&&)>& sink) {
  if (format == DataFormat::text) {
    read_raw_text_file(path, sink);
  } else if (format == DataFormat::auto_detect || format == DataFormat::tokens_bin) {
    throw std::logic_error("for_each_raw_document: give a text or JSONL format");
  } else {
    read_raw_jsonl_file(path, format, sink);
  }
}

DocumentTokenizer::DocumentTokenizer(DataFormat format, const Tokenizer& tokenizer,
                                     const ReadOptions& options)
    : format_(format), tokenizer_(tokenizer), options_(options) {
  if (format == DataFormat::auto_detect || format == DataFormat::tokens_bin) {
    throw std::logic_error("DocumentTokenizer: give a text or JSONL format");
  }
  check_special_tokens(tokenizer, options, format);
  if (format == DataFormat::chat && options_.chat_template == ChatTemplate::auto_detect) {
    options_.chat_template = detect_chat_template(tokenizer);
  }
}

Document DocumentTokenizer::tokenize(const RawDocument& raw) const {
  const std::string& path = raw.file;
  const int64_t line_no = raw.line;
  if (format_ == DataFormat::text) {
    // A text file is one document; all of its tokens are targets.
    DocumentBuilder doc(tokenizer_, options_, path, line_no);
    doc.append_text(raw.text, 1);
    return doc.finish();
  }
  const json record = parse_json_object(raw.text, path, line_no, example_of(format_));
  if (format_ == DataFormat::tokens_jsonl) {
    return tokens_document(record, path, line_no, tokenizer_, options_);
  }
  DocumentBuilder doc(tokenizer_, options_, path, line_no);
  if (format_ == DataFormat::jsonl_text) {
    doc.append_text(string_field(record, "text", path, line_no, format_), 1);
  } else if (format_ == DataFormat::chat) {
    const std::vector<ChatMessage> messages = chat_messages(record, path, line_no);
    append_chat(doc, render_chat(options_.chat_template, messages, path, line_no), tokenizer_,
                options_.chat_template, path, line_no);
    return doc.finish(/*add_eos=*/false);
  } else {
    // "prompt" tokens are context, "completion" tokens are targets.
    const std::string& prompt = string_field(record, "prompt", path, line_no, format_);
    const std::string& completion = string_field(record, "completion", path, line_no, format_);
    doc.append_text(prompt, 0);
    doc.append_text(completion, 1);
  }
  return doc.finish();
}

void for_each_document(const std::string& path, DataFormat format, const Tokenizer& tokenizer,
                       const ReadOptions& options, const std::function<void(Document&&)>& sink) {
  if (format == DataFormat::auto_detect) format = detect_format(path);
  if (format == DataFormat::tokens_bin) {
    read_token_bin(path, tokenizer, options, sink);
    return;
  }
  const DocumentTokenizer tokenize(format, tokenizer, options);
  for_each_raw_document(path, format, [&](RawDocument&& raw) { sink(tokenize.tokenize(raw)); });
}

std::vector<Document> read_documents(const std::string& path, DataFormat format,
                                     const Tokenizer& tokenizer, const ReadOptions& options) {
  std::vector<Document> documents;
  for_each_document(path, format, tokenizer, options,
                    [&documents](Document&& doc) { documents.push_back(std::move(doc)); });
  return documents;
}

}  // namespace liger::data
