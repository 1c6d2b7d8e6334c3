#!/usr/bin/env bash
# liger-export and liger-generate as a user meets them: train a tiny Gemma 2
# for a few steps with liger-train, export the checkpoint to a Hugging Face
# folder, generate from the checkpoint and from the export (the same greedy
# tokens, cached or not), and the one-line errors for wrong folders.
# Usage: test_export_generate.sh BIN_DIR SOURCE_DIR
set -uo pipefail
BIN=$1
SRC=$2
cd "$SRC"
failures=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# expect NAME EXIT_CODE PATTERN -- COMMAND...   (PATTERN: grep -E over stdout+stderr)
expect() {
  local name=$1 want_code=$2 pattern=$3
  shift 4
  local out code
  out=$("$@" 2>&1); code=$?
  if [ "$code" -ne "$want_code" ]; then
    echo "FAIL $name: exit $code, wanted $want_code"; echo "$out" | tail -5; failures=$((failures + 1)); return
  fi
  if ! grep -Eq -- "$pattern" <<<"$out"; then
    echo "FAIL $name: output lacks /$pattern/"; echo "$out" | tail -5; failures=$((failures + 1)); return
  fi
  if [ "$want_code" -ne 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ]; then
    echo "FAIL $name: the error is not one line"; echo "$out" | head -5; failures=$((failures + 1)); return
  fi
  echo "ok   $name"
}

run="$work/run"
expect "liger-train trains a tiny Gemma 2" 0 "final loss" -- \
  "$BIN/liger-train" --config configs/tiny_gemma2.yaml --set training.device=cpu --set training.steps=3 \
  --set model.hidden_size=32 --set model.intermediate_size=64 --set model.num_layers=2 --set model.head_dim=16 \
  --set data.seq_len=32 --set training.micro_batch_size=2 --set checkpoint.output_dir="$run" \
  --set logging.progress_bar=off --set logging.sample_tokens=0
ckpt="$run/step-3"
expect "liger-export writes a Hugging Face folder" 0 "exported .*gemma2" -- \
  "$BIN/liger-export" --checkpoint "$ckpt" --out "$work/hf"
for f in config.json model.safetensors tokenizer.model tokenizer_config.json \
         generation_config.json; do
  [ -f "$work/hf/$f" ] || { echo "FAIL export: no $f"; failures=$((failures + 1)); }
done
grep -q '"Gemma2ForCausalLM"' "$work/hf/config.json" || { echo "FAIL export: config.json architecture"; failures=$((failures + 1)); }

gen=("$BIN/liger-generate" --prompt "ROMEO:" --temperature 0 --max-new-tokens 12 --print-ids --device cpu)
cached=$("${gen[@]}" --checkpoint "$ckpt" 2>&1)
uncached=$("${gen[@]}" --checkpoint "$ckpt" --no-cache 2>&1)
from_hf=$("${gen[@]}" --hf "$work/hf" --tokenizer data/samples/shakespeare_bpe1024.model 2>&1)
# The export carries its tokenizer: the folder alone is enough.
(cd "$work" && "${gen[@]}" --hf "$work/hf" > "$work/from_hf_alone.txt" 2>&1)
from_hf_alone=$(cat "$work/from_hf_alone.txt")
if [ -n "$cached" ] && [ "$cached" = "$uncached" ] && [ "$cached" = "$from_hf" ] && [ "$cached" = "$from_hf_alone" ] &&
   [ "$(wc -w <<<"$cached")" -ge 3 ]; then
  echo "ok   greedy ids agree: cached, uncached, from the export, from the export alone ($cached)"
else
  echo "FAIL greedy ids: cached '$cached' uncached '$uncached' export '$from_hf' export alone '$from_hf_alone'"
  failures=$((failures + 1))
fi
expect "liger-generate samples text" 0 "^ROMEO:" -- \
  "$BIN/liger-generate" --checkpoint "$ckpt" --prompt "ROMEO:" --max-new-tokens 8 --seed 3 --device cpu

expect "export from a folder that is not a checkpoint" 1 "error: .*not a checkpoint folder" -- \
  "$BIN/liger-export" --checkpoint "$work/nothing" --out "$work/x"
mkdir -p "$work/empty"
expect "generate from a folder without config.json" 1 "error: .*config.json" -- \
  "$BIN/liger-generate" --hf "$work/empty" --prompt hi
cp "$work/hf/config.json" "$work/empty/"
head -c 1000 "$work/hf/model.safetensors" > "$work/empty/model.safetensors"
expect "generate from a truncated safetensors file" 1 "error: .*model.safetensors.*truncated" -- \
  "$BIN/liger-generate" --hf "$work/empty" --prompt hi --tokenizer data/samples/shakespeare_bpe1024.model
expect "training from a truncated hf_path" 1 "config error: model.hf_path: .*truncated" -- \
  "$BIN/liger-train" --config configs/tiny.yaml --set model.hf_path="$work/empty" --set training.device=cpu \
  --set data.seq_len=32 --set checkpoint.output_dir="$work/r2" --set logging.level=error

if [ $failures -ne 0 ]; then echo "$failures export/generate check(s) failed"; exit 1; fi
echo "all export/generate checks passed"
