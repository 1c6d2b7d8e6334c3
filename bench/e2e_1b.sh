#!/usr/bin/env bash
# On one H100 (device tool): end-to-end speed and memory of
# configs/bench/llama3_1b_h100.yaml (pure bf16 with stochastic rounding, and
# bf16-mixed) beside HF transformers (+ Liger-Kernel when its wheel is under
# wheels/) in the same call, then the 64K-context run (fused loss +
# activation checkpointing) and the same with both off (must end with one
# out-of-memory line). Results in $OUT/summary.txt, beside logs, JSON and
# power.csv: more files than the device tool brings back (8), so in a device
# call point OUT at a folder under /tmp and copy summary.txt into the call's $OUT.
#   bash bench/e2e_1b.sh [STEPS] [PARTS]
# PARTS: any of "liger mixed hf long" (default all; liger = pure bf16, mixed =
# bf16-mixed). PROFILE_STEPS=N profiles N steps of the liger runs (from step
# 10; Kineto trace + device time by kernel, summarised in summary.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
STEPS=${1:-40}
PARTS=${2:-"liger mixed hf long"}
PROFILE_STEPS=${PROFILE_STEPS:-0}
# The baselines run as many steps as liger-train (the same protocol: median after 5
# warm-up steps), so a machine that slows as it heats weighs on both alike.
HF_STEPS=${HF_STEPS:-$STEPS}
# POWER_SAMPLE=1 (default): nvidia-smi samples power and SM clock every 250 ms;
# summary.txt ends with the busy stretches (bench/power_stretches.py).
POWER_SAMPLE=${POWER_SAMPLE:-1}
BUILD=build-gpu
if [[ $POWER_SAMPLE == 1 ]]; then
  nvidia-smi --query-gpu=timestamp,power.draw,clocks.sm,clocks_throttle_reasons.active --format=csv,noheader \
    -lms 250 > "$OUT/power.csv" 2>&1 &
  sampler=$!
  trap 'kill "$sampler" 2> /dev/null' EXIT
fi
export PATH=/usr/local/cuda/bin:$PATH
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/summary.txt"
TORCH_CMAKE=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" -DBUILD_TESTING=OFF \
  -DLIGER_CUDA=ON -DLIGER_PCRE2=OFF -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" > "$OUT/configure.log" 2>&1
ninja -C "$BUILD" -j16 liger-train > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }

summary() {  # metrics.jsonl -> median tokens/s after 5 warm-up steps, peak GiB, mfu
  python3 - "$1" <<'PY'
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
  python3 - "$1" "$2" <<'PY'
import json, re, sys
path, tokens = sys.argv[1], int(sys.argv[2])
if path.endswith(".jsonl"):
    rates = [json.loads(l)["tokens_per_s"] for l in open(path)]
else:
    rates = [tokens / float(m.group(1)) * 1e3 for m in re.finditer(r"^step \d+: loss \S+ (\d+) ms", open(path).read(), re.M)]
print("  per step, k tokens/s:", " ".join(f"{r / 1e3:.1f}" for r in rates))
PY
}
common=(--config configs/bench/llama3_1b_h100.yaml --set training.steps="$STEPS" --set logging.every=5 --set logging.progress_bar=off
        --set logging.profile_steps="$PROFILE_STEPS" --set logging.profile_first_step=10 ${EXTRA:-})
for precision in bf16 bf16-mixed; do
  part=liger
  [[ $precision == bf16-mixed ]] && part=mixed
  [[ $PARTS == *$part* ]] || continue
  "$BUILD/apps/liger-train" "${common[@]}" --set training.precision=$precision \
    --set checkpoint.output_dir="$OUT/liger_$precision" > "$OUT/liger_$precision.log" 2>&1
  echo "liger-train $precision: exit $? $(summary "$OUT/liger_$precision/metrics.jsonl")" >> "$OUT/summary.txt"
  series "$OUT/liger_$precision/metrics.jsonl" 8192 >> "$OUT/summary.txt"
  grep -E "memory per GPU" "$OUT/liger_$precision.log" | cut -c1-300 >> "$OUT/summary.txt"
  awk '/profile of steps/ {on = 1; print; next} on && /^\[/ {on = 0} on' "$OUT/liger_$precision.log" >> "$OUT/summary.txt"
done
cd scripts/baselines
for precision in bf16 bf16-mixed; do
  [[ $PARTS == *hf* ]] || break
  python3 hf_llama_single.py --preset llama3_1b --micro-batch 4 --seq-len 2048 --steps "$HF_STEPS" --warmup 5 \
    --precision $precision --json "$OUT/hf_$precision.json" > "$OUT/hf_$precision.log" 2>&1
  echo "HF $precision: $(cat "$OUT/hf_$precision.json" | tr -d '\n')" >> "$OUT/summary.txt"
  series "$OUT/hf_$precision.log" 8192 >> "$OUT/summary.txt"
done
if [[ $PARTS == *hf* ]] && ls ../../wheels/liger_kernel-*.whl > /dev/null 2>&1; then
  pip install --no-deps --target /tmp/liger ../../wheels/liger_kernel-*.whl > /dev/null 2>&1
  PYTHONPATH=/tmp/liger python3 hf_llama_single.py --preset llama3_1b --micro-batch 4 --seq-len 2048 --steps "$HF_STEPS" \
    --warmup 5 --precision bf16 --liger --json "$OUT/hf_liger_bf16.json" > "$OUT/hf_liger.log" 2>&1
  echo "HF+Liger bf16: $(cat "$OUT/hf_liger_bf16.json" | tr -d '\n')" >> "$OUT/summary.txt"
  series "$OUT/hf_liger.log" 8192 >> "$OUT/summary.txt"
fi
cd ../..
if [[ $PARTS == *long* ]]; then
long=(--config configs/bench/llama3_1b_h100.yaml --set data.seq_len=65536 --set training.micro_batch_size=1
      --set training.steps=4 --set logging.every=1 --set logging.progress_bar=off --set training.precision=bf16-mixed)
"$BUILD/apps/liger-train" "${long[@]}" --set training.activation_checkpointing=full \
  --set checkpoint.output_dir="$OUT/long" > "$OUT/long.log" 2>&1
echo "64K, fused loss + checkpointing: exit $? $(summary "$OUT/long/metrics.jsonl")" >> "$OUT/summary.txt"
"$BUILD/apps/liger-train" "${long[@]}" --set training.activation_checkpointing=none \
  --set kernels.fused_linear_cross_entropy=false --set checkpoint.output_dir="$OUT/long_off" > "$OUT/long_off.log" 2>&1
echo "64K, both off: exit $? -- $(tail -1 "$OUT/long_off.log" | cut -c1-400)" >> "$OUT/summary.txt"
fi
if [[ $POWER_SAMPLE == 1 ]]; then
  kill "$sampler"; wait "$sampler" 2> /dev/null
  echo "busy stretches (start, length, median power and SM clock, samples at the power cap):" >> "$OUT/summary.txt"
  python3 bench/power_stretches.py "$OUT/power.csv" >> "$OUT/summary.txt"
fi
cat "$OUT/summary.txt"
