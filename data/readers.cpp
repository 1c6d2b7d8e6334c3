#include "data/readers.h"

#include "data/data_error.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

namespace liger::data {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* const kFormatChoices = "auto, text, jsonl_text, prompt_completion";
const char* const kTextExample = R"({"text": "..."})";
const char* const kPromptCompletionExample = R"({"prompt": "...", "completion": "..."})";

// ---------------------------------------------------------------------------
// Files and lines
// ---------------------------------------------------------------------------

// Opens `path` for binary reading, or throws a DataError that says why not.
std::ifstream open_data_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    throw DataError(path, 1,
                    "no such file; check the path in data.train (relative paths are resolved against "
                    "the working directory " + fs::current_path(ec).string() + ")");
  }
  if (fs::is_directory(path, ec)) {
    throw DataError(path, 1, "is a folder, not a file; list the data files themselves in data.train");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw DataError(path, 1, std::string("cannot be opened for reading (") + std::strerror(errno) +
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
    const bool opens_multiline_json = line.find_first_not_of(" \t", first + 1) == std::string::npos &&
                                       (line[first] == '[' || line[first] == '{');
    if (opens_multiline_json) {
      throw DataError(path, line_no,
                      "this looks like JSON spread over several lines, but the reader wants JSON Lines: "
                      "one complete object per line, e.g. " + expected);
    }
    throw DataError(path, line_no,
                    "not valid JSON (" + short_parse_message(e.what()) +
                        "); each line must be one complete JSON object, e.g. " + expected);
  }
  if (!record.is_object()) {
    throw DataError(path, line_no,
                    std::string("expected a JSON object, got ") + record.type_name() + "; each line must be "
                    "one object, e.g. " + expected);
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
                    std::string("missing field \"") + name + "\" (the record has " + field_names(record) +
                        "); every line of a " + data_format_name(format) + " file needs it, e.g. " +
                        (format == DataFormat::prompt_completion ? kPromptCompletionExample : kTextExample) +
                        " (or set data.format to match the file)");
  }
  if (!it->is_string()) {
    throw DataError(path, line_no,
                    std::string("field \"") + name + "\" must be a string, got " + it->type_name() + " (" +
                        it->dump().substr(0, 60) + ")");
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

  Document finish() {
    if (options_.add_eos) append_id(tokenizer_.eos_id(), /*target=*/1);
    return std::move(doc_);
  }

 private:
  void append_id(int32_t id, uint8_t target) {
    doc_.tokens.push_back(id);
    doc_.loss_mask.push_back(target);
  }

  const Tokenizer& tokenizer_;
  const ReadOptions& options_;
  Document doc_;
};

// The tokenizer must have the special tokens the options ask for.
void check_special_tokens(const Tokenizer& tokenizer, const ReadOptions& options) {
  if (options.add_bos && tokenizer.bos_id() < 0) {
    throw DataError("the tokenizer " + tokenizer.describe() + " has no BOS token; set data.add_bos: false");
  }
  if (options.add_eos && tokenizer.eos_id() < 0) {
    throw DataError("the tokenizer " + tokenizer.describe() + " has no EOS token; set data.add_eos: false");
  }
}

// A text file is one document; all of its tokens are targets.
void read_text_file(const std::string& path, const Tokenizer& tokenizer, const ReadOptions& options,
                    const std::function<void(Document&&)>& sink) {
  std::ifstream in = open_data_file(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw DataError(path, 1, "reading the file failed; check that it is readable");
  strip_utf8_bom(text);
  if (is_blank(text)) {
    throw DataError(path, 1,
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
  const std::string expected =
      format == DataFormat::prompt_completion ? kPromptCompletionExample : kTextExample;
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
    DocumentBuilder doc(tokenizer, options, path, line_no);
    if (format == DataFormat::jsonl_text) {
      doc.append_text(string_field(record, "text", path, line_no, format), 1);
    } else {
      const std::string& prompt = string_field(record, "prompt", path, line_no, format);
      const std::string& completion = string_field(record, "completion", path, line_no, format);
      doc.append_text(prompt, 0);
      doc.append_text(completion, 1);
    }
    sink(doc.finish());
    ++documents;
  }
  if (in.bad()) {
    throw DataError(path, line_no + 1, "reading the file failed; check that it is readable");
  }
  if (documents == 0) {
    throw DataError(path, 1,
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
  throw DataError("data.format: unknown format '" + name + "'; choose one of: " + kFormatChoices);
}

const char* data_format_name(DataFormat format) {
  switch (format) {
    case DataFormat::auto_detect: return "auto";
    case DataFormat::text: return "text";
    case DataFormat::jsonl_text: return "jsonl_text";
    case DataFormat::prompt_completion: return "prompt_completion";
  }
  return "unknown";
}

DataFormat detect_format(const std::string& path) {
  const std::string ext = lowercase_extension(path);
  if (ext == ".txt") return DataFormat::text;
  if (ext != ".jsonl" && ext != ".json") {
    throw DataError(path, 1,
                    "format auto cannot tell the format from the extension '" + ext +
                        "' (it knows .txt, .jsonl and .json); set data.format to text, jsonl_text or "
                        "prompt_completion");
  }

  const std::string expected = std::string(kTextExample) + " or " + kPromptCompletionExample;
  std::ifstream in = open_data_file(path);
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line_no == 1) strip_utf8_bom(line);
    strip_carriage_return(line);
    if (is_blank(line)) continue;

    const json record = parse_json_object(line, path, line_no, expected);
    if (record.contains("prompt") && record.contains("completion")) return DataFormat::prompt_completion;
    if (record.contains("text")) return DataFormat::jsonl_text;
    const std::string chat_note =
        record.contains("messages") ? " (chat data with \"messages\" is not supported yet)" : "";
    throw DataError(path, line_no,
                    "format auto cannot tell the format: the record has " + field_names(record) + chat_note +
                        "; it expects \"text\" (jsonl_text) or \"prompt\" and \"completion\" "
                        "(prompt_completion). Rename the fields or set data.format");
  }
  throw DataError(path, 1,
                  std::string(line_no == 0 ? "the file is empty" : "the file has only empty lines") +
                      ": no documents; put one JSON object per line in it, e.g. " + expected +
                      ", or remove it from data.train");
}

void for_each_document(const std::string& path, DataFormat format, const Tokenizer& tokenizer,
                       const ReadOptions& options, const std::function<void(Document&&)>& sink) {
  check_special_tokens(tokenizer, options);
  if (format == DataFormat::auto_detect) format = detect_format(path);
  if (format == DataFormat::text) {
    read_text_file(path, tokenizer, options, sink);
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
