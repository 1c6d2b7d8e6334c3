#include "data/hf_tokenizer.h"

#include "data/data_error.h"
#include "data/hf_tokenizer_config.h"
#include "data/regex.h"
#include "data/unicode_nfc.h"
#include "data/utf8.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <queue>
#include <stdexcept>
#include <string_view>
#include <unordered_map>

namespace liger::data {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The GPT-2 pre-tokenization pattern that ByteLevel applies when use_regex is on.
const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// What Rust's regex calls \w (Alphabetic, marks, decimal digits, connector
// punctuation, joiners): single_word added tokens test their neighbours with it.
const char* const kWordCharPattern = R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])";

const char* const kSupportedHint =
    "liger-train reads byte-level BPE tokenizer.json files (GPT-2, Llama 3, Qwen style); for a "
    "SentencePiece-style model (Llama 2, Mistral, Gemma) give the tokenizer.model beside it";

// ---------------------------------------------------------------------------
// Byte-level alphabet: GPT-2's reversible map from the 256 byte values to
// printable code points. Printable Latin-1 bytes map to themselves; the others
// (controls, space, ...) to U+0100 + n in byte order.
// ---------------------------------------------------------------------------
struct ByteAlphabet {
  std::array<std::string, 256> byte_to_text;  // UTF-8 of the code point for each byte
  std::array<int16_t, 512> cp_to_byte;        // code point -> byte, -1 when not in the alphabet

  ByteAlphabet() {
    cp_to_byte.fill(-1);
    int next_extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp =
          printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next_extra++);
      utf8::append(byte_to_text[b], cp);
      cp_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

// ---------------------------------------------------------------------------
// Added tokens: a byte trie for leftmost-longest matching.
// ---------------------------------------------------------------------------
struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

class TokenTrie {
 public:
  void insert(const std::string& text, int value) {
    int node = 0;
    for (const char c : text) {
      const auto byte = static_cast<unsigned char>(c);
      auto it = nodes_[node].next.find(byte);
      if (it == nodes_[node].next.end()) {
        nodes_.emplace_back();
        it = nodes_[node].next.emplace(byte, static_cast<int>(nodes_.size() - 1)).first;
      }
      node = it->second;
    }
    nodes_[node].value = value;
    first_byte_[static_cast<unsigned char>(text[0])] = true;
    empty_ = false;
  }

  bool empty() const { return empty_; }

  // The value of the longest entry that starts at `pos`, and its length; -1 if none.
  std::pair<int, size_t> longest_at(std::string_view text, size_t pos) const {
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) return {-1, 0};
    int node = 0;
    std::pair<int, size_t> best{-1, 0};
    for (size_t i = pos; i < text.size(); ++i) {
      const auto it = nodes_[node].next.find(static_cast<unsigned char>(text[i]));
      if (it == nodes_[node].next.end()) break;
      node = it->second;
      if (nodes_[node].value >= 0) best = {nodes_[node].value, i + 1 - pos};
    }
    return best;
  }

 private:
  struct Node {
    std::map<unsigned char, int> next;
    int value = -1;
  };
  std::vector<Node> nodes_{1};
  std::array<bool, 256> first_byte_{};
  bool empty_ = true;
};

// ---------------------------------------------------------------------------
// Pre-tokenizer steps
// ---------------------------------------------------------------------------
enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

struct Piece {
  size_t begin, end;
  bool flag;  // is_match before the behavior; "remove" after it
};

struct PreStep {
  enum class Kind { split_regex, split_literal, byte_level };
  Kind kind;
  std::unique_ptr<Regex> regex;  // split_regex, and byte_level with use_regex
  std::string literal;           // split_literal
  Behavior behavior = Behavior::isolated;
  bool invert = false;
  bool add_prefix_space = false;  // byte_level
};

// HF's Pattern::find_matches: pieces covering `text`, each a match or not.
std::vector<Piece> find_matches(const PreStep& step, std::string_view text) {
  std::vector<Piece> pieces;
  if (text.empty()) {
    pieces.push_back({0, 0, false});
    return pieces;
  }
  size_t previous = 0;
  auto add_match = [&](size_t begin, size_t end) {
    if (previous != begin) pieces.push_back({previous, begin, false});
    pieces.push_back({begin, end, true});
    previous = end;
  };
  switch (step.kind) {
    case PreStep::Kind::split_regex:
    case PreStep::Kind::byte_level:
      for (const auto& [begin, end] : step.regex->find_all(text)) add_match(begin, end);
      break;
    case PreStep::Kind::split_literal: {
      if (step.literal.empty()) return {{0, text.size(), false}};
      size_t at = 0;
      while ((at = text.find(step.literal, at)) != std::string_view::npos) {
        add_match(at, at + step.literal.size());
        at += step.literal.size();
      }
      break;
    }
  }
  if (previous != text.size()) pieces.push_back({previous, text.size(), false});
  return pieces;
}

