#!/usr/bin/env bash
# liger-tokenize through the executables, on the CPU:
#  1. the Shakespeare text pre-tokenized with the sample tokenizer trains
#     exactly like the text itself: configs/tiny.yaml, 6 steps, the same loss
#     at every step (no tolerance); no mask file is needed;
#  2. prompt_completion and chat (mistral template) JSONL made here, packed
#     isolated: the .bin with its .mask trains exactly like the JSONL files;
#  3. the thread count does not change the output's bytes, and stderr that is
#     not a terminal gets no carriage return;
#  4. the errors a user meets are one line naming the file, exit 1, and leave
#     no output behind.
# Usage: test_tokenize.sh BIN_DIR SOURCE_DIR
set -uo pipefail
BIN=$1
SRC=$2
cd "$SRC"
failures=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

source "$(dirname "$0")/same_losses.sh"

tokenizer=data/samples/shakespeare_bpe1024.model
train=(--config configs/tiny.yaml --set training.device=cpu --set training.threads=1
       --set data.seq_len=64 --set training.micro_batch_size=4 --set training.steps=6
       --set training.warmup_steps=2 --set logging.every=1 --set logging.sample_tokens=0
       --set checkpoint.every=0 --set checkpoint.save_final=false --set logging.progress_bar=off)

# run_train NAME [--set ...]: a 6-step run into $work/NAME.
run_train() {
  local name=$1
  shift
  "$BIN/liger-train" "${train[@]}" --set checkpoint.output_dir="$work/$name" "$@" \
    > "$work/$name.log" 2>&1 || { fail "training run $name"; tail -5 "$work/$name.log"; }
}

# exactly_same_losses NAME A B: every step's loss equal (tolerance 0).
exactly_same_losses() {
  local out
  if out=$(same_losses "$2/metrics.jsonl" "$3/metrics.jsonl" 0); then
    echo "ok   $1: $out"
  else
    fail "$1: ${out:-no metrics}"
  fi
}

# --- 1. text == its .bin -----------------------------------------------------
"$BIN/liger-tokenize" --tokenizer "$tokenizer" --out "$work/shakespeare.bin" --threads 2 \
  data/samples/tinyshakespeare.txt > "$work/tokenize_text.out" 2> "$work/tokenize_text.err" \
  || { fail "liger-tokenize of the text"; cat "$work/tokenize_text.err"; }
grep -q "no mask file needed" "$work/tokenize_text.out" && [ ! -e "$work/shakespeare.bin.mask" ] \
  || fail "plain text should need no mask file: $(cat "$work/tokenize_text.out")"
run_train text
run_train text_bin --set data.train="[$work/shakespeare.bin]"
exactly_same_losses "text == liger-tokenize .bin" "$work/text" "$work/text_bin"

# --- 2. prompt_completion + chat == their .bin + .mask -----------------------
python3 - "$work" <<'PY'
import json, sys
lines = [l.strip() for l in open("data/samples/tinyshakespeare.txt") if l.strip()][:1200]
with open(f"{sys.argv[1]}/pc.jsonl", "w") as f:
    for i in range(0, 600, 2):
        f.write(json.dumps({"prompt": lines[i] + "\n", "completion": lines[i + 1]}) + "\n")
with open(f"{sys.argv[1]}/chat.jsonl", "w") as f:
    for i in range(600, 1200, 3):
        f.write(json.dumps({"messages": [
            {"role": "system", "content": "Speak as in the play."},
            {"role": "user", "content": lines[i]},
            {"role": "assistant", "content": lines[i + 1] + " " + lines[i + 2]}]}) + "\n")
PY
jsonl=("$work/pc.jsonl" "$work/chat.jsonl")
"$BIN/liger-tokenize" --tokenizer "$tokenizer" --chat-template mistral --out "$work/sft.bin" \
  --threads 3 "${jsonl[@]}" > "$work/tokenize_sft.out" 2> "$work/tokenize_sft.err" \
  || { fail "liger-tokenize of the JSONL"; cat "$work/tokenize_sft.err"; }
[ -s "$work/sft.bin.mask" ] || fail "prompt_completion and chat need a mask file"
sft=(--set data.chat_template=mistral --set data.packing=isolated)
run_train sft "${sft[@]}" --set data.train="[$work/pc.jsonl, $work/chat.jsonl]"
run_train sft_bin "${sft[@]}" --set data.train="[$work/sft.bin]"
exactly_same_losses "prompt_completion + chat, isolated == liger-tokenize .bin + .mask" \
  "$work/sft" "$work/sft_bin"

# --- 3. threads, progress ----------------------------------------------------
"$BIN/liger-tokenize" --tokenizer "$tokenizer" --chat-template mistral --out "$work/sft1.bin" \
  --threads 1 "${jsonl[@]}" > /dev/null 2>&1 || fail "liger-tokenize --threads 1"
if cmp -s "$work/sft.bin" "$work/sft1.bin" && cmp -s "$work/sft.bin.mask" "$work/sft1.bin.mask"; then
  echo "ok   --threads 3 and --threads 1 write the same bytes"
else
  fail "--threads 3 and --threads 1 wrote different files"
fi
if grep -q $'\r' "$work/tokenize_text.err" "$work/tokenize_sft.err"; then
  fail "a carriage return on stderr that is not a terminal"
else
  echo "ok   no carriage return on stderr that is not a terminal"
fi

# --- 4. errors ---------------------------------------------------------------
# expect_error NAME PATTERN -- ARGS...: exit 1, one line matching PATTERN, no output file.
expect_error() {
  local name=$1 pattern=$2
  shift 3
  local out code
  rm -f "$work/err.bin"
  out=$("$BIN/liger-tokenize" "$@" 2>&1); code=$?
  if [ "$code" -ne 1 ] || [ "$(wc -l <<<"$out")" -ne 1 ] || ! grep -Eq -- "$pattern" <<<"$out" ||
     ls "$work" | grep -q "err.bin"; then
    fail "$name: exit $code, output: $out"
  else
    echo "ok   $name: $out"
  fi
}
printf 'a,b\n' > "$work/table.csv"
expect_error "missing input file" "^error: $work/nope\.txt:1: no such input file" -- \
  --tokenizer "$tokenizer" --out "$work/err.bin" data/samples/tinyshakespeare.txt "$work/nope.txt"
expect_error "unknown format" "^error: $work/table\.csv:1: format auto cannot tell.*set --format" -- \
  --tokenizer "$tokenizer" --out "$work/err.bin" "$work/table.csv"
expect_error "tokenizer not found" "^error: $work/nope\.model: tokenizer file not found; check --tokenizer" -- \
  --tokenizer "$work/nope.model" --out "$work/err.bin" data/samples/tinyshakespeare.txt
expect_error "output not writable" "^error: $work/no/such/err\.bin: cannot be written" -- \
  --tokenizer "$tokenizer" --out "$work/no/such/err.bin" data/samples/tinyshakespeare.txt
printf '{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n' > "$work/bad.jsonl"
expect_error "malformed record" "^error: $work/bad\.jsonl:2: missing field \"completion\"" -- \
  --tokenizer "$tokenizer" --out "$work/err.bin" "$work/bad.jsonl"

if [ "$failures" -ne 0 ]; then
  echo "$failures liger-tokenize check(s) failed"
  exit 1
fi
echo "all liger-tokenize checks passed"
