#!/usr/bin/env bash
# scripts/convergence.sh on the CPU: fused kernels vs reference agree on a
# second family (Mistral, a short run decided by the fixed floor) and on the
# tiny Llama over 150 steps, long enough for the two fp32 runs to separate
# chaotically beyond the floor (the rounding-noise band decides), and a
# perturbed fused run over the same 150 steps is reported as diverged (the
# check can fail). Usage: test_convergence.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
BUILD=$1
SRC=$2
cd "$SRC"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LIGER_BUILD_DIR=$BUILD
fast=(--set data.seq_len=64 --set training.micro_batch_size=4 --set training.threads=2)
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
last() { ls -d "$1"/step-* | tail -1; }
# summary VALUE_NAME DIR: a number from DIR/summary.json
summary() { python3 -c "import json, sys; print(json.load(open(sys.argv[2]))[sys.argv[1]])" "$1" "$2/summary.json"; }

# Mistral, 25 steps: the noise stays far below the 1e-4 floor.
if bash scripts/convergence.sh configs/tiny_mistral.yaml --steps 25 --out "$work/mistral" "${fast[@]}" > "$work/log" 2>&1; then
  echo "ok   configs/tiny_mistral.yaml converges: $(grep -o 'max relative loss difference [^ ]*' "$work/log")"
  [ -s "$work/mistral/convergence.png" ] || fail "no plot for configs/tiny_mistral.yaml"
else
  fail "configs/tiny_mistral.yaml:"; tail -8 "$work/log"
fi

# The tiny Llama, 150 steps: the losses drift apart beyond the 1e-4 floor (a
# fixed tolerance would fail this correct run), within 3 x the noise band.
if bash scripts/convergence.sh configs/tiny.yaml --steps 150 --out "$work/tiny" "${fast[@]}" > "$work/log" 2>&1; then
  drift=$(summary max_loss_rel_diff "$work/tiny")
  if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 1e-4 else 1)" "$drift"; then
    echo "ok   configs/tiny.yaml converges over 150 steps, drifting to $drift, beyond the 1e-4 floor"
  else
    fail "configs/tiny.yaml: the losses drift only to $drift in 150 steps: lengthen the run so the noise band is tested"
  fi
  grep -q "rounding noise" "$work/log" || fail "no comparison against the rounding noise:"
  [ -s "$work/tiny/convergence.png" ] || fail "no plot for configs/tiny.yaml"
  # The resplit reference: the same global batch as micro-batch 2, accumulation 2.
  grep -Eq "^ *micro_batch_size: 2$" "$(last "$work/tiny/baseline_resplit")/config.yaml" &&
    grep -Eq "^ *gradient_accumulation_steps: 2$" "$(last "$work/tiny/baseline_resplit")/config.yaml" ||
    fail "the resplit reference is not micro-batch 2 x accumulation 2"
else
  fail "configs/tiny.yaml over 150 steps:"; tail -8 "$work/log"
fi

# A 1% larger learning rate on the fused side, over the same 150 steps: caught
# by the loss check in the early steps, where the noise is still small.
bash scripts/convergence.sh configs/tiny.yaml --steps 150 --out "$work/perturbed" "${fast[@]}" \
  --set-fused training.lr=0.00303 > "$work/log" 2>&1
code=$?
if [ $code -eq 1 ] && grep -q "losses: .*DIVERGED" "$work/log"; then
  echo "ok   a perturbed run is reported as diverged (exit 1): $(grep -o 'closest to its limit: step [0-9]*' "$work/log")"
else
  fail "the perturbed run was not caught (exit $code)"; tail -5 "$work/log"
fi

# liger-compare --noise on the checkpoints above, the fused runs taking turns
# as the noise: the kernels' differences are within twice the perturbed run's
# drift (OK), and the perturbed run is beyond twice the kernels' (DIVERGED).
compare=(--noise-ratio 2)
"$BUILD/apps/liger-compare" "$(last "$work/tiny/fused")" "$(last "$work/tiny/baseline")" \
  --noise "$(last "$work/perturbed/fused")" "${compare[@]}" > "$work/cmp_ok" 2>&1
ok_code=$?
"$BUILD/apps/liger-compare" "$(last "$work/perturbed/fused")" "$(last "$work/tiny/baseline")" \
  --noise "$(last "$work/tiny/fused")" "${compare[@]}" > "$work/cmp_bad" 2>&1
bad_code=$?
if [ $ok_code -eq 0 ] && grep -q "rounding noise.*: OK" "$work/cmp_ok" && [ $bad_code -eq 1 ] && grep -q DIVERGED "$work/cmp_bad"; then
  echo "ok   liger-compare --noise: within the noise passes, beyond it fails ($(sed 's/.*worst ratio/worst ratio/' "$work/cmp_bad"))"
else
  fail "liger-compare --noise (exits $ok_code, $bad_code):"; cat "$work/cmp_ok" "$work/cmp_bad"
fi
exit $failures