// HF's NormalizedString::split: applies the delimiter behavior; the flag of
// each result says whether it is removed.
std::vector<Piece> apply_behavior(std::vector<Piece> matches, Behavior behavior) {
  std::vector<Piece> out;
  switch (behavior) {
    case Behavior::isolated:
      for (auto& piece : matches) piece.flag = false;
      return matches;
    case Behavior::removed: return matches;
    case Behavior::contiguous: {
      bool previous_match = false;
      for (const auto& piece : matches) {
        if (piece.flag == previous_match && !out.empty()) {
          out.back().end = piece.end;
        } else {
          out.push_back({piece.begin, piece.end, false});
        }
        previous_match = piece.flag;
      }
      return out;
    }
    case Behavior::merged_with_previous: {
      bool previous_match = false;
      for (const auto& piece : matches) {
        if (piece.flag && !previous_match && !out.empty()) {
          out.back().end = piece.end;
        } else {
          out.push_back({piece.begin, piece.end, false});
        }
        previous_match = piece.flag;
      }
      return out;
    }
    case Behavior::merged_with_next: {
      bool previous_match = false;
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        if (it->flag && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back({it->begin, it->end, false});
        }
        previous_match = it->flag;
      }
      std::reverse(out.begin(), out.end());
      return out;
    }
  }
  return out;
}

// One pre-tokenizer step over every piece; empty results are dropped (as HF does).
std::vector<std::string> run_step(const PreStep& step, const std::vector<std::string>& pieces) {
  std::vector<std::string> out;
  out.reserve(pieces.size());
  const ByteAlphabet& alphabet = byte_alphabet();
  for (const std::string& input : pieces) {
    if (step.kind == PreStep::Kind::byte_level) {
      std::string text = input;
      if (step.add_prefix_space && (text.empty() || text[0] != ' ')) text.insert(text.begin(), ' ');
      std::vector<Piece> parts;
      if (step.regex) {
        parts = find_matches(step, text);
      } else {
        parts.push_back({0, text.size(), false});
      }
      for (const Piece& part : parts) {
        if (part.end == part.begin) continue;
        std::string mapped;
        mapped.reserve((part.end - part.begin) * 2);
        for (size_t i = part.begin; i < part.end; ++i) {
          mapped += alphabet.byte_to_text[static_cast<unsigned char>(text[i])];
        }
        out.push_back(std::move(mapped));
      }
      continue;
    }
    std::vector<Piece> matches = find_matches(step, input);
    if (step.invert) {
      for (auto& piece : matches) piece.flag = !piece.flag;
    }
    for (const Piece& piece : apply_behavior(std::move(matches), step.behavior)) {
      if (piece.flag || piece.end == piece.begin) continue;
      out.push_back(input.substr(piece.begin, piece.end - piece.begin));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------
json read_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    throw DataError(path + ": " + what +
                    " not found or not readable; check data.tokenizer (relative paths "
                    "are resolved against the working directory " +
                    fs::current_path(ec).string() + ")");
  }
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw DataError(path + ": " + what + " is not valid JSON (" + e.what() +
                    "); give the file exactly as the model ships it");
  }
}

std::string type_of(const json& node) {
  if (node.is_object()) {
    const auto it = node.find("type");
    if (it != node.end() && it->is_string()) return it->get<std::string>();
  }
  return "";
}

// The string `node[key]`, or `fallback` when absent or null.
std::string string_or(const json& node, const char* key, const std::string& fallback = "") {
  const auto it = node.find(key);
  if (it == node.end() || it->is_null()) return fallback;
  if (!it->is_string()) return fallback;
  return it->get<std::string>();
}

