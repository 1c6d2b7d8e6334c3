#!/usr/bin/env bash
# Convergence run: trains CONFIG twice with the same seed and data, fused
# kernels all on vs all off (the reference), then compares the loss curves
# step by step and the final parameters, and plots both curves and their
# relative difference (PNG, gnuplot).
#
#   scripts/convergence.sh CONFIG [--steps N] [--out DIR] [--loss-rtol X] [--param-rtol Y]
#                          [--param-noise R]
#                          [--set KEY=VAL ...]         (both runs)
#                          [--set-fused KEY=VAL ...]   (the fused run only: a perturbation check)
#
# Tolerances: CPU fp32 defaults (loss 1e-4 relative per step, parameters
# ||fused - reference|| / ||reference|| <= 1e-3 per tensor). In bf16 on a GPU
# the two runs' parameters drift apart chaotically over many steps while the
# losses agree, so a fixed parameter tolerance says little: --param-noise R
# trains the reference a third time with only its rounding changed (the same
# global batch in twice as many micro-batches; exact accumulation makes it the
# same math) and requires every tensor's ||fused - reference|| to be within R
# times ||resplit - reference||: the fused kernels may drift no further than
# rounding alone does. Use it with Liger-Kernel's bf16 loss tolerance, e.g.
# --loss-rtol 2e-2 --param-noise 2. Exit 0 when both checks hold, 1 on divergence.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${LIGER_BUILD_DIR:-$ROOT/build}/apps
CONFIG=""
STEPS=""
OUT=""
LOSS_RTOL=1e-4
PARAM_RTOL=1e-3
PARAM_NOISE=""
common=()
fused_only=()
while [ $# -gt 0 ]; do
  case $1 in
    --steps) STEPS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --loss-rtol) LOSS_RTOL=$2; shift 2 ;;
    --param-rtol) PARAM_RTOL=$2; shift 2 ;;
    --param-noise) PARAM_NOISE=$2; shift 2 ;;
    --set) common+=(--set "$2"); shift 2 ;;
    --set-fused) fused_only+=(--set "$2"); shift 2 ;;
    -h|--help) sed -n 2,24p "$0"; exit 0 ;;
    *) if [ -z "$CONFIG" ]; then CONFIG=$1; shift; else echo "convergence.sh: unexpected argument '$1'" >&2; exit 2; fi ;;
  esac
done
[ -n "$CONFIG" ] || { echo "usage: scripts/convergence.sh CONFIG [--steps N] [--out DIR] ..." >&2; exit 2; }
[ -f "$CONFIG" ] || { echo "convergence.sh: config '$CONFIG' not found" >&2; exit 2; }
[ -x "$BIN/liger-train" ] || { echo "convergence.sh: $BIN/liger-train not built (run scripts/setup.sh)" >&2; exit 2; }
OUT=${OUT:-runs/convergence/$(basename "$CONFIG" .yaml)}
mkdir -p "$OUT"
[ -n "$STEPS" ] && common+=(--set "training.steps=$STEPS")
common+=(--set checkpoint.every=0 --set checkpoint.save_final=true --set checkpoint.keep_last=1
         --set checkpoint.resume=none --set logging.sample_tokens=0 --set logging.progress_bar=off)

on=(--set kernels.rms_norm=true --set kernels.layer_norm=true --set kernels.rope=true
    --set kernels.swiglu=true --set kernels.geglu=true --set kernels.cross_entropy=false
    --set kernels.fused_linear_cross_entropy=true)
off=(--set kernels.rms_norm=false --set kernels.layer_norm=false --set kernels.rope=false
     --set kernels.swiglu=false --set kernels.geglu=false --set kernels.cross_entropy=false
     --set kernels.fused_linear_cross_entropy=false --set kernels.tuned_gemm=false)

