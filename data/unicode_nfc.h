// Unicode Normalization Form C (UAX #15): canonical decomposition, canonical
// ordering, canonical composition. The tables are generated from Python's
// unicodedata by data/tools/gen_nfc_tables.py; Hangul is done arithmetically.
// Qwen-style tokenizer.json files normalize with it.
#pragma once

#include <string>
#include <string_view>

namespace liger::data::unicode {

// The NFC form of `text` (valid UTF-8). ASCII text is returned as it is.
std::string nfc(std::string_view text);

}  // namespace liger::data::unicode
