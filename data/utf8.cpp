#include "data/utf8.h"

namespace liger::data::utf8 {

namespace {

// The allowed range of the second byte after lead byte `lead` (Table 3-7);
// later continuation bytes are always 0x80..0xBF.
struct SecondByteRange {
  unsigned char low, high;
};

// Expected sequence length for a lead byte, 0 for a byte that cannot start one.
int expected_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

SecondByteRange second_byte_range(unsigned char lead) {
  switch (lead) {
    case 0xE0: return {0xA0, 0xBF};  // no overlong 3-byte forms
    case 0xED: return {0x80, 0x9F};  // no surrogates
    case 0xF0: return {0x90, 0xBF};  // no overlong 4-byte forms
    case 0xF4: return {0x80, 0x8F};  // nothing above U+10FFFF
    default: return {0x80, 0xBF};
  }
}

// How many bytes from `pos` belong to the (possibly ill-formed) sequence that
// starts there: the full length when well formed, else the length of its
// maximal well-formed prefix (at least 1). Sets `valid`.
size_t scan(std::string_view text, size_t pos, bool* valid) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  const int length = expected_length(lead);
  if (length == 0) {
    *valid = false;
    return 1;
  }
  for (int i = 1; i < length; ++i) {
    if (pos + i >= text.size()) {
      *valid = false;
      return static_cast<size_t>(i);
    }
    const auto byte = static_cast<unsigned char>(text[pos + i]);
    const SecondByteRange range = i == 1 ? second_byte_range(lead) : SecondByteRange{0x80, 0xBF};
    if (byte < range.low || byte > range.high) {
      *valid = false;
      return static_cast<size_t>(i);
    }
  }
  *valid = true;
  return static_cast<size_t>(length);
}

}  // namespace

size_t sequence_length(std::string_view text, size_t pos) {
  if (pos >= text.size()) return 0;
  bool valid = false;
  const size_t length = scan(text, pos, &valid);
  return valid ? length : 0;
}

size_t find_invalid(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {  // ASCII fast path
      ++pos;
      continue;
    }
    bool valid = false;
    const size_t length = scan(text, pos, &valid);
    if (!valid) return pos;
    pos += length;
  }
  return std::string_view::npos;
}

char32_t decode_at(std::string_view text, size_t pos, size_t* length) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  const int n = expected_length(lead);
  *length = static_cast<size_t>(n == 0 ? 1 : n);
  if (n <= 1) return lead;
  char32_t cp = lead & (0xFF >> (n + 1));
  for (int i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<unsigned char>(text[pos + i]) & 0x3F);
  return cp;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string decode_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    bool valid = false;
    const size_t length = scan(bytes, pos, &valid);
    if (valid) {
      out.append(bytes.substr(pos, length));
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
    }
    pos += length;
  }
  return out;
}

bool is_white_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

}  // namespace liger::data::utf8
