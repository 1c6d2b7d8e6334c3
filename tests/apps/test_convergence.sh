#!/usr/bin/env bash
# scripts/convergence.sh on the CPU, short fp32 runs: fused kernels vs
# reference agree on the tiny Llama and on other families (Mistral; Qwen3,
# whose per-head q/k norms run before the rope op; Mixtral, the moe op), and
# a fused run with a 5% larger learning rate is reported as diverged by the
# loss check (the check can fail). Usage: test_convergence.sh BUILD_DIR SOURCE_DIR
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

for config in configs/tiny.yaml configs/tiny_mistral.yaml configs/tiny_qwen3.yaml; do
  out=$work/$(basename "$config" .yaml)
  if bash scripts/convergence.sh "$config" --steps 25 --out "$out" "${fast[@]}" > "$work/log" 2>&1; then
    echo "ok   $config converges: $(grep -o 'max relative loss difference [^;]*' "$work/log")"
    [ -s "$out/convergence.png" ] || fail "no plot for $config"
    grep -q "rounding noise" "$work/log" || fail "$config: no comparison against the rounding noise"
  else
    fail "$config:"; tail -8 "$work/log"
  fi
done

# The tiny Mixtral: kernels.moe is switched with the other toggles (the reference
# side runs HF's loop over experts), with its load-balancing loss in the objective:
# that loss accumulates exactly, so the resplit reference is the same math.
out=$work/tiny_mixtral
if bash scripts/convergence.sh configs/tiny_mixtral.yaml --steps 25 --out "$out" "${fast[@]}" \
  > "$work/log" 2>&1 && grep -q '"aux_loss"' "$out/fused/metrics.jsonl" &&
  grep -q "kernel moe: reference (toggle off)" "$out/baseline.log" && grep -q "kernel moe: composite" "$out/fused.log"; then
  echo "ok   configs/tiny_mixtral.yaml converges, kernels.moe on vs off: $(grep -o 'max relative loss difference [^;]*' "$work/log")"
else
  fail "configs/tiny_mixtral.yaml:"; tail -8 "$work/log"; grep -h "kernel moe" "$out"/*.log
fi

# The resplit reference: the same global batch as micro-batch 1, accumulation 4.
resolved="$(last "$work/tiny/baseline_resplit")/config.yaml"
grep -Eq "^ *micro_batch_size: 1$" "$resolved" && grep -Eq "^ *gradient_accumulation_steps: 4$" "$resolved" ||
  fail "the resplit reference is not micro-batch 1 x accumulation 4 ($resolved)"

# A 5% larger learning rate on the fused side must be caught by the loss check,
# for the right reason: a finite difference beyond the floor and beyond every
# multiple of the noise band up to 10 (the default is 3).
bash scripts/convergence.sh configs/tiny.yaml --steps 25 --out "$work/perturbed" "${fast[@]}" \
  --set-fused training.lr=0.00315 > "$work/log" 2>&1
code=$?
# beyond_noise DIR: exit 0 when DIR/summary.json's verdict needs a noise multiple above 10
beyond_noise() {
  python3 -c "import json, sys; s = json.load(open(sys.argv[1]))
k = s['passing_noise_ratio']
sys.exit(0 if s['loss_verdict'] == 'DIVERGED' and s['tightest_rel_diff'] > s['loss_rtol'] and k is not None and k > 10 else 1)" "$1/summary.json"
}
if [ $code -eq 1 ] && grep -q "losses: .*DIVERGED" "$work/log" && beyond_noise "$work/perturbed"; then
  echo "ok   a perturbed run is reported as diverged (exit 1): $(grep -o 'closest to its limit: .*' "$work/log")"
else
  fail "the perturbed run was not caught for the right reason (exit $code)"; tail -5 "$work/log"
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
