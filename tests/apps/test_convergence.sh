#!/usr/bin/env bash
# scripts/convergence.sh on the CPU: fused kernels vs reference agree on the
# tiny Llama and on other families (Mistral; Qwen3, whose per-head q/k norms
# run before the rope op), and a perturbed fused run is
# reported as diverged (the check can fail). Usage: test_convergence.sh BUILD_DIR SOURCE_DIR
set -uo pipefail
BUILD=$1
SRC=$2
cd "$SRC"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LIGER_BUILD_DIR=$BUILD
fast=(--set data.seq_len=64 --set training.micro_batch_size=4 --set training.threads=2)
failures=0

for config in configs/tiny.yaml configs/tiny_mistral.yaml configs/tiny_qwen3.yaml; do
  if bash scripts/convergence.sh "$config" --steps 25 --out "$work/$(basename "$config" .yaml)" "${fast[@]}" > "$work/log" 2>&1; then
    echo "ok   $config converges: $(grep 'max relative loss' "$work/log" | sed 's/.*max relative/max relative/')"
    [ -s "$work/$(basename "$config" .yaml)/convergence.png" ] || { echo "FAIL no plot for $config"; failures=$((failures + 1)); }
  else
    echo "FAIL $config:"; tail -8 "$work/log"; failures=$((failures + 1))
  fi
done

# A 1% different learning rate on the fused side must be caught.
bash scripts/convergence.sh configs/tiny.yaml --steps 25 --out "$work/perturbed" "${fast[@]}" \
  --set-fused training.lr=0.00303 > "$work/log" 2>&1
code=$?
if [ $code -eq 1 ] && grep -q DIVERGED "$work/log"; then
  echo "ok   a perturbed run is reported as diverged (exit 1)"
else
  echo "FAIL the perturbed run was not caught (exit $code)"; tail -5 "$work/log"; failures=$((failures + 1))
fi

# liger-compare against a noise run (the GPU bf16 criterion), on the checkpoints above: both baselines
# are the same run; the kernels' fp32 differences are far below the perturbed run's drift (OK), and
# the perturbed run is far beyond the kernels' (DIVERGED).
last() { ls -d "$1"/step-* | tail -1; }
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
  echo "FAIL liger-compare --noise (exits $ok_code, $bad_code):"; cat "$work/cmp_ok" "$work/cmp_bad"; failures=$((failures + 1))
fi

# convergence.sh --param-noise end to end: the third run splits the batch in two micro-batches.
if bash scripts/convergence.sh configs/tiny.yaml --steps 6 --out "$work/noise" "${fast[@]}" --param-noise 1e6 \
     > "$work/log" 2>&1 && grep -q "rounding noise" "$work/log" &&
   grep -Eq "^ *micro_batch_size: 2$" "$(last "$work/noise/baseline_resplit")/config.yaml" &&
   grep -Eq "^ *gradient_accumulation_steps: 2$" "$(last "$work/noise/baseline_resplit")/config.yaml"; then
  echo "ok   convergence.sh --param-noise trains the resplit reference and compares against it"
else
  echo "FAIL convergence.sh --param-noise:"; tail -8 "$work/log"; failures=$((failures + 1))
fi
exit $failures
