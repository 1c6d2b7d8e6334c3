#!/usr/bin/env python3
"""Writes data/samples/shakespeare_pairs_1024.jsonl: DPO pairs whose every
sequence is exactly 1024 tokens with the shipped tokenizer, for the end-to-end
DPO benchmark (configs/bench/dpo_1b_h100.yaml, bench/e2e_dpo.sh).

    .venv/bin/python scripts/make_sample_pairs_1024.py [PAIRS]   # default 64

liger-train reads a string pair as [BOS] prompt response [EOS], prompt and
response tokenized apart, so a sequence is 1 + 255 prompt tokens + 767
response tokens + 1 = 1024: one row of data.seq_len 1024 each, the shape of
the baselines' random pairs (a prompt of seq_len / 4 tokens). The prompt is a
stretch of the Shakespeare text, chosen is the text that follows it, rejected
is the same words shuffled; both are cut to 767 tokens. Deterministic: the
same text, tokenizer and PAIRS give the same file.
"""
import json
import random
import sys

import sentencepiece

TEXT = "data/samples/tinyshakespeare.txt"
MODEL = "data/samples/shakespeare_bpe1024.model"
OUT = "data/samples/shakespeare_pairs_1024.jsonl"
PROMPT_TOKENS, RESPONSE_TOKENS = 255, 767  # + BOS + EOS = 1024


def cut(sp, text, n):
    """The longest prefix of text that encodes to n tokens (None when there is none)."""
    ids = sp.encode(text)
    for k in range(n, max(n - 8, 0), -1):  # a cut may merge or split differently: try a few shorter cuts
        piece = sp.decode(ids[:k])
        while len(sp.encode(piece)) < n and len(piece) < len(text):
            piece = text[:len(piece) + 1]  # grow by characters until n tokens
        if len(sp.encode(piece)) == n:
            return piece
    return None


def main():
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    sp = sentencepiece.SentencePieceProcessor(model_file=MODEL)
    text = open(TEXT, encoding="utf-8").read()
    rng = random.Random(1234)
    # Pairs are cut from evenly spaced starts; each takes about 4,000 characters.
    stride = (len(text) - 8000) // pairs
    rows = []
    for i in range(pairs):
        start = i * stride
        start = text.index("\n\n", start) + 2  # start at a speech
        prompt = cut(sp, text[start:start + 2000], PROMPT_TOKENS)
        rest = text[start + len(prompt):start + len(prompt) + 6000]
        chosen = cut(sp, rest, RESPONSE_TOKENS)
        words = rest.split(" ")
        rng.shuffle(words)
        rejected = cut(sp, " ".join(words), RESPONSE_TOKENS)
        if None in (prompt, chosen, rejected):
            continue
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    with open(OUT, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"{OUT}: {len(rows)} pairs, every sequence 1 + {PROMPT_TOKENS} + {RESPONSE_TOKENS} + 1 tokens")


if __name__ == "__main__":
    main()
