#!/usr/bin/env python3
"""Oracle for liger-train's Hugging Face byte-level BPE tokenizer (data/hf_tokenizer.cpp).

Trains small byte-level BPE tokenizers with the Python `tokenizers` package on
mixed text (Shakespeare, code, emoji, CJK, whitespace runs, numbers), in the
shapes that real models ship (Llama 3's Split regex + ByteLevel, GPT-2's
ByteLevel regex, a Sequence of Digits/Split behaviours), with special and
added tokens. For each it writes tokenizer.json and, in oracle.json, the ids
and the decode that `tokenizers` gives for held-out texts. The C++ test
(test_data "[oracle]") must reproduce them exactly.

    bpe_oracle.py OUT_DIR [SOURCE_DIR]
"""
import json
import os
import random
import sys
import unicodedata

try:
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                            trainers)
except ImportError as error:  # pragma: no cover - a setup problem, said plainly
    sys.exit(f"bpe_oracle.py needs the Python `tokenizers` package ({error}); run scripts/setup.sh "
             f"or pip install tokenizers into the interpreter that runs this script ({sys.executable})")

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen 2's pattern: like Llama 3's, but numbers split into single digits.
QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Text whose NFC differs from it: decomposed accents, singletons, Hangul jamo,
# marks out of canonical order, a composition exclusion.
NFC_TEXT = ("Re\u0301sume\u0301 A\u030angstro\u0308m \u212b \u2126hm \u1100\u1161\u11a8 \u1112\u1161\u11ab "
            "a\u0307\u0323 q\u0323\u0307 \uf900 \u0958 \u0344 e\u0301\u0301 \u00e9\u0323 \u1e0b\u0323 "
            "o\u0308\u0304 \u0041\u0300\u0316 \u0627\u0653 \u30ab\u3099 \u304b\u3099\n")

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>"]

# Text that is not Shakespeare, written for this test.
CODE = '''\
#include <vector>
int main(int argc, char** argv) {
    std::vector<int> xs{1, 2, 3};
    for (auto& x : xs) x *= 2;   // double them
    return xs.size() == 3 ? 0 : 1;
}

def fibonacci(n: int) -> list[int]:
\t"""Return the first n numbers."""
\tout = [0, 1]
\twhile len(out) < n:
\t\tout.append(out[-1] + out[-2])
\treturn out[:n]

if __name__ == "__main__":
    print({"k": [1.5e-3, -42, 0x1F]}, end="\\r\\n")
'''

WORLD = ("Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨🚀\n"
         "中文：今天天气很好，我们去公园散步吧。\n"
         "日本語：吾輩は猫である。名前はまだ無い。カタカナ　と　ひらがな\n"
         "한국어: 안녕하세요, 세계!\n"
         "Ελληνικά, русский текст, עברית, العربية ٣٤٥, हिन्दी\n"
         "café naïve coöperate e\u0301 (combining) Å\u030a\n")

NUMBERS = ("1 12 123 1234 12345 1234567890 3.14159 1,000,000 -0.5e10 ２０２４年 ² ½ "
           "0001 2023-10-05T12:34:56Z\n")

WHITESPACE = ("two  spaces,   three,\ttab,\t\ttwo tabs, trailing   \n\n\nthree newlines\r\n"
              "crlf\r\n\r\nnbsp\u00a0here ideographic\u3000space line\u2028sep zero\u200bwidth "
              "vt\x0bff\x0c nel\x85 " + " " * 40 + "forty spaces\n" + "\n" * 5)


def edge_cases(specials):
    """Short texts that probe the corners, tokenized one by one."""
    cases = [
        "", " ", "  ", "\n", "\r\n", "\t", " \n ", "a", " a", "a ", "Hello world", " Hello world  ",
        "DON'T we'LL it'S they've I'm you'd", "'s'S", "x" * 600, " " * 300, "ab" * 150 + "!",
        "1234567", "a1b22c333d4444", "end.", "...!!!???", "@#$%^&*()_+-=[]{}|;:,<>/~`",
        "\x00\x01\x1f control \x7f", "😀", "👨‍👩‍👧‍👦", "中文", "e\u0301", "\u00a0\u3000\u2028\u2029",
        "ﬁ ligature Ω ohm K kelvin", "tab\tand\u00a0nbsp", NFC_TEXT, "cafe\u0301 caf\u00e9 cafe\u0301s",
    ]
    for token in specials:
        cases += [token, token + token, "x" + token + "y", " " + token + " ", token[:-1],
                  "a " + token + "\n\n" + token + "b"]
    return cases


def mixed_training_text(shakespeare):
    cut = len(shakespeare) * 9 // 10
    train = shakespeare[:400_000] + "\n" + (CODE + WORLD + NUMBERS + WHITESPACE) * 20
    held_out = shakespeare[cut:cut + 30_000]
    return train, held_out


def train(tokenizer, text, vocab_size, specials):
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    chunks = [text[i:i + 2000] for i in range(0, len(text), 2000)]
    tokenizer.train_from_iterator(chunks, trainer=trainer)
    return tokenizer