bool bool_or(const json& node, const char* key, bool fallback) {
  const auto it = node.find(key);
  if (it == node.end() || !it->is_boolean()) return fallback;
  return it->get<bool>();
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

// ---------------------------------------------------------------------------
// Impl
// ---------------------------------------------------------------------------
struct HfBpeTokenizer::Impl {
  std::string path;
  std::unordered_map<std::string, int32_t> vocab;  // the model's vocabulary
  std::vector<std::string> id_to_text;  // every id's spelling for decoding (added tokens win)
  std::vector<uint8_t> id_known;
  std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>> merges;  // (a, b) -> (rank, merged id)
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;

  std::vector<AddedToken> added;
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_map<int32_t, size_t> added_by_id;
  TokenTrie raw_trie;         // normalized: false (matched on the raw text)
  TokenTrie normalized_trie;  // normalized: true (matched on the normalized text: the same here)
  std::unique_ptr<Regex> word_char;  // for single_word tokens

  std::vector<PreStep> pre_steps;
  bool nfc = false;  // the normalizer: NFC (Qwen) or none

  int32_t bos = -1, eos = -1;
  std::string bos_source, eos_source;
  int32_t template_bos = -1, template_eos = -1;
  HfTokenizerConfig folder_config;  // the side files beside the tokenizer.json

  // Whole-word BPE results (HF caches them too).
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  [[noreturn]] void unsupported(const std::string& feature,
                                const std::string& hint = kSupportedHint) const {
    throw DataError(path + ": tokenizer.json feature " + feature + " is not supported; " + hint);
  }
  [[noreturn]] void malformed(const std::string& what) const {
    throw DataError(path + ": malformed tokenizer.json: " + what +
                    "; give the file exactly as the model ships it (or as `tokenizers` saves it)");
  }

  void load(const json& root, const TokenizerOptions& options);
  void load_model(const json& model);
  void load_added_tokens(const json& list);
  void load_normalizer(const json& node);
  void load_pre_tokenizer(const json& node, const std::string& where);
  void load_post_processor(const json& node, const std::string& where);
  void load_decoder(const json& node);
  void resolve_special_tokens(const TokenizerOptions& options);

  void encode_text(std::string_view text, std::vector<int32_t>& ids) const;
  void encode_plain(std::string_view text, std::vector<int32_t>& ids) const;
  void bpe(const std::string& word, std::vector<int32_t>& ids) const;
  void bpe_uncached(const std::string& word, std::vector<int32_t>& ids) const;

  // HF's AddedVocabulary::find_matches over `text` with `trie`: calls
  // sink(piece, added index or -1) for consecutive pieces covering `text`.
  template <class Sink>
  void split_added(std::string_view text, const TokenTrie& trie, Sink&& sink) const;

  int32_t lookup(const std::string& token) const {
    const auto added_it = added_by_content.find(token);
    if (added_it != added_by_content.end()) return added_it->second;
    const auto it = vocab.find(token);
    return it == vocab.end() ? -1 : it->second;
  }
};

void HfBpeTokenizer::Impl::load(const json& root, const TokenizerOptions& options) {
  if (!root.is_object()) malformed("the top level must be a JSON object");
  const auto model = root.find("model");
  if (model == root.end() || !model->is_object()) malformed("no \"model\" object");
  load_model(*model);
  load_normalizer(root.value("normalizer", json()));  // before added tokens: they may be normalized
  if (root.contains("added_tokens")) load_added_tokens(root.at("added_tokens"));
  load_pre_tokenizer(root.value("pre_tokenizer", json()), "pre_tokenizer");
  bool has_byte_level = false;
  for (const auto& step : pre_steps) has_byte_level |= step.kind == PreStep::Kind::byte_level;
  if (!has_byte_level) {
    unsupported("pre_tokenizer without a ByteLevel step (a BPE that is not byte-level)");
  }
  load_post_processor(root.value("post_processor", json()), "post_processor");
  load_decoder(root.value("decoder", json()));

  // Every id's spelling, added tokens over the model's (HF decodes them first).
  int64_t size = 0;
  for (const auto& [text, id] : vocab) size = std::max<int64_t>(size, int64_t{id} + 1);
  for (const auto& token : added) size = std::max<int64_t>(size, int64_t{token.id} + 1);
  id_to_text.assign(static_cast<size_t>(size), std::string());
  id_known.assign(static_cast<size_t>(size), 0);
  for (const auto& [text, id] : vocab) {
    id_to_text[id] = text;
    id_known[id] = 1;
  }
  for (const auto& token : added) {
    // A normalized added token decodes from its normalized form (as HF does).
    id_to_text[token.id] = token.normalized && nfc ? unicode::nfc(token.content) : token.content;
    id_known[token.id] = 1;
  }
  resolve_special_tokens(options);
}

void HfBpeTokenizer::Impl::load_model(const json& model) {
  const std::string type = type_of(model);
  if (!type.empty() && type != "BPE") {
    unsupported("model.type = \"" + type + "\" (only BPE is)");
  }
  const auto vocab_it = model.find("vocab");
  const auto merges_it = model.find("merges");
  if (vocab_it == model.end() || !vocab_it->is_object())
    malformed("model.vocab must be an object {token: id}");
  if (merges_it == model.end() || !merges_it->is_array()) malformed("model.merges must be a list");

  const auto dropout = model.find("dropout");
  if (dropout != model.end() && !dropout->is_null() &&
      !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    unsupported("model.dropout = " + dropout->dump() + " (BPE dropout)",
                "set \"dropout\": null in the file (dropout only matters for tokenizer training)");
  }
  if (bool_or(model, "byte_fallback", false)) {
    unsupported("model.byte_fallback = true (SentencePiece-style BPE)");
  }
  if (!string_or(model, "continuing_subword_prefix").empty()) {
    unsupported("model.continuing_subword_prefix = \"" +
                string_or(model, "continuing_subword_prefix") + "\"");
  }
  if (!string_or(model, "end_of_word_suffix").empty()) {
    unsupported("model.end_of_word_suffix = \"" + string_or(model, "end_of_word_suffix") + "\"");
  }
  ignore_merges = bool_or(model, "ignore_merges", false);
  fuse_unk = bool_or(model, "fuse_unk", false);

  vocab.reserve(vocab_it->size());
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > INT32_MAX) {
      malformed("model.vocab[\"" + it.key() + "\"] = " + it->dump() + " is not a token id");
    }
    vocab.emplace(it.key(), static_cast<int32_t>(it->get<int64_t>()));
  }
  const std::string unk = string_or(model, "unk_token");
  if (!unk.empty()) {
    const auto it = vocab.find(unk);
    if (it == vocab.end()) malformed("model.unk_token \"" + unk + "\" is not in model.vocab");
    unk_id = it->second;
  }

  merges.reserve(merges_it->size());
  uint32_t rank = 0;
  for (const json& merge : *merges_it) {
    std::string left, right;
    if (merge.is_string()) {
      // The legacy form "a b": exactly one space.
      const std::string& text = merge.get_ref<const std::string&>();
      const auto space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        malformed("model.merges[" + std::to_string(rank) + "] = \"" + text +
                  "\" is not two tokens separated by one space");
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      malformed("model.merges[" + std::to_string(rank) + "] = " + merge.dump().substr(0, 80) +
                " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    const auto a = vocab.find(left), b = vocab.find(right), merged = vocab.find(left + right);
    if (a == vocab.end() || b == vocab.end() || merged == vocab.end()) {
      const std::string missing = a == vocab.end() ? left : b == vocab.end() ? right : left + right;
      malformed("model.merges[" + std::to_string(rank) + "] uses \"" + missing +
                "\", which is not in model.vocab");
    }
    // A repeated pair keeps its last rank, as HF's map does.
    merges[pair_key(a->second, b->second)] = {rank, merged->second};
    ++rank;
  }
}

void HfBpeTokenizer::Impl::load_added_tokens(const json& list) {
  if (!list.is_array()) malformed("added_tokens must be a list");
  for (size_t i = 0; i < list.size(); ++i) {
    const json& item = list[i];
    if (!item.is_object() || !item.contains("id") || !item["id"].is_number_integer() ||
        !item.contains("content") || !item["content"].is_string()) {
      malformed("added_tokens[" + std::to_string(i) +
                "] needs an integer \"id\" and a string \"content\"");
    }
    AddedToken token;
    token.id = static_cast<int32_t>(item["id"].get<int64_t>());
    token.content = item["content"].get<std::string>();
    token.single_word = bool_or(item, "single_word", false);
    token.lstrip = bool_or(item, "lstrip", false);
    token.rstrip = bool_or(item, "rstrip", false);
    token.special = bool_or(item, "special", false);
    token.normalized = bool_or(item, "normalized", !token.special);
    if (token.id < 0) malformed("added_tokens[" + std::to_string(i) + "] has a negative id");
    if (token.content.empty()) continue;  // HF ignores empty added tokens
    if (utf8::find_invalid(token.content) != std::string::npos) {
      malformed("added_tokens[" + std::to_string(i) + "] is not valid UTF-8");
    }
    if (token.single_word && !word_char) word_char = std::make_unique<Regex>(kWordCharPattern);
    const auto existing = added_by_content.find(token.content);
    if (existing != added_by_content.end()) {
      added[added_by_id.at(existing->second)] = token;  // a later entry replaces an earlier one
    } else {
      added.push_back(token);
    }
    added_by_content[token.content] = token.id;
  }
  for (size_t i = 0; i < added.size(); ++i) {
    added_by_id[added[i].id] = i;
    if (added[i].normalized) {
      // Matched against the normalized text, so in its normalized form.
      normalized_trie.insert(nfc ? unicode::nfc(added[i].content) : added[i].content,
                             static_cast<int>(i));
    } else {
      raw_trie.insert(added[i].content, static_cast<int>(i));
    }
  }
}

void HfBpeTokenizer::Impl::load_normalizer(const json& node) {
  if (node.is_null()) return;
  const std::string type = type_of(node);
  if (type == "Sequence" && node.contains("normalizers") && node["normalizers"].is_array()) {
    // A Sequence of supported normalizers (NFC once is NFC).
    for (const json& item : node["normalizers"]) load_normalizer(item);
    return;
  }
  if (type == "NFC") {
    nfc = true;
    return;
  }
  unsupported(
      "normalizer \"" + (type.empty() ? node.dump().substr(0, 60) : type) + "\"",
      "liger-train implements the NFC normalizer only (Qwen has it; Llama 3 and GPT-2 have none); "
      "normalize the data yourself and remove the normalizer from a copy of tokenizer.json, or use "
      "the model's tokenizer.model");
}

void HfBpeTokenizer::Impl::load_pre_tokenizer(const json& node, const std::string& where) {
  if (node.is_null()) return;
  const std::string type = type_of(node);
  if (type == "Sequence") {
    const auto list = node.find("pretokenizers");
    if (list == node.end() || !list->is_array())
      malformed(where + ": Sequence needs a \"pretokenizers\" list");
    for (size_t i = 0; i < list->size(); ++i) {
      load_pre_tokenizer((*list)[i], where + ".pretokenizers[" + std::to_string(i) + "]");
    }
    return;
  }
  PreStep step;
  if (type == "ByteLevel") {
    step.kind = PreStep::Kind::byte_level;
    step.add_prefix_space = bool_or(node, "add_prefix_space", true);
    if (bool_or(node, "use_regex", true)) step.regex = std::make_unique<Regex>(kGpt2Pattern);
  } else if (type == "Split") {
    const auto pattern = node.find("pattern");
    if (pattern == node.end() || !pattern->is_object())
      malformed(where + ": Split needs a \"pattern\"");
    if (pattern->contains("Regex") && (*pattern)["Regex"].is_string()) {
      step.kind = PreStep::Kind::split_regex;
      const std::string regex = (*pattern)["Regex"].get<std::string>();
      try {
        step.regex = std::make_unique<Regex>(regex);
      } catch (const std::invalid_argument& e) {
        throw DataError(path + ": " + where + ".pattern.Regex: " + e.what());
      }
    } else if (pattern->contains("String") && (*pattern)["String"].is_string()) {
      step.kind = PreStep::Kind::split_literal;
      step.literal = (*pattern)["String"].get<std::string>();
    } else {
      malformed(where + ".pattern must be {\"Regex\": ...} or {\"String\": ...}");
    }
    const std::string behavior = string_or(node, "behavior");
    if (behavior == "Removed")
      step.behavior = Behavior::removed;
    else if (behavior == "Isolated")
      step.behavior = Behavior::isolated;
    else if (behavior == "MergedWithPrevious")
      step.behavior = Behavior::merged_with_previous;
    else if (behavior == "MergedWithNext")
      step.behavior = Behavior::merged_with_next;
    else if (behavior == "Contiguous")
      step.behavior = Behavior::contiguous;
    else
      malformed(where + ".behavior = \"" + behavior + "\" is not a split behavior");
    step.invert = bool_or(node, "invert", false);
  } else if (type == "Digits") {
    // Rust's char::is_numeric (Nd, Nl, No), one character per match.
    step.kind = PreStep::Kind::split_regex;
    step.regex = std::make_unique<Regex>(R"(\p{N})");
    step.behavior =
        bool_or(node, "individual_digits", false) ? Behavior::isolated : Behavior::contiguous;
  } else {
    unsupported(where + " \"" + (type.empty() ? node.dump().substr(0, 60) : type) +
                "\" (supported: ByteLevel, Split, Digits, Sequence)");
  }
  pre_steps.push_back(std::move(step));
}

void HfBpeTokenizer::Impl::load_post_processor(const json& node, const std::string& where) {
  if (node.is_null()) return;
  const std::string type = type_of(node);
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence") {
    const auto list = node.find("processors");
    if (list == node.end() || !list->is_array())
      malformed(where + ": Sequence needs a \"processors\" list");
    for (size_t i = 0; i < list->size(); ++i) {
      load_post_processor((*list)[i], where + ".processors[" + std::to_string(i) + "]");
    }
    return;
  }
  if (type != "TemplateProcessing") {
    unsupported(where + " \"" + (type.empty() ? node.dump().substr(0, 60) : type) +
                "\" (supported: TemplateProcessing that adds BOS/EOS, ByteLevel, Sequence)");
  }
  const auto single = node.find("single");
  if (single == node.end() || !single->is_array())
    malformed(where + ": TemplateProcessing needs \"single\"");
  std::vector<std::string> before, after;
  bool seen_sequence = false;
  for (const json& item : *single) {
    if (item.contains("Sequence")) {
      if (seen_sequence) unsupported(where + ".single with two sequences");
      seen_sequence = true;
    } else if (item.contains("SpecialToken") && item["SpecialToken"].contains("id")) {
      (seen_sequence ? after : before).push_back(item["SpecialToken"]["id"].get<std::string>());
    } else {
      malformed(where + ".single item " + item.dump().substr(0, 60));
    }
  }
  if (!seen_sequence || before.size() > 1 || after.size() > 1) {
    unsupported(where + " TemplateProcessing single = " + single->dump().substr(0, 200) +
                " (only [BOS] $A [EOS] with at most one token on each side is)");
  }
  auto id_of = [&](const std::string& name) -> int32_t {
    const json& specials = node.value("special_tokens", json::object());
    if (specials.contains(name) && specials[name].contains("ids") &&
        specials[name]["ids"].is_array() && specials[name]["ids"].size() == 1) {
      return static_cast<int32_t>(specials[name]["ids"][0].get<int64_t>());
    }
    unsupported(where + " special token \"" + name + "\" without exactly one id in special_tokens");
  };
  if (!before.empty()) template_bos = id_of(before[0]);
  if (!after.empty()) template_eos = id_of(after[0]);
}

