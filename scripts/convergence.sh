#!/usr/bin/env bash
# Convergence run: trains CONFIG with the same seed and data, fused kernels all
# on ("fused") vs all off ("baseline", the reference), and the reference a third
# time with only its rounding changed ("baseline_resplit": the same global
# batch in S times as many micro-batches; exact gradient accumulation makes it
# the same math in another summation order). Then it compares the loss of
# every step and the final parameters, and plots the curves, their relative
# difference and the rounding-noise band (PNG, gnuplot).
#
#   scripts/convergence.sh CONFIG [--steps N] [--out DIR]
#                          [--loss-noise K|off] [--loss-rtol X]
#                          [--param-noise R|off] [--param-rtol Y] [--noise-split S]
#                          [--set KEY=VAL ...]         (every run)
#                          [--set-fused KEY=VAL ...]   (the fused run only: a perturbation check)
#
# Two correct runs agree to ~1e-7 at first, then separate chaotically: in
# fp32 on configs/tiny.yaml the per-step loss difference passes 1e-4 near step
# 100 and reaches a few 1e-3, while the curves stay on top of each other. So
# both checks measure the fused run against the resplit run's distance from
# the reference, with a fixed floor that decides short runs:
#   losses      every step: |fused - ref| / ref <= max(X, K x band), band =
#               the running maximum of |resplit - ref| / ref up to 10 steps
#               ahead. K = 3, X = 1e-4 (fp32; use 2e-2 in bf16).
#               liger-compare --losses; docs/convergence.md says how K was chosen.
#   parameters  every tensor: ||fused - ref|| <= R x ||resplit - ref||, or
#               <= Y x ||ref||. R = 2, Y = 1e-3. liger-compare --noise.
# "off" drops the noise from a check (the fixed X or Y alone); with both off
# no resplit run is made. S = 4: training.micro_batch_size must be a multiple
# of S. Exit 0 when both checks hold, 1 on divergence, 2 when a run fails or
# the arguments are wrong.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${LIGER_BUILD_DIR:-$ROOT/build}/apps
CONFIG=""
STEPS=""
OUT=""
LOSS_RTOL=1e-4
LOSS_NOISE=3
PARAM_RTOL=1e-3
PARAM_NOISE=2
NOISE_SPLIT=4
common=()
fused_only=()
while [ $# -gt 0 ]; do
  case $1 in
    --steps) STEPS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --loss-rtol) LOSS_RTOL=$2; shift 2 ;;
    --loss-noise) LOSS_NOISE=$2; shift 2 ;;
    --param-rtol) PARAM_RTOL=$2; shift 2 ;;
    --param-noise) PARAM_NOISE=$2; shift 2 ;;
    --noise-split) NOISE_SPLIT=$2; shift 2 ;;
    --set) common+=(--set "$2"); shift 2 ;;
    --set-fused) fused_only+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n 2,30p "$0"; exit 0 ;;
    *) if [ -z "$CONFIG" ]; then CONFIG=$1; shift; else echo "convergence.sh: unexpected argument '$1'" >&2; exit 2; fi ;;
  esac
