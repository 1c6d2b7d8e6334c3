#!/usr/bin/env bash
# bench/power_sampling.sh without a GPU: a stand-in nvidia-smi on PATH prints
# samples (idle, then a busy stretch at the power cap, then idle) until it is
# stopped; power_sampling_start writes them to OUT/power.csv and
# power_sampling_report stops the sampler and appends the busy stretch
# (power, SM clock, samples at the cap) to the summary. With POWER_SAMPLE=0
# neither writes anything. Usage: test_power_sampling.sh SOURCE_DIR
set -uo pipefail
SRC=$(cd "$1" && pwd)
cd "$SRC" || exit 1
source "$SRC/tests/apps/check_harness.sh"

mkdir -p "$work/bin"
cat > "$work/bin/nvidia-smi" <<'SMI'
#!/usr/bin/env bash
# -lms N: one sample per N ms until killed: 2 idle, 8 busy at the cap, then idle.
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
finish