void HfBpeTokenizer::Impl::load_decoder(const json& node) {
  const std::string type = type_of(node);
  if (type == "ByteLevel") return;
  unsupported("decoder " + (node.is_null() ? std::string("null") : "\"" + type + "\"") +
              " (a byte-level BPE needs the ByteLevel decoder)");
}

void HfBpeTokenizer::Impl::resolve_special_tokens(const TokenizerOptions& options) {
  // tokenizer_config.json / special_tokens_map.json beside the file.
  const HfTokenizerConfig& config = folder_config;

  auto resolve = [&](const std::string& chosen, const char* key, const char* config_key,
                     const HfSpecialToken& declared, int32_t template_id,
                     std::initializer_list<const char*> names, std::string& source) -> int32_t {
    if (!chosen.empty()) {
      const int32_t id = lookup(chosen);
      if (id < 0) {
        throw DataError(std::string(key) + " = '" + chosen + "': the tokenizer " + path +
                        " has no such token; give one of its special tokens or leave " + key +
                        " empty for the tokenizer's own");
      }
      source = key;
      return id;
    }
    if (declared.declared) {
      source = fs::path(declared.file).filename().string();
      if (declared.content.empty()) return -1;  // declared null: none
      const int32_t id = lookup(declared.content);
      if (id < 0) {
        throw DataError(declared.file + ": " + config_key + " = \"" + declared.content +
                        "\" is not a token of " + path + "; fix the file or set " + key);
      }
      return id;
    }
    if (template_id >= 0) {
      source = "post_processor";
      return template_id;
    }
    for (const char* name : names) {
      const int32_t id = lookup(name);
      if (id >= 0) {
        source = "its name";
        return id;
      }
    }
    source = "none found";
    return -1;
  };
  bos = resolve(options.bos_token, "data.bos_token", "bos_token", config.bos, template_bos,
                {"<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"}, bos_source);
  eos = resolve(options.eos_token, "data.eos_token", "eos_token", config.eos, template_eos,
                {"<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"}, eos_source);
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------
template <class Sink>
void HfBpeTokenizer::Impl::split_added(std::string_view text, const TokenTrie& trie,
                                       Sink&& sink) const {
  if (trie.empty() || text.empty()) {
    sink(text, -1);
    return;
  }
  size_t emitted = 0;  // text[0, emitted) has been handed out
  size_t search = 0;   // the next match starts at or after this
  while (search < text.size()) {
    // The leftmost position where some token starts, the longest token there.
    std::pair<int, size_t> found{-1, 0};
    size_t at = search;
    for (; at < text.size(); ++at) {
      found = trie.longest_at(text, at);
      if (found.first >= 0) break;
    }
    if (found.first < 0) break;
    const AddedToken& token = added[static_cast<size_t>(found.first)];
    size_t start = at, stop = at + found.second;
    search = stop;
    if (token.single_word) {
      // Not glued to a word character on either side.
      bool start_ok = start == 0;
      if (!start_ok) {
        size_t prev = start - 1;
        while (prev > 0 && (static_cast<unsigned char>(text[prev]) & 0xC0) == 0x80) --prev;
        start_ok = !word_char->matches_at(text, prev);
      }
      const bool stop_ok = stop == text.size() || !word_char->matches_at(text, stop);
      if (!start_ok || !stop_ok) continue;
    }
    if (token.lstrip) {
      // Take the whitespace before the token, but not what an earlier match took.
      size_t new_start = start;
      while (new_start > 0) {
        size_t prev = new_start - 1;
        while (prev > 0 && (static_cast<unsigned char>(text[prev]) & 0xC0) == 0x80) --prev;
        size_t length = 0;
        if (!utf8::is_white_space(utf8::decode_at(text, prev, &length))) break;
        new_start = prev;
      }
      start = std::max(new_start, emitted);
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t length = 0;
        if (!utf8::is_white_space(utf8::decode_at(text, stop, &length))) break;
        stop += length;
      }
      search = stop;
    }
    if (emitted < start) sink(text.substr(emitted, start - emitted), -1);
    sink(text.substr(start, stop - start), found.first);
    emitted = stop;
  }
  if (emitted < text.size()) sink(text.substr(emitted), -1);
}

