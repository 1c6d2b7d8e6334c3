#!/usr/bin/env bash
# The bf16 GPU convergence check (scripts/convergence.sh configs/tiny.yaml on
# cuda, --loss-rtol 2e-2 --param-noise 2) repeated over several seeds, to tell
# a kernel change that drifts from the reference from one unlucky trajectory:
# per seed the verdict, the largest per-step loss difference and the worst
# tensor's distance in units of the resplit reference's rounding noise; then
# the median and the largest ratio. Run it on the code before and after a
# numerics change and compare.
#
#   bash bench/convergence_seeds.sh [--set KEY=VAL ...]
#     e.g. SEEDS="1 2 3 4" STEPS=100 bash bench/convergence_seeds.sh --set training.cuda_graphs=true
# Arguments: more convergence.sh arguments for every run.
# Environment (all optional):
#   SEEDS="1 2 3 4"      training.seed values
#   STEPS=100            steps per run
#   OUT=out              convergence_seeds.txt (the table) and a log per seed
#   BUILD_DIR=build-gpu  built with bench/build.sh (its variables apply)
# The run folders are /tmp/convergence_seed_<seed>. Exit 1 when a seed's check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
SEEDS=${SEEDS:-"1 2 3 4"}
STEPS=${STEPS:-100}
BUILD_DIR=${BUILD_DIR:-build-gpu}
S="$OUT/convergence_seeds.txt"
TARGETS="liger-train liger-compare" bash bench/build.sh "$BUILD_DIR"
export LIGER_BUILD_DIR=$BUILD_DIR
: > "$S"
ratios=()
result=0
for seed in $SEEDS; do
  log="$OUT/convergence_seed_$seed.log"
  status=0
  bash scripts/convergence.sh configs/tiny.yaml --steps "$STEPS" --set training.device=cuda --set model.dtype=bf16 \
    --loss-rtol 2e-2 --param-noise 2 --noise-split 2 --set training.seed="$seed" "$@" --out "/tmp/convergence_seed_$seed" \
    > "$log" 2>&1 || status=$?
  [[ $status -eq 0 ]] || result=1
  # "... max relative loss difference 1.051e-02 at step 64 ..." and "... worst ratio to the noise 2.009 (...)"
  loss=$( { grep -o "max relative loss difference [0-9.e+-]*" "$log" || true; } | awk '{print $5}')
  ratio=$( { grep -o "worst ratio to the noise [0-9.e+-]*" "$log" || true; } | awk '{print $6}')
  echo "seed $seed: exit $status, max loss difference ${loss:-?}, worst ratio to the noise ${ratio:-?}" >> "$S"
  if [[ -n $ratio ]]; then ratios+=("$ratio"); fi
done
if [[ ${#ratios[@]} -gt 0 ]]; then
  printf '%s\n' "${ratios[@]}" | sort -g | awk '{v[NR] = $1} END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "worst ratio over %d seeds: median %.3f, largest %.3f\n", NR, m, v[NR]}' >> "$S"
fi
cat "$S"
exit "$result"
