#!/usr/bin/env bash
# End-to-end speed and memory on one GPU: configs/bench/llama3_1b_h100.yaml
# (Llama-3.2-1B shapes, micro-batch 4 x 2048) with liger-train in pure bf16
# (stochastic rounding) and bf16-mixed, beside the HF transformers baseline
# (scripts/baselines/hf_llama_single.py, bf16 and bf16-mixed) and HF +
# Liger-Kernel when its wheel is under wheels/, then the 64K-context run
# (bf16-mixed, fused loss + full activation checkpointing) and the same with
# both off (expected to end with one out-of-memory line). Every run takes STEPS
# steps and reports the median tokens/s after 5 warm-up steps, peak memory and
# MFU; nvidia-smi samples power and SM clock meanwhile.
#
#   bash bench/e2e_1b.sh [STEPS [PARTS]]     # STEPS default 40
#     e.g. bash bench/e2e_1b.sh 40
#          POWER_SAMPLE=0 bash bench/e2e_1b.sh 40 "liger hf"
#          OUT=/tmp/e2e bash bench/e2e_1b.sh 40 && cp /tmp/e2e/summary.txt out/
#
# PARTS: any of "liger mixed hf long" (default all): liger = liger-train bf16,
#   mixed = liger-train bf16-mixed, hf = HF (and HF + Liger-Kernel), long = 64K.
# Environment (all optional):
#   OUT=out              results (summary.txt, the logs, JSON, run folders, power.csv)
#   BUILD_DIR=build-gpu  built with bench/build.sh (its variables apply)
#   LIGER_PYTHON=python3 the Python with torch and transformers for the HF runs
#   HF_STEPS=STEPS       steps of the HF runs
#   PROFILE_STEPS=0      N > 0: profile N steps of the liger-train runs from step 10
#                        (Kineto trace + device time by kernel, in summary.txt)
#   POWER_SAMPLE=1       0: no nvidia-smi sampling (power.csv, busy stretches by
#                        bench/power_stretches.py at the end of summary.txt)
#   EXTRA="..."          more liger-train arguments for the liger and mixed runs,
#                        e.g. "--set training.cuda_graphs=false"
# Carried files: wheels/liger_kernel-*.whl (e.g. `pip download --no-deps
#   liger-kernel==0.8.5 -d wheels`) adds the HF + Liger-Kernel run.
# Output: $OUT/summary.txt holds every figure; the logs, JSON and run folders
# beside it are many files: where only a few can be kept or copied back, point
# OUT at a scratch folder (e.g. /tmp/e2e) and copy summary.txt. Exit 1 when a
# liger-train or HF run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STEPS=${1:-40}
PARTS=${2:-"liger mixed hf long"}
has() { [[ " $PARTS " == *" $1 "* ]]; }
PROFILE_STEPS=${PROFILE_STEPS:-0}
# The baselines run as many steps as liger-train (the same protocol: median after 5
# warm-up steps), so a machine that slows as it heats weighs on both alike.
HF_STEPS=${HF_STEPS:-$STEPS}
POWER_SAMPLE=${POWER_SAMPLE:-1}
BUILD_DIR=${BUILD_DIR:-build-gpu}
LIGER_PYTHON=${LIGER_PYTHON:-python3}
read -r -a extra <<< "${EXTRA:-}"
S=$OUT/summary.txt
status=0

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$S"
echo "commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC'), STEPS=$STEPS, PARTS=\"$PARTS\"${EXTRA:+, EXTRA=\"$EXTRA\"}" >> "$S"
TARGETS=liger-train bash bench/build.sh "$BUILD_DIR" >> "$S" 2>&1 || { cat "$S"; exit 1; }
source bench/power_sampling.sh
power_sampling_start "$OUT"

summary() {  # metrics.jsonl -> median tokens/s after 5 warm-up steps, peak GiB, mfu
  python3 - "$1" <<'PY' 2> /dev/null || echo "(no metrics: $1)"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steady = rows[5:] or rows
print(json.dumps({"steps": len(rows), "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in steady)),
                  "peak_gib": round(max(r["peak_mem_bytes"] for r in rows) / 2**30, 2),
                  "mfu": round(statistics.median(r.get("mfu", 0) for r in steady), 4),
                  "loss_first": round(rows[0]["loss"], 4), "loss_last": round(rows[-1]["loss"], 4)}))
PY
}
series() {  # per-step tokens/s in thousands: liger metrics.jsonl or an HF log ("step N: loss X T ms")
  python3 - "$1" "$2" <<'PY' 2> /dev/null || true
import json, re, sys
path, tokens = sys.argv[1], int(sys.argv[2])
if path.endswith(".jsonl"):
    rates = [json.loads(l)["tokens_per_s"] for l in open(path)]
else:
    rates = [tokens / float(m.group(1)) * 1e3 for m in re.finditer(r"^step \d+: loss \S+ (\d+) ms", open(path).read(), re.M)]
print("  per step, k tokens/s:", " ".join(f"{r / 1e3:.1f}" for r in rates))
PY
}