void HfBpeTokenizer::Impl::encode_text(std::string_view text, std::vector<int32_t>& ids) const {
  // 1. Added tokens that match the raw text; 2. those that match the
  // normalized text (no normalizer here: the same text) in the rest.
  split_added(text, raw_trie, [&](std::string_view piece, int token) {
    if (token >= 0) {
      ids.push_back(added[static_cast<size_t>(token)].id);
      return;
    }
    const std::string normalized = nfc ? unicode::nfc(piece) : std::string();
    split_added(nfc ? std::string_view(normalized) : piece, normalized_trie,
                [&](std::string_view rest, int inner) {
                  if (inner >= 0) {
                    ids.push_back(added[static_cast<size_t>(inner)].id);
                  } else {
                    encode_plain(rest, ids);
                  }
                });
  });
}

void HfBpeTokenizer::Impl::encode_plain(std::string_view text, std::vector<int32_t>& ids) const {
  if (text.empty()) return;
  std::vector<std::string> pieces{std::string(text)};
  for (const PreStep& step : pre_steps) pieces = run_step(step, pieces);
  for (const std::string& word : pieces) bpe(word, ids);
}

void HfBpeTokenizer::Impl::bpe(const std::string& word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges) {
    const auto it = vocab.find(word);
    if (it != vocab.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  constexpr size_t kMaxCachedWord = 256, kMaxCacheEntries = 200000;
  const bool cacheable = word.size() < kMaxCachedWord;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    const auto it = cache.find(word);
    if (it != cache.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> result;
  bpe_uncached(word, result);
  ids.insert(ids.end(), result.begin(), result.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() < kMaxCacheEntries) cache.emplace(word, std::move(result));
  }
}

void HfBpeTokenizer::Impl::bpe_uncached(const std::string& word, std::vector<int32_t>& ids) const {
  // The word as a linked list of symbols, one per character (HF's Word).
  struct Symbol {
    int32_t id;
    int prev, next;
    size_t length;  // bytes; 0 once merged into its left neighbour
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  int32_t pending_unk = -1;
  size_t pending_unk_length = 0;
  auto add = [&](int32_t id, size_t length) {
    const int index = static_cast<int>(symbols.size());
    if (!symbols.empty()) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, length});
  };
  for (size_t pos = 0; pos < word.size();) {
    size_t length = utf8::sequence_length(word, pos);
    if (length == 0) length = 1;
    const auto it = vocab.find(word.substr(pos, length));
    if (it != vocab.end()) {
      if (pending_unk >= 0) {
        add(pending_unk, pending_unk_length);
        pending_unk = -1;
      }
      add(it->second, length);
    } else if (unk_id >= 0) {
      // Unknown characters become unk (consecutive ones fused when fuse_unk);
      // without an unk token HF drops them, and so do we.
      if (pending_unk >= 0 && fuse_unk) {
        pending_unk_length += length;
      } else {
        if (pending_unk >= 0) add(pending_unk, pending_unk_length);
        pending_unk = unk_id;
        pending_unk_length = length;
      }
    }
    pos += length;
  }
  if (pending_unk >= 0) add(pending_unk, pending_unk_length);

  // Merge the lowest-ranked pair first, the leftmost among equals; entries
  // that went stale (their pair changed) are skipped when popped.
  struct Merge {
    uint32_t rank;
    int pos;
    int32_t new_id;
  };
  auto later = [](const Merge& a, const Merge& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::priority_queue<Merge, std::vector<Merge>, decltype(later)> queue(later);
  auto push_pair = [&](int left) {
    const int right = symbols[left].next;
    if (right < 0) return;
    const auto it = merges.find(pair_key(symbols[left].id, symbols[right].id));
    if (it != merges.end()) queue.push({it->second.first, left, it->second.second});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) push_pair(i);
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.length == 0 || left.next < 0) continue;
    const Symbol right = symbols[left.next];
    const auto it = merges.find(pair_key(left.id, right.id));
    if (it == merges.end() || it->second.second != top.new_id) continue;
    symbols[left.next].length = 0;
    left.id = top.new_id;
    left.length += right.length;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (const Symbol& symbol : symbols) {
    if (symbol.length > 0) ids.push_back(symbol.id);
  }
}

