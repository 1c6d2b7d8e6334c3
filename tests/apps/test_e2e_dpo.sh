#!/usr/bin/env bash
# The GPU-free parts of bench/e2e_dpo.sh, its table and its data, on results
# made up here where a GPU is needed:
#  a) e2e_dpo_table.py: the yardstick is TRL + Liger-Kernel, else the loop
#     with Liger-Kernel, else the plain loop (said to be no yardstick of the
#     target); the 1.5x / memory verdict and the precomputed gain; no
#     baseline: exit 1;
#  b) data/samples/shakespeare_pairs_1024.jsonl: every prompt 255 tokens and
#     every response 767 with the shipped tokenizer (BOS + EOS make 1024);
#  c) hf_dpo_liger_loop.py on the CPU without Liger-Kernel: 2 steps of the tiny
#     preset, the first loss ln 2 (the policy is the reference);
#  d) e2e_dpo.sh with a stand-in liger-train and a stand-in Python that hands
#     back c)'s JSON: one line per run, the table in $OUT, exit 0; a bad
#     argument: usage, exit 2.
# Usage: test_e2e_dpo.sh [SOURCE_DIR] [PYTHON]
set -uo pipefail
SRC=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
PY=${2:-python3}
source "$SRC/tests/apps/check_harness.sh"
TABLE=$SRC/bench/e2e_dpo_table.py

# metrics DIR STEADY_TOKENS_PER_S PEAK_GIB: 5 slow warm-up rows, then 3 steady ones.
metrics() {
  mkdir -p "$1"
  for rate in 1000 1000 1000 1000 1000 "$2" "$2" "$2"; do
    printf '{"step": 1, "loss": 0.6931, "tokens": 16384, "tokens_per_s": %s, "peak_mem_bytes": %s}\n' \
      "$rate" "$(($3 * 1073741824))"
  done > "$1/metrics.jsonl"
}
# baseline FILE LABEL TOKENS_PER_S PEAK_GIB
baseline() {
  printf '{"baseline": "%s", "versions": {"torch": "2.11.0"}, "config": {"pairs": 8, "seq_len": 1024, "steps": 8}, ' "$2" > "$1"
  printf '"oom": null, "tokens_per_s": %s, "peak_mem_gib": %s, "loss_first": 0.6931, "loss_last": 0.69}\n' "$3" "$4" >> "$1"
}

# a) the table
t=$work/t
metrics "$t/liger_model" 30000 10
metrics "$t/liger_precomputed" 36000 8
baseline "$t/trl_liger.json" "TRL DPOTrainer + Liger-Kernel" 18000 20
baseline "$t/hf_loop_liger.json" "HF + Liger-Kernel DPO loop" 20000 18
out=$("$PY" "$TABLE" "$t" 2>&1)
code=$?
if [[ $code -eq 0 ]] && holds "| liger-train, reference: model | 30,000 | 16384 | 10.00 | 1.67x | 0.50x |" \
    "| TRL DPOTrainer + Liger-Kernel (yardstick) | 18,000 | 16384 | 20.00 | 1.00x | 1.00x |" \
    "TRL DPOTrainer + Liger-Kernel tokens/s at <= its memory: MET (1.67x, 10.00 vs 20.00 GiB)" \
    "reference: precomputed: 1.20x the tokens/s of reference: model, peak 8.00 vs 10.00 GiB; 2.00x"; then
  ok "table: TRL + Liger-Kernel is the yardstick, target met, precomputed gain"
else
  fail "table (exit $code): $out"
fi
rm "$t/trl_liger.json"
out=$("$PY" "$TABLE" "$t" 2>&1)
if holds "| TRL DPOTrainer + Liger-Kernel | not run or failed |" \
    "HF + Liger-Kernel DPO loop (TRL's DPO step with Liger-Kernel, without TRL) tokens/s at <= its memory: MET (1.50x"; then
  ok "table: without TRL the loop is the yardstick, and says so"
else
  fail "table without TRL: $out"
fi
rm "$t/hf_loop_liger.json"
baseline "$t/hf_loop.json" "HF DPO loop (plain PyTorch loss)" 10000 9
out=$("$PY" "$TABLE" "$t" 2>&1)
if holds "(no Liger-Kernel: not the target's yardstick) tokens/s at <= its memory: MISSED (3.00x, 10.00 vs 9.00 GiB)"; then
  ok "table: the plain loop is no yardstick of the target; more memory misses it"
else
  fail "table with the plain loop: $out"
fi
rm "$t/hf_loop.json"
out=$("$PY" "$TABLE" "$t" 2>&1)
code=$?
if [[ $code -eq 1 ]] && holds "target: no baseline ran"; then
  ok "table: no baseline is exit 1"
else
  fail "table without baselines (exit $code): $out"
fi

