#!/usr/bin/env bash
# One device call for a change to the kernels and the model: the GPU kernel
# tests (FILTER), liger-bench of OPS, then the end-to-end 1B benchmark parts
# (PARTS of bench/e2e_1b.sh) and, with CONVERGENCE_STEPS > 0, the
# bf16 GPU convergence run with the rounding-noise parameter check. Keeps at
# most 8 small files in $OUT (the device tool's limit).
# TRAINER_FILTER: a Catch2 spec run from tests/trainer/test_training (e.g.
# "cuda graphs*"), followed by all of tests/trainer/test_optimizer; GRAPH_MODES: the training.cuda_graphs values the e2e parts
# run with, each a full pass (default "false"); CONV_EXTRA: --set arguments
# added to every convergence run.
#   FILTER="[rope],[glu]" OPS=rope_qkv PARTS="liger hf" bash scripts/device/session_check.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${OUT:-$PWD/out}
mkdir -p "$RESULTS"
WORK=/tmp/session_check
rm -rf "$WORK"
mkdir -p "$WORK/kernels" "$WORK/e2e"
OUT=$WORK/kernels TESTS=${TESTS:-test_kernels_cuda} FILTER=${FILTER:-} OPS=${OPS:-} \
  TARGETS="test_kernels_cuda test_kernels_cuda_losses test_kernels_cuda_tuned_gemm test_training test_optimizer liger-bench liger-train liger-compare" \
  bash scripts/device/kernels_check.sh > /dev/null 2>&1
cp "$WORK/kernels/summary.txt" "$RESULTS/kernels.txt"
grep -q "BUILD FAILED" "$RESULTS/kernels.txt" && { cat "$RESULTS/kernels.txt"; exit 1; }
if [[ -n ${TRAINER_FILTER:-} ]]; then
  LIGER_SOURCE_DIR=$PWD timeout 600 build-gpu/tests/trainer/test_training "$TRAINER_FILTER" > "$WORK/trainer.log" 2>&1
  echo "test_training $TRAINER_FILTER: exit $? -- $(tail -3 "$WORK/trainer.log" | tr '\n' ' ')" >> "$RESULTS/kernels.txt"
  grep -B2 -A14 -E "FAILED|with expansion|worst per-step" "$WORK/trainer.log" | head -60 >> "$RESULTS/kernels.txt"
  timeout 300 build-gpu/tests/trainer/test_optimizer > "$WORK/optimizer.log" 2>&1  # the AdamW cases on cuda too
  echo "test_optimizer: exit $? -- $(tail -2 "$WORK/optimizer.log" | tr '\n' ' ')" >> "$RESULTS/kernels.txt"
  grep -B2 -A14 "FAILED" "$WORK/optimizer.log" | head -40 >> "$RESULTS/kernels.txt"
fi
if [[ -n ${PARTS:-} ]]; then
  : > "$RESULTS/e2e.txt"
  for mode in ${GRAPH_MODES:-false}; do
    OUT=$WORK/e2e_$mode EXTRA="--set training.cuda_graphs=$mode" PROFILE_STEPS=${PROFILE_STEPS:-0} \
      bash bench/e2e_1b.sh "${E2E_STEPS:-40}" "$PARTS" > /dev/null 2>&1
    { echo "== training.cuda_graphs=$mode"; cat "$WORK/e2e_$mode/summary.txt"
      grep -hE "cuda graphs|error|Error" "$WORK"/e2e_$mode/liger_*.log | cut -c1-400 | head -5; } >> "$RESULTS/e2e.txt"
    for trace in "$WORK"/e2e_$mode/liger_*/profile/rank-0.json; do
      [[ -f $trace ]] || continue
      { echo "idle gaps of $trace:"; python3 scripts/trace_gaps.py "$trace" 25; } >> "$RESULTS/e2e.txt" 2>&1
    done
  done
fi
if [[ ${CONVERGENCE_STEPS:-0} -gt 0 ]]; then
  # CONV_EXTRA: more --set arguments for every run (e.g. the bench's CUDA graphs and GLU recompute).
  conv=(configs/tiny.yaml --steps "$CONVERGENCE_STEPS" --set training.device=cuda --set model.dtype=bf16
        --loss-rtol 2e-2 --param-noise 2 ${CONV_EXTRA:-})
  LIGER_BUILD_DIR=build-gpu bash scripts/convergence.sh "${conv[@]}" --out "$WORK/conv" > "$RESULTS/convergence.txt" 2>&1
  echo "exit $?" >> "$RESULTS/convergence.txt"
  cp "$WORK/conv/losses.tsv" "$RESULTS/convergence_losses.tsv" 2>/dev/null
  # The check must be able to fail: the fused run with a 5% larger learning rate.
  LIGER_BUILD_DIR=build-gpu bash scripts/convergence.sh "${conv[@]}" --out "$WORK/conv_perturbed" \
    --set-fused training.lr=0.00315 > "$WORK/perturbed.txt" 2>&1
  echo "perturbed (lr x 1.05 on the fused side): exit $?" >> "$RESULTS/convergence.txt"
  grep -E "max relative|final parameters" "$WORK/perturbed.txt" >> "$RESULTS/convergence.txt"
fi
cat "$RESULTS"/*.txt