// ---------------------------------------------------------------------------
// HfBpeTokenizer
// ---------------------------------------------------------------------------
namespace {

// A pre_tokenizer that is ByteLevel or a Sequence holding one.
bool has_byte_level_step(const json& node) {
  if (!node.is_object()) return false;
  const std::string type = node.value("type", "");
  if (type == "ByteLevel") return true;
  if (type == "Sequence" && node.contains("pretokenizers") && node["pretokenizers"].is_array()) {
    for (const json& step : node["pretokenizers"]) {
      if (has_byte_level_step(step)) return true;
    }
  }
  return false;
}

}  // namespace

bool is_byte_level_bpe(const std::string& json_path) {
  std::ifstream in(json_path, std::ios::binary);
  if (!in) return false;
  const json root = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!root.is_object() || !root.contains("model") || !root["model"].is_object()) return false;
  const std::string type = root["model"].value("type", "BPE");
  return type == "BPE" && has_byte_level_step(root.value("pre_tokenizer", json()));
}

HfBpeTokenizer::HfBpeTokenizer(const std::string& json_path, const TokenizerOptions& options)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = json_path;
  std::error_code ec;
  if (!fs::is_regular_file(json_path, ec)) {
    throw DataError(json_path +
                    ": tokenizer file not found; check data.tokenizer (relative paths are "
                    "resolved against the working directory " +
                    fs::current_path(ec).string() + ")");
  }
  impl_->folder_config = read_hf_tokenizer_config(tokenizer_folder(json_path));
  chat_template_ = impl_->folder_config.chat_template;
  chat_template_file_ = impl_->folder_config.chat_template_file;
  const json root = read_json_file(json_path, "the tokenizer");
  try {
    impl_->load(root, options);
  } catch (const json::exception& e) {
    impl_->malformed(e.what());
  } catch (const std::invalid_argument& e) {
    throw DataError(json_path + ": " + e.what());
  }
}

