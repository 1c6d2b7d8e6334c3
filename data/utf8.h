// UTF-8 helpers for the tokenizers: validation, code point iteration and the
// lossy decoding that Hugging Face's ByteLevel decoder applies to its bytes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace liger::data::utf8 {

// Byte offset of the first byte that is not part of a well-formed UTF-8
// sequence (Unicode Table 3-7), or npos when `text` is valid UTF-8.
size_t find_invalid(std::string_view text);

// The length in bytes of the well-formed sequence at `text[pos]`, or 0 when
// none starts there (a stray continuation byte, an overlong form, a surrogate,
// a truncated sequence, ...).
size_t sequence_length(std::string_view text, size_t pos);

// The code point of the well-formed sequence at `text[pos]` (see
// sequence_length); `length` receives its size. Undefined for invalid input.
char32_t decode_at(std::string_view text, size_t pos, size_t* length);

// Appends the UTF-8 encoding of `cp` (must be a Unicode scalar value).
void append(std::string& out, char32_t cp);

// `bytes` as valid UTF-8: every maximal ill-formed subpart becomes U+FFFD,
// which is what Rust's String::from_utf8_lossy (and so HF tokenizers) does.
std::string decode_lossy(std::string_view bytes);

// Unicode White_Space (the property Rust's and Oniguruma's \s follow).
bool is_white_space(char32_t cp);

}  // namespace liger::data::utf8
