#!/usr/bin/env bash
# On one GPU (device tool): kernels.tuned_gemm on vs off on the 1B bench
# (configs/bench/llama3_1b_h100.yaml, pure bf16), interleaved twice so a
# machine's drift shows, beside HF transformers bf16 in the same call, with
# nvidia-smi sampling power and clocks (is the step at the power cap?).
# Results in $OUT/ab.txt (tokens/s, peak, the tuned choices) and $OUT/power.txt.
#   bash scripts/device/tuned_gemm_ab.sh [STEPS]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
STEPS=${1:-40}
nvidia-smi --query-gpu=timestamp,power.draw,clocks.sm,clocks_throttle_reasons.active --format=csv,noheader \
  -lms 250 > /tmp/tuned_ab_power.csv 2>&1 &
sampler=$!
run() {  # run NAME EXTRA...
  local name=$1; shift
  OUT=/tmp/tuned_ab_$name EXTRA="$*" POWER_SAMPLE=0 bash scripts/device/e2e_1b.sh "$STEPS" liger > /dev/null 2>&1
  echo "$name: $(grep tokens_per_s /tmp/tuned_ab_$name/summary.txt)" >> "$OUT/ab.txt"
}
: > "$OUT/ab.txt"
run off1 --set kernels.tuned_gemm=false
run on1 --set kernels.tuned_gemm=true
run off2 --set kernels.tuned_gemm=false
run on2 --set kernels.tuned_gemm=true
grep -h "gemm [0-9]" /tmp/tuned_ab_on1/liger_bf16.log | cut -c1-200 >> "$OUT/ab.txt"
(cd scripts/baselines && python3 hf_llama_single.py --preset llama3_1b --micro-batch 4 --seq-len 2048 --steps "$STEPS" \
  --warmup 5 --precision bf16 --json /tmp/tuned_ab_hf.json > /dev/null 2>&1)
echo "HF bf16: $(tr -d '\n' < /tmp/tuned_ab_hf.json | cut -c1-300)" >> "$OUT/ab.txt"
kill "$sampler"
python3 scripts/device/power_stretches.py /tmp/tuned_ab_power.csv > "$OUT/power.txt"
cat "$OUT/ab.txt" "$OUT/power.txt"