HfBpeTokenizer::~HfBpeTokenizer() = default;

std::vector<int32_t> HfBpeTokenizer::encode(const std::string& text) const {
  const size_t bad = utf8::find_invalid(text);
  if (bad != std::string::npos) {
    throw DataError("the text is not valid UTF-8 (byte " + std::to_string(bad) + " of " +
                    std::to_string(text.size()) + "); the Hugging Face tokenizer " + impl_->path +
                    " needs UTF-8 text: re-encode the data as UTF-8");
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  impl_->encode_text(text, ids);
  return ids;
}

std::string HfBpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  const ByteAlphabet& alphabet = byte_alphabet();
  std::string bytes;
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || !impl_->id_known[id]) {
      throw DataError(impl_->path + ": cannot decode token id " + std::to_string(id) +
                      (id < 0 || id >= vocab_size()
                           ? ": outside [0, " + std::to_string(vocab_size()) + ")"
                           : std::string(": the vocabulary has no token with that id")));
    }
    // ByteLevel decoder: a token whose characters all belong to the byte
    // alphabet becomes those bytes; any other token (e.g. "<｜end▁of▁sentence｜>")
    // keeps its own UTF-8.
    const std::string& text = impl_->id_to_text[id];
    std::string token_bytes;
    bool all_mapped = true;
    for (size_t pos = 0; pos < text.size();) {
      size_t length = 0;
      const char32_t cp = utf8::decode_at(text, pos, &length);
      if (cp >= alphabet.cp_to_byte.size() || alphabet.cp_to_byte[cp] < 0) {
        all_mapped = false;
        break;
      }
      token_bytes += static_cast<char>(alphabet.cp_to_byte[cp]);
      pos += length;
    }
    bytes += all_mapped ? token_bytes : text;
  }
  return utf8::decode_lossy(bytes);
}

