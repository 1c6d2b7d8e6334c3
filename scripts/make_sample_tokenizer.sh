#!/usr/bin/env bash
# Trains the SentencePiece BPE tokenizer shipped for the sample text:
#   data/samples/tinyshakespeare.txt -> data/samples/shakespeare_bpe1024.model
# Reproducible: one thread, no sentence sampling, fixed seed, identity normalisation.
#
# Exact round trip (decode(encode(text)) == text) for the sample:
#   - identity normalisation and no whitespace clean-up keep every character;
#   - no dummy prefix, so a text that starts with a word decodes without an added space;
#   - spm_train reads one sentence per line, so "\n" never reaches the vocabulary; with
#     byte_fallback it encodes as the byte piece <0x0A> and decodes back to a newline.
# Usage: scripts/make_sample_tokenizer.sh [vocab_size]   (default 1024)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vocab_size="${1:-1024}"
# Relative paths: the model file records its input and prefix, so absolute or temporary
# paths would make the bytes differ from machine to machine.
input="data/samples/tinyshakespeare.txt"
out_prefix="data/samples/shakespeare_bpe${vocab_size}"

command -v spm_train >/dev/null || {
  echo "spm_train not found: install it (Debian: apt-get install sentencepiece)" >&2
  exit 1
}

cd "${repo_root}"
spm_train \
  --input="${input}" \
  --model_prefix="${out_prefix}" \
  --model_type=bpe \
  --vocab_size="${vocab_size}" \
  --character_coverage=1.0 \
  --byte_fallback=true \
  --normalization_rule_name=identity \
  --add_dummy_prefix=false \
  --remove_extra_whitespaces=false \
  --split_digits=true \
  --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 \
  --input_sentence_size=0 \
  --shuffle_input_sentence=false \
  --num_threads=1 \
  --random_seed=1234 \
  --minloglevel=1

rm -f "${out_prefix}.vocab"   # the .model holds everything the loader needs
echo "wrote ${out_prefix}.model ($(stat -c %s "${out_prefix}.model") bytes)"