done
for value in "--loss-noise $LOSS_NOISE" "--param-noise $PARAM_NOISE"; do
  [[ ${value#* } =~ ^(off|[0-9.]+([eE][-+]?[0-9]+)?)$ ]] ||
    { echo "convergence.sh: $value: give a number (the multiple of the noise) or off" >&2; exit 2; }
done
[[ $NOISE_SPLIT =~ ^[0-9]+$ ]] && [ "$NOISE_SPLIT" -ge 2 ] ||
  { echo "convergence.sh: --noise-split $NOISE_SPLIT: give a whole number of 2 or more" >&2; exit 2; }
[ -n "$CONFIG" ] || { echo "usage: scripts/convergence.sh CONFIG [--steps N] [--out DIR] ..." >&2; exit 2; }
[ -f "$CONFIG" ] || { echo "convergence.sh: config '$CONFIG' not found" >&2; exit 2; }
[ -x "$BIN/liger-train" ] || { echo "convergence.sh: $BIN/liger-train not built (run scripts/setup.sh)" >&2; exit 2; }
OUT=${OUT:-runs/convergence/$(basename "$CONFIG" .yaml)}
mkdir -p "$OUT"
[ -n "$STEPS" ] && common+=(--set "training.steps=$STEPS")
common+=(--set checkpoint.every=0 --set checkpoint.save_final=true --set checkpoint.keep_last=1
         --set checkpoint.resume=none --set logging.sample_tokens=0 --set logging.progress_bar=off)

# kernels.moe only matters to MoE models (Mixtral): the reference is HF's loop over experts.
on=(--set kernels.rms_norm=true --set kernels.layer_norm=true --set kernels.rope=true
    --set kernels.swiglu=true --set kernels.geglu=true --set kernels.cross_entropy=false
    --set kernels.fused_linear_cross_entropy=true --set kernels.moe=true)
off=(--set kernels.rms_norm=false --set kernels.layer_norm=false --set kernels.rope=false
     --set kernels.swiglu=false --set kernels.geglu=false --set kernels.cross_entropy=false
     --set kernels.fused_linear_cross_entropy=false --set kernels.tuned_gemm=false --set kernels.moe=false)

run() {  # run NAME ARGS...
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  echo "[convergence] training $name"
  "$BIN/liger-train" --config "$CONFIG" "${common[@]}" "$@" --set checkpoint.output_dir="$OUT/$name" \
    > "$OUT/$name.log" 2>&1 || { echo "[convergence] the $name run failed:"; tail -5 "$OUT/$name.log"; exit 2; }
}
run baseline "${off[@]}"
noise_run=()
if [ "$LOSS_NOISE" != off ] || [ "$PARAM_NOISE" != off ]; then
  # The reference again, the same global batch in NOISE_SPLIT times as many micro-batches.
  resolved="$(ls -d "$OUT"/baseline/step-* | tail -1)/config.yaml"
  mb=$(awk '$1 == "micro_batch_size:" {print $2; exit}' "$resolved")
  ga=$(awk '$1 == "gradient_accumulation_steps:" {print $2; exit}' "$resolved")
  if [ -z "$mb" ] || [ -z "$ga" ] || [ $((mb % NOISE_SPLIT)) -ne 0 ]; then
    echo "convergence.sh: the rounding-noise run splits training.micro_batch_size into $NOISE_SPLIT," \
         "but $resolved has micro_batch_size '${mb}': set a multiple of $NOISE_SPLIT" \
         "(--set training.micro_batch_size=N), a --noise-split that divides it, or" \
         "--loss-noise off --param-noise off" >&2
    exit 2
  fi
  noise_run=(--set training.micro_batch_size=$((mb / NOISE_SPLIT))
             --set training.gradient_accumulation_steps=$((ga * NOISE_SPLIT)))
fi
run fused "${on[@]}" "${fused_only[@]}"
[ ${#noise_run[@]} -eq 0 ] || run baseline_resplit "${off[@]}" "${noise_run[@]}"

# Per-step loss comparison -> the verdict, a table for gnuplot and a summary.
loss_check=(--rtol "$LOSS_RTOL")
if [ "$LOSS_NOISE" != off ]; then
  loss_check+=(--noise "$OUT/baseline_resplit/metrics.jsonl" --noise-ratio "$LOSS_NOISE")
fi
set +e
"$BIN/liger-compare" --losses "$OUT/fused/metrics.jsonl" "$OUT/baseline/metrics.jsonl" "${loss_check[@]}" \
  --table "$OUT/losses.tsv" --summary "$OUT/summary.json" 2>&1 | sed 's/^/[convergence] losses: /'
loss_ok=${PIPESTATUS[0]}
set -e
[ "$loss_ok" -le 1 ] || exit 2

if command -v gnuplot > /dev/null; then
  # losses.tsv: step, fused, reference, resplit, then the relative differences
  # fused vs reference and resplit vs reference (the noise), the band, the limit.
  # The losses are logged in fp32: differences below ~1e-7 show as 1e-8.
  if [ "$LOSS_NOISE" != off ]; then
    noise_curves=", '$OUT/losses.tsv' using 1:(\$6 > 1e-8 ? \$6 : 1e-8) with lines lc rgb 'gray60' title 'resplit vs reference (rounding noise)', \
     '$OUT/losses.tsv' using 1:7 with lines lw 2 lc rgb 'gray20' title 'noise band', \
     '$OUT/losses.tsv' using 1:8 with lines dt 3 lw 2 lc rgb 'red' title 'limit: max($LOSS_RTOL, $LOSS_NOISE x band)'"
  else
    noise_curves=", $LOSS_RTOL dt 3 lw 2 lc rgb 'red' title 'tolerance'"
  fi
  gnuplot <<GP || echo "[convergence] gnuplot failed; the table is $OUT/losses.tsv"
set terminal pngcairo size 1000,800
set output "$OUT/convergence.png"
set multiplot layout 2,1 title "$(basename "$CONFIG"): fused kernels vs reference"
set ylabel "loss"; set grid
plot "$OUT/losses.tsv" using 1:3 with lines lw 2 title "reference (kernels off)", \
     "$OUT/losses.tsv" using 1:2 with lines lw 1 dt 2 title "fused (kernels on)"
set ylabel "relative loss difference"; set xlabel "step"; set logscale y; set yrange [1e-8:*]
set format y "%.0e"; set key below maxrows 2
plot "$OUT/losses.tsv" using 1:(\$5 > 1e-8 ? \$5 : 1e-8) with lines lc rgb 'blue' title "|fused - reference| / reference"$noise_curves
unset multiplot
GP
fi

set +e
param_check=(--rtol "$PARAM_RTOL")
if [ "$PARAM_NOISE" != off ]; then
  param_check+=(--noise "$(ls -d "$OUT"/baseline_resplit/step-* | tail -1)" --noise-ratio "$PARAM_NOISE")
fi
"$BIN/liger-compare" "$(ls -d "$OUT"/fused/step-* | tail -1)" "$(ls -d "$OUT"/baseline/step-* | tail -1)" \
  "${param_check[@]}" | sed 's/^/[convergence] final parameters: /'
param_ok=${PIPESTATUS[0]}
set -e
echo "[convergence] plot: $OUT/convergence.png, table: $OUT/losses.tsv, summary: $OUT/summary.json"
if [ "$loss_ok" -ne 0 ] || [ "$param_ok" -ne 0 ]; then
  echo "[convergence] DIVERGED"; exit 1
fi
echo "[convergence] OK"