int64_t HfBpeTokenizer::vocab_size() const {
  return static_cast<int64_t>(impl_->id_to_text.size());
}
int32_t HfBpeTokenizer::bos_id() const {
  return impl_->bos;
}
int32_t HfBpeTokenizer::eos_id() const {
  return impl_->eos;
}
int32_t HfBpeTokenizer::token_id(const std::string& token) const {
  return impl_->lookup(token);
}
// transformers ignores add_bos_token when it loads a tokenizer.json: the post-processor decides.
std::optional<bool> HfBpeTokenizer::adds_bos() const {
  return impl_->template_bos >= 0;
}

std::string HfBpeTokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return impl_->id_to_text[id];
}

std::string HfBpeTokenizer::describe() const {
  auto special = [&](int32_t id, const std::string& source) {
    if (id < 0) return std::string("none");
    return std::to_string(id) + " " + impl_->id_to_text[id] + " from " + source;
  };
  return "hf-bpe " + impl_->path + " (vocab " + std::to_string(vocab_size()) + ", " +
         std::to_string(impl_->merges.size()) + " merges, " + std::to_string(impl_->added.size()) +
         " added tokens, bos " + special(impl_->bos, impl_->bos_source) + ", eos " +
         special(impl_->eos, impl_->eos_source) + ")";
}

}  // namespace liger::data