# b) the pairs of the benchmark config: 1 + 255 + 767 + 1 = 1024 tokens per sequence
if "$PY" -c "import sentencepiece" 2> /dev/null; then
  out=$("$PY" - "$SRC" << 'PY' 2>&1
import json, sys
import sentencepiece
src = sys.argv[1]
sp = sentencepiece.SentencePieceProcessor(model_file=f"{src}/data/samples/shakespeare_bpe1024.model")
rows = [json.loads(l) for l in open(f"{src}/data/samples/shakespeare_pairs_1024.jsonl")]
lengths = {(len(sp.encode(r["prompt"])), len(sp.encode(r["chosen"])), len(sp.encode(r["rejected"]))) for r in rows}
print(len(rows), sorted(lengths))
PY
  )
  if [[ $out == "64 [(255, 767, 767)]" ]]; then ok "pairs: 64, every sequence 1024 tokens"; else fail "pairs: $out"; fi
else
  echo "skip the pairs' lengths: $PY has no sentencepiece"
fi

# c) the loop on the CPU, plain PyTorch loss
if "$PY" "$SRC/scripts/baselines/baseline_available.py" liger 2> /dev/null; then
  echo "skip c) and d): this Python has the Liger-Kernel baseline, whose kernels need a GPU"
  echo "$failures failure(s)"
  [[ $failures -eq 0 ]]
  exit
fi
LOOP=$SRC/scripts/baselines/hf_dpo_liger_loop.py
tiny=(--preset tiny --pairs 1 --seq-len 32 --device cpu)
out=$("$PY" "$LOOP" "${tiny[@]}" --steps 2 --warmup 1 --no-liger --json "$work/loop.json" 2>&1)
code=$?
check=$("$PY" -c 'import json, math, sys; d = json.load(open(sys.argv[1]))
print(abs(d["loss_first"] - math.log(2)) < 1e-6 and d["tokens_per_s"] > 0 and d["oom"] is None
      and d["baseline"] == "HF DPO loop (plain PyTorch loss)")' "$work/loop.json" 2>&1)
if [[ $code -eq 0 && $check == True ]] && [[ $(grep -c "^step [12]: loss" <<< "$out") -eq 2 ]]; then
  ok "hf_dpo_liger_loop.py --no-liger on the CPU: first loss ln 2"
else
  fail "hf_dpo_liger_loop.py (exit $code, check $check): $out"
fi

# d) e2e_dpo.sh: a stand-in liger-train writes its metrics, a stand-in Python c)'s JSON
mkdir -p "$work/build/apps"
cat > "$work/python" << EOF
#!/usr/bin/env bash
[[ \$1 == -c && \$2 == import* ]] && exit 1             # no baseline package imports
if [[ \$1 == scripts/baselines/hf_dpo_liger_loop.py ]]; then
  echo "\$*" > "$work/loop_args"
  while [[ \$# -gt 0 ]]; do [[ \$1 == --json ]] && cp "$work/loop.json" "\$2"; shift; done
  exit 0
fi
exec "$PY" "\$@"
EOF
chmod +x "$work/python"
cat > "$work/build/apps/liger-train" << EOF
#!/usr/bin/env bash
echo "\$*" >> "$work/train_args"
dir=
while [[ \$# -gt 0 ]]; do [[ \$2 == checkpoint.output_dir=* ]] && dir=\${2#*=}; shift; done
mkdir -p "\$dir" && cp "$t/liger_model/metrics.jsonl" "\$dir/metrics.jsonl"
EOF
chmod +x "$work/build/apps/liger-train"
OUT=$work/out BUILD=0 BUILD_DIR=$work/build LIGER_PYTHON=$work/python LIGER_SITE=$work/site \
  bash "$SRC/bench/e2e_dpo.sh" 2 > "$work/sh.log" 2>&1
code=$?
if [[ $code -eq 0 ]] && grep -q "^liger-train reference: model: 8 steps, 30,000 tokens/s" "$work/out/summary_dpo.txt" &&
  grep -q "^liger-train reference: precomputed: 8 steps" "$work/out/summary_dpo.txt" &&
  grep -q "^TRL DPOTrainer + Liger-Kernel: skipped (no Liger-Kernel" "$work/out/summary_dpo.txt" &&
  grep -q "^hf_loop: HF DPO loop (plain PyTorch loss): .* tokens/s" "$work/out/summary_dpo.txt" &&
  grep -q "not the target's yardstick" "$work/out/e2e_dpo.md" &&
  grep -q "preference.reference=precomputed" "$work/train_args" &&
  grep -qF -- "--preset llama3_1b --pairs 8 --seq-len 1024 --steps 2 --warmup 5 --no-liger" "$work/loop_args"; then
  ok "e2e_dpo.sh: both liger-train runs, the loop, the table in \$OUT"
else
  fail "e2e_dpo.sh (exit $code): $(cat "$work/sh.log")"
fi
bash "$SRC/bench/e2e_dpo.sh" --bad > /dev/null 2>&1
code=$?
if [[ $code -eq 2 ]]; then ok "e2e_dpo.sh: usage"; else fail "e2e_dpo.sh --bad exit $code"; fi

finish
