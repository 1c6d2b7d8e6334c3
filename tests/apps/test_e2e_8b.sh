#!/usr/bin/env bash
# bench/e2e_8b.sh and its power sampling without a GPU:
#  a) bench/power_sampling.sh (shared with e2e_1b.sh) with a stand-in
#     nvidia-smi on PATH that prints samples (idle, a busy stretch at the power
#     cap, idle) until stopped: power_sampling_start writes OUT/power.csv,
#     power_sampling_report stops the sampler and appends the busy stretch
#     (power, SM clock, samples at the cap) to the summary; POWER_SAMPLE=0
#     writes nothing;
#  b) e2e_8b.sh "lora" with BUILD=0 and a stand-in liger-train: one line per
#     run with the median tokens/s after the warm-up rows, the busy stretch at
#     the end; BUILD=0 without a liger-train: exit 1, naming the path.
# Usage: test_e2e_8b.sh SOURCE_DIR
set -uo pipefail
SRC=$(cd "$1" && pwd)
cd "$SRC" || exit 1
source "$SRC/tests/apps/check_harness.sh"

mkdir -p "$work/bin"
cat > "$work/bin/nvidia-smi" <<'SMI'
#!/usr/bin/env bash
# -lms N: one sample per N ms until killed: 2 idle, 8 busy at the cap, then idle.
# Without -lms (the GPU's name): one line.
[[ " $* " == *" -lms "* ]] || { echo "NVIDIA H100 80GB HBM3, 81559 MiB"; exit 0; }
i=0
while true; do
  if ((i >= 2 && i < 10)); then
    echo "2026/12/08 01:00:0$((i % 10)).000, 690.12 W, 1605 MHz, 0x0000000000000004"
  else
    echo "2026/12/08 01:00:0$((i % 10)).000, 85.40 W, 1980 MHz, 0x0000000000000000"
  fi
  i=$((i + 1))
  sleep 0.02
done
SMI
chmod +x "$work/bin/nvidia-smi"

# run_sampling OUT: start, let it sample, report into OUT/summary.txt (in a
# subshell: the helper sets its own EXIT trap)
run_sampling() {
  (
    export PATH="$work/bin:$PATH"
    source bench/power_sampling.sh
    power_sampling_start "$1"
    sleep 1
    power_sampling_report "$1" "$1/summary.txt"
    # still inside: the helper's EXIT trap has not run yet
    [[ -e $1/power.csv ]] || exit 0
    sleep 0.2
    wc -l < "$1/power.csv" > "$1/samples_after_report"
    sleep 0.3
    wc -l < "$1/power.csv" > "$1/samples_later"
  )
}

mkdir -p "$work/on"
run_sampling "$work/on"
out=$(cat "$work/on/summary.txt" 2> /dev/null)
if holds "busy stretches" "power 690 W" "sm 1605 MHz" "power-capped 8/8" && [[ $(grep -c "power-capped" <<< "$out") -eq 1 ]]; then
  ok "one busy stretch at the cap in the summary: $(grep power-capped <<< "$out")"
else
  fail "summary: '$out'; power.csv: $(head -n 3 "$work/on/power.csv" 2> /dev/null)"
fi
if [[ -s $work/on/samples_after_report ]] && cmp -s "$work/on/samples_after_report" "$work/on/samples_later"; then
  ok "the report stops the sampler ($(cat "$work/on/samples_after_report") samples)"
else
  fail "power.csv still grows after the report: $(cat "$work/on/samples_after_report" "$work/on/samples_later" 2> /dev/null | tr '\n' ' ')"
fi

mkdir -p "$work/off"
POWER_SAMPLE=0 run_sampling "$work/off"
if [[ ! -e $work/off/power.csv && ! -e $work/off/summary.txt ]]; then
  ok "POWER_SAMPLE=0: no sampling, no summary lines"
else
  fail "POWER_SAMPLE=0 still wrote: $(ls "$work/off")"
fi
# b) the driver: BUILD=0 runs the liger-train in BUILD_DIR/apps as it is
mkdir -p "$work/build/apps"
cat > "$work/build/apps/liger-train" <<'TRAIN'
#!/usr/bin/env bash
# 8 metrics rows (tokens/s 15001..15008) into checkpoint.output_dir
out=""
for a in "$@"; do case $a in checkpoint.output_dir=*) out=${a#*=} ;; esac; done
mkdir -p "$out"
for i in 1 2 3 4 5 6 7 8; do
  echo "{\"step\": $i, \"tokens_per_s\": $((15000 + i)), \"peak_mem_bytes\": 31590000000, \"mfu\": 0.58, \"loss\": 12.5}"
done > "$out/metrics.jsonl"
TRAIN
chmod +x "$work/build/apps/liger-train"
out=$(PATH="$work/bin:$PATH" BUILD=0 BUILD_DIR="$work/build" OUT="$work/e2e" bash bench/e2e_8b.sh 8 lora 2>&1)
code=$?
if [[ $code -eq 0 ]] && holds 'liger-train LoRA 4096, GLU recompute: exit 0 {"steps": 8, "tokens_per_s": 15007' \
  "liger-train LoRA 4096, no recompute: exit 0" "liger-train LoRA 8192, GLU recompute: exit 0" \
  "busy stretches" "power 690 W" && ! grep -q "BUILD FAILED\|CONFIGURE" <<< "$out"; then
  ok "e2e_8b.sh lora with BUILD=0: three runs, the median after 5 warm-up rows, the power stretch"
else
  fail "e2e_8b.sh lora with BUILD=0 (exit $code): $out"
fi
out=$(PATH="$work/bin:$PATH" BUILD=0 BUILD_DIR="$work/nothing" OUT="$work/e2e_none" bash bench/e2e_8b.sh 8 lora 2>&1)
code=$?
if [[ $code -eq 1 ]] && holds "BUILD=0: no $work/nothing/apps/liger-train"; then
  ok "BUILD=0 without a liger-train: exit 1, the path named"
else
  fail "BUILD=0 without a liger-train (exit $code): $out"
fi
finish
