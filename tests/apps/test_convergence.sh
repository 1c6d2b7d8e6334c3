#!/usr/bin/env bash
# scripts/convergence.sh on the CPU: fused kernels vs reference agree on the
# tiny Llama and on a second family (Mistral), and a perturbed fused run is
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

for config in configs/tiny.yaml configs/tiny_mistral.yaml; do
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
exit $failures