def make_llama3(text):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    train(tok, text, 3000, LLAMA3_SPECIALS)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    return tok, LLAMA3_SPECIALS, None


def make_gpt2(text):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    train(tok, text, 2000, ["<|endoftext|>"])
    # Added tokens with every matching option.
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False)])
    tok.add_tokens([AddedToken("[word]", single_word=True), AddedToken("hello world", normalized=True),
                    AddedToken("ROMEO", normalized=False)])
    config = {"bos_token": {"content": "<|endoftext|>", "__type": "AddedToken"}, "eos_token": "<|endoftext|>"}
    return tok, ["<|endoftext|>", "<mask>", "[word]", "hello world", "ROMEO"], config


def make_behaviours(text):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.Split("::", behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"[,;]"), behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"\s+"), behavior="contiguous", invert=True),
        pre_tokenizers.Split("--", behavior="removed"),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    train(tok, text, 1500, ["<s>", "</s>"])
    return tok, ["<s>", "</s>"], None


def make_qwen(text):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    train(tok, text + NFC_TEXT * 20, 2500, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    # A normalized added token is matched on the NFC text, in its NFC form.
    tok.add_tokens([AddedToken("cafe\u0301", normalized=True)])
    config = {"bos_token": None, "eos_token": "<|im_end|>"}
    return tok, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], config


def nfc_cases():
    """Strings and their NFC from Python's unicodedata, for data/unicode_nfc.cpp."""
    decomposable = [chr(cp) for cp in range(0x110000)
                    if not 0xD800 <= cp <= 0xDFFF and unicodedata.normalize("NFD", chr(cp)) != chr(cp)]
    marks = [chr(cp) for cp in range(0x300, 0x370)] + ["\u0323", "\u0345", "\u05b0", "\u093c", "\u3099", "\u302a"]
    bases = ["a", "e", "o", "u", "A", "E", "\u03b1", "\u0438", "\u1100", "\uac00", "\u0915", "\u304b"]
    rng = random.Random(7)
    texts = ["".join(decomposable), unicodedata.normalize("NFD", "".join(decomposable)), NFC_TEXT]
    for _ in range(300):
        texts.append("".join(rng.choice(bases) + "".join(rng.choice(marks) for _ in range(rng.randint(0, 4)))
                             for _ in range(rng.randint(1, 6))))
    texts.append("".join(chr(cp) for cp in range(0x1100, 0x1200)) + "".join(chr(cp) for cp in range(0xAC00, 0xAD00)))
    return [{"text": t, "nfc": unicodedata.normalize("NFC", t)} for t in texts]


def to_legacy_merges(path):
    """Rewrites merges as "a b" strings (the format older files and Llama 3 use)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    merges = data["model"]["merges"]
    if merges and isinstance(merges[0], list):
        assert all(" " not in a and " " not in b for a, b in merges), "byte-level tokens have no spaces"
        data["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    source_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(source_dir, "data", "samples", "tinyshakespeare.txt"), encoding="utf-8") as f:
        shakespeare = f.read()
    train_text, held_out = mixed_training_text(shakespeare)
    specials_text = "<|begin_of_text|>"
    held_out_text = (specials_text + held_out[:15_000] + "<|eot_id|>" + CODE.replace("int", "long") +
                     WORLD[::-1] + NUMBERS + WHITESPACE + held_out[15_000:] + "<|end_of_text|>")

    variants = []
    for name, make, legacy in (("llama3", make_llama3, True), ("gpt2", make_gpt2, False),
                               ("behaviours", make_behaviours, True), ("qwen", make_qwen, False)):
        tok, specials, config = make(train_text)
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "tokenizer.json")
        tok.save(path)
        if legacy:
            to_legacy_merges(path)
        if config is not None:
            with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump(config, f)
        reloaded = Tokenizer.from_file(path)  # what the C++ side reads

        def case(text):
            ids = reloaded.encode(text, add_special_tokens=False).ids
            return {"text": text, "ids": ids, "decoded": reloaded.decode(ids, skip_special_tokens=False)}

        cases = [case(held_out_text)] + [case(text) for text in edge_cases(specials)]
        # Single tokens of multi-byte text decode to partial UTF-8 (U+FFFD).
        singles = [{"ids": [i], "decoded": reloaded.decode([i], skip_special_tokens=False)}
                   for i in reloaded.encode(WORLD, add_special_tokens=False).ids]
        variants.append({
            "name": name,
            "tokenizer": os.path.join(name, "tokenizer.json"),
            "vocab_size": reloaded.get_vocab_size(with_added_tokens=True),
            "legacy_merges": legacy,
            "cases": cases,
            "single_tokens": singles,
        })
    with open(os.path.join(out_dir, "oracle.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizers_version": __import__("tokenizers").__version__, "variants": variants,
                   "unicode_version": unicodedata.unidata_version, "nfc": nfc_cases()}, f, ensure_ascii=False)
    total = sum(len(v["cases"][0]["ids"]) for v in variants)
    print(f"bpe_oracle: {len(variants)} tokenizers, held-out text of {len(held_out_text)} characters "
          f"({total} tokens over all), written to {out_dir}")


if __name__ == "__main__":
    main()
