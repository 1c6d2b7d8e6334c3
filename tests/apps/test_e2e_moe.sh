#!/usr/bin/env bash
# The GPU-free parts of bench/e2e_moe.sh, its table and its HF baseline:
#  a) hf_moe_liger.py's moe_h100 Mixtral (built on the meta device) has the
#     parameter count liger-train's --dry-run gives for configs/bench/moe_h100.yaml:
#     the baseline has the bench config's shapes;
#  b) e2e_moe_table.py on results made up here: the median after the warm-up,
#     the ratio to HF + Liger-Kernel, both targets met, both missed, not judged
#     after an out-of-memory, a missing run as a row;
#  c) e2e_moe.sh with a stand-in liger-train and a stand-in Python: every run's
#     line, HF + Liger-Kernel run again with checkpointing after an
#     out-of-memory, the table in $OUT, exit 0; no wheel: one line, exit 1;
#     SKIP_BASELINES=1 runs no HF.
# Usage: test_e2e_moe.sh LIGER_TRAIN SOURCE_DIR PYTHON
set -uo pipefail
TRAIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SRC=$(cd "$2" && pwd)
PY=$3
cd "$SRC" || exit 1  # the config's data paths are relative to the repository root
source "$SRC/tests/apps/check_harness.sh"
TABLE=$SRC/bench/e2e_moe_table.py

# a) the same model on both sides
dry=$("$TRAIN" --config configs/bench/moe_h100.yaml --dry-run 2>&1)
ours=$(sed -n 's/^parameters: \([0-9,]*\).*/\1/p' <<< "$dry" | tr -d ,)
hf=$("$PY" "$SRC/scripts/baselines/hf_moe_liger.py" --preset moe_h100 --count 2>&1 |
  "$PY" -c "import json, sys; print(json.load(sys.stdin)['parameters'])" 2>&1)
if [[ -n $ours && $ours == "$hf" ]]; then
  ok "moe_h100: $ours parameters in liger-train and in the HF Mixtral"
else
  fail "moe_h100 parameters: liger-train '$ours', HF '$hf'; dry run: $(tail -n 3 <<< "$dry")"
fi

# b) the table on made-up results: 5 slow warm-up steps, then 30-34k tokens/s (median 32000), 40 GiB
metrics() {  # metrics FILE: a liger-train metrics.jsonl
  mkdir -p "$(dirname "$1")"
  : > "$1"
  for tps in 1000 1000 1000 1000 1000 30000 34000 32000 31000 33000; do
    echo "{\"step\": 1, \"loss\": 10.5, \"tokens_per_s\": $tps, \"peak_mem_bytes\": 42949672960, \"mfu\": 0.3}" >> "$1"
  done
}
hf_json() {  # hf_json FILE TOKENS_PER_S PEAK_GIB OOM EXPERTS_CLASS AC
  cat > "$1" << EOF
{"baseline": "hf", "tokens_per_s": $2, "peak_mem_gib": $3, "mfu": 0.2, "steps_done": 10, "steps_timed": 5,
 "loss_first": 10.6, "loss_last": 10.4, "oom": $4, "experts": {"class": "$5", "implementation": "grouped_mm"},
 "config": {"activation_checkpointing": $6}}
EOF
}
metrics "$work/liger/metrics.jsonl"
hf_json "$work/fast.json" 20000 45.0 null LigerExperts false
hf_json "$work/slow.json" 25000 38.0 null LigerExperts false
hf_json "$work/oom.json" 0 79.1 '"step 1: CUDA out of memory"' LigerExperts false
hf_json "$work/hf.json" 10000 60.0 null MixtralExperts false
out=$("$PY" "$TABLE" table --liger "$work/liger/metrics.jsonl" --hf-liger "$work/fast.json" --hf "$work/hf.json" 2>&1)
if holds "| liger-train, \`precision: bf16\` | 32,000 | 40.00 | 30.0% | 10.5000 -> 10.5000 | 1.60x |" \
    "| HF transformers, bf16 (experts: MixtralExperts (grouped_mm)) | 10,000 | 60.00 | 20.0% |" \
    "= 1.60x tokens/s (target >= 1.5x): MET" \
    "memory: liger-train peak 40.00 GiB vs HF + Liger-Kernel 45.00 GiB (target <=): MET"; then
  ok "table: median after the warm-up, 1.60x, both targets met"
else
  fail "table, targets met: $out"
fi
out=$("$PY" "$TABLE" table --liger "$work/liger/metrics.jsonl" --hf-liger "$work/slow.json" 2>&1)
if holds "= 1.28x tokens/s (target >= 1.5x): MISSED" \
    "(target <=): MISSED"; then
  ok "table: both targets missed"
else
  fail "table, targets missed: $out"