run() {  # run NAME ARGS...
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  echo "[convergence] training $name"
  "$BIN/liger-train" --config "$CONFIG" "${common[@]}" "$@" --set checkpoint.output_dir="$OUT/$name" \
    > "$OUT/$name.log" 2>&1 || { echo "[convergence] the $name run failed:"; tail -5 "$OUT/$name.log"; exit 2; }
}
run fused "${on[@]}" "${fused_only[@]}"
run baseline "${off[@]}"
if [ -n "$PARAM_NOISE" ]; then
  # The reference again, the same global batch split into twice as many micro-batches.
  resolved="$(ls -d "$OUT"/baseline/step-* | tail -1)/config.yaml"
  mb=$(awk '$1 == "micro_batch_size:" {print $2; exit}' "$resolved")
  ga=$(awk '$1 == "gradient_accumulation_steps:" {print $2; exit}' "$resolved")
  if [ -z "$mb" ] || [ -z "$ga" ] || [ $((mb % 2)) -ne 0 ]; then
    echo "convergence.sh: --param-noise splits training.micro_batch_size in two, but $resolved has" \
         "micro_batch_size '${mb}': set an even training.micro_batch_size" >&2
    exit 2
  fi
  run baseline_resplit "${off[@]}" --set training.micro_batch_size=$((mb / 2)) \
    --set training.gradient_accumulation_steps=$((ga * 2))
fi

# Per-step comparison -> a table for gnuplot and the verdict.
set +e
python3 - "$OUT" "$LOSS_RTOL" <<'PY'
import json, sys
out, rtol = sys.argv[1], float(sys.argv[2])
def load(name):
    with open(f"{out}/{name}/metrics.jsonl") as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f)}
fused, base = load("fused"), load("baseline")
if sorted(fused) != sorted(base):
    sys.exit(f"[convergence] the runs logged different steps: {len(fused)} vs {len(base)}")
worst, worst_step = 0.0, None
with open(f"{out}/losses.tsv", "w") as f:
    f.write("# step\tfused\tbaseline\trelative_difference\n")
    for step in sorted(base):
        diff = abs(fused[step] - base[step]) / max(abs(base[step]), 1e-12)
        if diff >= worst:
            worst, worst_step = diff, step
        f.write(f"{step}\t{fused[step]:.8g}\t{base[step]:.8g}\t{diff:.3e}\n")
last = max(base)
verdict = "OK" if worst <= rtol else "DIVERGED"
summary = {"steps": len(base), "first_loss": base[min(base)], "final_loss_fused": fused[last],
           "final_loss_baseline": base[last], "max_loss_rel_diff": worst, "at_step": worst_step,
           "loss_rtol": rtol, "loss_verdict": verdict}
with open(f"{out}/summary.json", "w") as f:
    json.dump(summary, f, indent=2)
print(f"[convergence] {len(base)} steps, loss {base[min(base)]:.4f} -> {base[last]:.4f} (baseline), "
      f"{fused[last]:.4f} (fused); max relative loss difference {worst:.3e} at step {worst_step} "
      f"(tolerance {rtol:g}): {verdict}")
sys.exit(0 if verdict == "OK" else 1)
PY
loss_ok=$?
set -e
[ -f "$OUT/losses.tsv" ] || exit 2

if command -v gnuplot > /dev/null; then
  gnuplot <<GP || echo "[convergence] gnuplot failed; the table is $OUT/losses.tsv"
set terminal pngcairo size 1000,700
set output "$OUT/convergence.png"
set multiplot layout 2,1 title "$(basename "$CONFIG"): fused kernels vs reference"
set ylabel "loss"; set grid
plot "$OUT/losses.tsv" using 1:3 with lines lw 2 title "reference (kernels off)", \
     "$OUT/losses.tsv" using 1:2 with lines lw 1 dt 2 title "fused (kernels on)"
set ylabel "|fused - reference| / reference"; set xlabel "step"; set logscale y
plot "$OUT/losses.tsv" using 1:(\$4 > 0 ? \$4 : 1e-12) with lines title "relative loss difference", $LOSS_RTOL title "tolerance" dt 3
unset multiplot
GP
fi

set +e
param_check=(--rtol "$PARAM_RTOL")
if [ -n "$PARAM_NOISE" ]; then
  param_check=(--noise "$(ls -d "$OUT"/baseline_resplit/step-* | tail -1)" --noise-ratio "$PARAM_NOISE")
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
