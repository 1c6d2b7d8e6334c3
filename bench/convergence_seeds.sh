#!/usr/bin/env bash
# The bf16 GPU convergence check (scripts/convergence.sh with --param-noise)
# repeated over several seeds, to tell a kernel change that drifts from the
# reference from one unlucky trajectory: per seed the verdict, the largest
# per-step loss difference and the worst tensor's distance in units of the
# resplit reference's rounding noise; then the median and the largest ratio.
# Run it on the code before and after a numerics change and compare.
#   SEEDS="1 2 3 4" STEPS=100 bash bench/convergence_seeds.sh [--set KEY=VAL ...]
# (extra arguments go to every convergence.sh run; LIGER_BUILD_DIR as there)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
SEEDS=${SEEDS:-"1 2 3 4"}
STEPS=${STEPS:-100}
S="$OUT/convergence_seeds.txt"
: > "$S"
ratios=()
for seed in $SEEDS; do
  log="$OUT/convergence_seed_$seed.log"
  bash scripts/convergence.sh configs/tiny.yaml --steps "$STEPS" --set training.device=cuda --set model.dtype=bf16 \
    --loss-rtol 2e-2 --param-noise 2 --set training.seed="$seed" "$@" --out "/tmp/convergence_seed_$seed" \
    > "$log" 2>&1
  status=$?
  # "... max relative loss difference 1.051e-02 at step 64 ..." and "... worst ratio to the noise 2.009 (...)"
  loss=$(grep -o "max relative loss difference [0-9.e+-]*" "$log" | awk '{print $5}')
  ratio=$(grep -o "worst ratio to the noise [0-9.e+-]*" "$log" | awk '{print $6}')
  echo "seed $seed: exit $status, max loss difference ${loss:-?}, worst ratio to the noise ${ratio:-?}" >> "$S"
  [[ -n $ratio ]] && ratios+=("$ratio")
done
if [[ ${#ratios[@]} -gt 0 ]]; then
  printf '%s\n' "${ratios[@]}" | sort -g | awk '{v[NR] = $1} END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "worst ratio over %d seeds: median %.3f, largest %.3f\n", NR, m, v[NR]}' >> "$S"
fi
cat "$S"