fi
out=$("$PY" "$TABLE" table --liger "$work/liger/metrics.jsonl" --hf-liger "$work/oom.json" --hf "$work/none.json" 2>&1)
if holds "out of memory (step 1: CUDA out of memory)" \
    "no result (" \
    "targets: not judged (HF + Liger-Kernel ran out of memory)"; then
  ok "table: an out-of-memory and a missing run are rows, the targets not judged"
else
  fail "table, out of memory: $out"
fi

# c) e2e_moe.sh with stand-ins (no GPU, no build)
mkdir -p "$work/build/apps"
cat > "$work/build/apps/liger-train" << EOF
#!/usr/bin/env bash
echo "\$*" > "$work/train_args"
for a in "\$@"; do [[ \$a == checkpoint.output_dir=* ]] && dir=\${a#*=}; done
mkdir -p "\$dir" && cp "$work/liger/metrics.jsonl" "\$dir/metrics.jsonl"
echo "memory per GPU: measured peak 40.00 GiB"
EOF
cat > "$work/python" << EOF
#!/usr/bin/env bash
[[ \$1 == -m && \$2 == pip ]] && exit 0                 # the wheel's install
if [[ \$1 == scripts/baselines/hf_moe_liger.py ]]; then
  echo "\$*" >> "$work/hf_args"
  for a in "\$@"; do [[ \$prev == --json ]] && json=\$a; prev=\$a; done
  case " \$* " in
    *" --liger "*"--ac "*) cp "$work/fast.json" "\$json" ;;
    *" --liger "*) cp "$work/oom.json" "\$json" ;;
    *) cp "$work/hf.json" "\$json" ;;
  esac
  exit 0
fi
exec "$PY" "\$@"
EOF
chmod +x "$work/build/apps/liger-train" "$work/python"
touch "$work/liger_kernel-0.8.5-py3-none-any.whl"
run_e2e() {  # run_e2e OUT_DIR [VAR=VALUE ...]: e2e_moe.sh 10 "liger hf_liger hf" with the stand-ins
  local out=$1
  shift
  env OUT="$out" SKIP_BUILD=1 BUILD_DIR="$work/build" LIGER_PYTHON="$work/python" DEADLINE_S=0 \
    WHEEL="$work/liger_kernel-0.8.5-py3-none-any.whl" "$@" bash "$SRC/bench/e2e_moe.sh" 10 "liger hf_liger hf" 2>&1
}
log=$(run_e2e "$work/out")
code=$?
if [[ $code -eq 0 ]] && grep -q "^liger-train bf16: exit 0: 32,000 tokens/s, peak 40.00 GiB" <<< "$log" &&
  grep -q "^HF + Liger-Kernel bf16: exit 0: .*OUT OF MEMORY" <<< "$log" &&
  grep -q "^HF + Liger-Kernel bf16, gradient checkpointing: exit 0: 20,000 tokens/s" <<< "$log" &&
  grep -qF "= 1.60x tokens/s (target >= 1.5x): MET" "$work/out/e2e_moe.md" 2> /dev/null &&
  grep -qF -- "--config configs/bench/moe_h100.yaml --set training.steps=10" "$work/train_args" &&
  grep -qF -- "--preset moe_h100 --micro-batch 4 --seq-len 2048 --steps 10 --warmup 5 --liger --ac" "$work/hf_args" &&
  [[ $(grep -c . "$work/hf_args") -eq 3 ]] && grep -q "^HF bf16: exit 0: 10,000 tokens/s" "$work/out/summary.txt"; then
  ok "e2e_moe.sh: the runs, checkpointing after an out-of-memory, the table in \$OUT"
else
  fail "e2e_moe.sh (exit $code): $log"
fi
log=$(run_e2e "$work/out_nowheel" WHEEL="$work/none.whl")
code=$?
if [[ $code -eq 1 ]] && [[ $(grep -c "^HF + Liger-Kernel" <<< "$log") -eq 1 ]] &&
  grep -q "^HF + Liger-Kernel: skipped: no Liger-Kernel wheel at '.*none.whl'" <<< "$log"; then
  ok "e2e_moe.sh: no wheel is one line, exit 1"
else
  fail "e2e_moe.sh without a wheel (exit $code): $log"
fi
rm -f "$work/hf_args"
log=$(run_e2e "$work/out_skip" SKIP_BASELINES=1)
code=$?
if [[ $code -eq 0 && ! -e $work/hf_args ]] && grep -q 'PARTS="liger"' <<< "$log"; then
  ok "e2e_moe.sh: SKIP_BASELINES=1 runs liger-train alone"
else
  fail "e2e_moe.sh SKIP_BASELINES=1 (exit $code): $log"
fi

finish