# --- liger-train: bf16 (liger) and bf16-mixed (mixed) ----------------------------
common=(--config configs/bench/llama3_1b_h100.yaml --set training.steps="$STEPS" --set logging.every=5
        --set logging.progress_bar=off --set logging.profile_steps="$PROFILE_STEPS"
        --set logging.profile_first_step=10 "${extra[@]}")
for precision in bf16 bf16-mixed; do
  part=liger
  [[ $precision == bf16-mixed ]] && part=mixed
  has $part || continue
  code=0
  "$BUILD_DIR/apps/liger-train" "${common[@]}" --set training.precision=$precision \
    --set checkpoint.output_dir="$OUT/liger_$precision" > "$OUT/liger_$precision.log" 2>&1 || code=$?
  [[ $code -eq 0 ]] || status=1
  {
    echo "liger-train $precision: exit $code $(summary "$OUT/liger_$precision/metrics.jsonl")"
    series "$OUT/liger_$precision/metrics.jsonl" 8192
    { grep -E "memory per GPU" "$OUT/liger_$precision.log" || true; } | cut -c1-300
    awk '/profile of steps/ {on = 1; print; next} on && /^\[/ {on = 0} on' "$OUT/liger_$precision.log"
  } >> "$S"
done

# --- HF transformers (and + Liger-Kernel) --------------------------------------------
hf() {  # hf LABEL NAME ARGS...: one hf_llama_single.py run, NAME.json and NAME.log in $OUT
  local label=$1 name=$2 code=0
  shift 2
  "$LIGER_PYTHON" scripts/baselines/hf_llama_single.py --preset llama3_1b --micro-batch 4 --seq-len 2048 \
    --steps "$HF_STEPS" --warmup 5 "$@" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1 || code=$?
  [[ $code -eq 0 ]] || status=1
  echo "$label: $(tr -d '\n' 2> /dev/null < "$OUT/$name.json" || echo "exit $code, no JSON: $(tail -n 1 "$OUT/$name.log")")" >> "$S"
  series "$OUT/$name.log" 8192 >> "$S"
}
if has hf; then
  hf "HF bf16" hf_bf16 --precision bf16
  hf "HF bf16-mixed" hf_bf16-mixed --precision bf16-mixed
  wheels=(wheels/liger_kernel-*.whl)
  if [[ -f ${wheels[0]} ]]; then
    "$LIGER_PYTHON" -m pip install -q --no-deps --target /tmp/liger "${wheels[@]}" > /dev/null 2>&1 ||
      echo "pip install ${wheels[*]} failed" >> "$S"
    PYTHONPATH=/tmp/liger${PYTHONPATH:+:$PYTHONPATH} hf "HF+Liger bf16" hf_liger_bf16 --precision bf16 --liger
  fi
fi

# --- 64K context -----------------------------------------------------------------
if has long; then
  long=(--config configs/bench/llama3_1b_h100.yaml --set data.seq_len=65536 --set training.micro_batch_size=1
        --set training.steps=4 --set logging.every=1 --set logging.progress_bar=off --set training.precision=bf16-mixed)
  code=0
  "$BUILD_DIR/apps/liger-train" "${long[@]}" --set training.activation_checkpointing=full \
    --set checkpoint.output_dir="$OUT/long" > "$OUT/long.log" 2>&1 || code=$?
  [[ $code -eq 0 ]] || status=1
  echo "64K, fused loss + checkpointing: exit $code $(summary "$OUT/long/metrics.jsonl")" >> "$S"
  code=0
  "$BUILD_DIR/apps/liger-train" "${long[@]}" --set training.activation_checkpointing=none \
    --set kernels.fused_linear_cross_entropy=false --set checkpoint.output_dir="$OUT/long_off" > "$OUT/long_off.log" 2>&1 || code=$?
  echo "64K, both off: exit $code -- $(tail -n 1 "$OUT/long_off.log" | cut -c1-400)" >> "$S"
fi

power_sampling_report "$OUT" "$S"
cat "$S"
exit "$status"
