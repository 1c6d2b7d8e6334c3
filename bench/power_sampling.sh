# Power and SM-clock sampling beside a GPU benchmark, sourced by bench/e2e_*.sh:
#   source bench/power_sampling.sh
#   power_sampling_start "$OUT"              # nvidia-smi every 250 ms into $OUT/power.csv
#   ... the runs ...
#   power_sampling_report "$OUT" "$SUMMARY"  # stop; busy stretches appended to SUMMARY
# Both do nothing when POWER_SAMPLE is 0.

power_sampling_start() {  # power_sampling_start OUT
  [[ ${POWER_SAMPLE:-1} == 1 ]] || return 0
  nvidia-smi --query-gpu=timestamp,power.draw,clocks.sm,clocks_throttle_reasons.active --format=csv,noheader \
    -lms 250 > "$1/power.csv" 2>&1 &
  power_sampler=$!
  trap 'kill "$power_sampler" 2> /dev/null || true' EXIT
}

power_sampling_report() {  # power_sampling_report OUT SUMMARY
  [[ ${POWER_SAMPLE:-1} == 1 && -n ${power_sampler:-} ]] || return 0
  kill "$power_sampler" 2> /dev/null || true
  wait "$power_sampler" 2> /dev/null || true
  echo "busy stretches (start, length, median power and SM clock, samples at the power cap):" >> "$2"
  python3 bench/power_stretches.py "$1/power.csv" >> "$2" 2>&1 || true
}
