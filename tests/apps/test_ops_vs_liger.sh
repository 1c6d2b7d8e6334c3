#!/usr/bin/env bash
# The GPU-free parts of bench/ops_vs_liger.sh and its two Python scripts, on
# results made up here (no GPU, no Liger-Kernel, no build needed):
#  a) ops_vs_liger_table.py: rows matched by op and shape, ratios ours (cuda) /
#     Liger, each target met or missed, exit 0;
#  b) a case without its Liger row: "-" and exit 1; a Liger case that did not
#     finish: shown so, exit 0; an unreadable file: one line;
#  c) liger_ops.py: its per-case time limit, --help, an unknown --op or --moe-shapes (exit 2), no baseline package: one
#     line saying how to install the wheel (exit 1);
#  d) ops_vs_liger.sh with a stand-in liger-bench and a stand-in Python that
#     fakes pip and liger_ops.py: the table in $OUT, exit 0; no wheel: one
#     line, exit 1; a bad argument: usage, exit 2; MOE_SHAPES passed on, the
#     baseline's autotuning cache beside the build.
# Usage: test_ops_vs_liger.sh [SOURCE_DIR] [PYTHON]
set -uo pipefail
SRC=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
PY=${2:-python3}
source "$SRC/tests/apps/check_harness.sh"

# One made-up result row: op backend shape full_ms peak_mib.
row() {
  printf '{"op": "%s", "backend": "%s", "dtype": "bf16", "shape": "%s", "fwd_ms": 1, "bwd_ms": 1, ' "$1" "$2" "$3"
  printf '"full_ms": %s, "fwd_gbps": 0, "bwd_gbps": 0, "full_gbps": 0, "peak_extra_mib": %s}' "$4" "$5"
}
moe_a="x [8192,2048], 8 of 128 experts of FFN 768"
moe_b="x [8192,2048], 2 of 8 experts of FFN 5632"
pref="x [65536,4096], W [128256,4096], 16 sequences"
cat > "$work/ours.json" << EOF
{"device": "GPU-A", "torch": "2.11.0", "date": "d1", "reps": 20, "results": [
$(row moe cuda "$moe_a" 6 900), $(row moe composite "$moe_a" 30 2000),
$(row moe cuda "$moe_b" 16 1200), $(row fused_linear_preference cuda "$pref" 400 2000),
$(row rms_norm cuda "[8192,4096]" 1 1)]}
EOF
liger_rows="$(row moe liger-kernel "$moe_a" 10 1000), $(row moe liger-kernel "$moe_b" 20 1000)"
cat > "$work/liger.json" << EOF
{"device": "GPU-A", "date": "d2", "reps": 20,
 "notes": {"fused_linear_preference": "use_ref_model=False"}, "results": [
$liger_rows, $(row fused_linear_preference liger-kernel "$pref" 1000 8000)]}
EOF
cat > "$work/liger_partial.json" << EOF
{"device": "GPU-A", "results": [$liger_rows]}
EOF
TABLE=$SRC/bench/ops_vs_liger_table.py

# a) the table
out=$("$PY" "$TABLE" "$work/ours.json" "$work/liger.json" 2>&1)
code=$?
line() { grep -F "| $1 | $2 |" <<< "$out"; }
if [[ $code -eq 0 ]] &&
  line moe "$moe_a" | grep -qF "| 6.000 | 30.000 | 10.000 | 0.60x yes (<= 0.7x) | 900 | 1000 | 0.90x yes (<= 1x) |" &&
  line moe "$moe_b" | grep -qF "| 16.000 | - | 20.000 | 0.80x NO (<= 0.7x) | 1200 | 1000 | 1.20x NO (<= 1x) |" &&
  line fused_linear_preference "$pref" | grep -qF "| 0.40x yes (<= 0.5x) | 2000 | 8000 | 0.25x yes (<= 0.5x) |" &&
  ! grep -q rms_norm <<< "$out" && grep -q "use_ref_model=False" <<< "$out"; then
  ok "table: ratios and targets per case"
else
  fail "table (exit $code): $out"
fi

# b) a missing Liger row; an unreadable file
out=$("$PY" "$TABLE" "$work/ours.json" "$work/liger_partial.json" 2>&1)
code=$?
if [[ $code -eq 1 ]] && line fused_linear_preference "$pref" | grep -qF "| 400.000 | - | - | - (<= 0.5x) |" &&
  grep -q "lacks its cuda or Liger-Kernel row" <<< "$out"; then
  ok "table: a missing row is '-' and exit 1"
else
  fail "table with a missing row (exit $code): $out"
fi
# a Liger case past liger_ops.py's --case-timeout: shown as not finished, no ratio, exit 0
cat > "$work/liger_timeout.json" << EOF
{"device": "GPU-A", "results": [$(row moe liger-kernel "$moe_a" 10 1000),
 {"op": "moe", "backend": "liger-kernel", "dtype": "bf16", "shape": "$moe_b", "error": "did not finish within 240 s"},
 $(row fused_linear_preference liger-kernel "$pref" 1000 8000)]}
EOF
out=$("$PY" "$TABLE" "$work/ours.json" "$work/liger_timeout.json" 2>&1)
code=$?
if [[ $code -eq 0 ]] &&
  line moe "$moe_b" | grep -qF "| 16.000 | - | did not finish within 240 s | - (<= 0.7x) | 1200 | - | - (<= 1x) |"; then
  ok "table: a Liger case that did not finish is shown so, without a ratio"
else
  fail "table with a case that did not finish (exit $code): $out"
fi
out=$("$PY" "$TABLE" "$work/ours.json" "$work/none.json" 2>&1)
code=$?
if [[ $code -eq 1 && $(wc -l <<< "$out") -eq 1 ]] && grep -q "cannot read Liger-Kernel results .*none.json" <<< "$out"; then
  ok "table: an unreadable file is one line"
else
  fail "table with an unreadable file (exit $code): $out"
fi

# c) liger_ops.py without a GPU
OPS=$SRC/scripts/baselines/liger_ops.py
# its per-case limit: a case that sleeps past it raises CaseTimeout, the alarm is then cleared
limit_check='
import sys, time
sys.path.insert(0, sys.argv[1])
import liger_ops
try:
    with liger_ops.time_limit(0.2):
        time.sleep(5)
    print("no timeout")
except liger_ops.CaseTimeout:
    time.sleep(0.4)
    print("timed out")
'
if [[ $("$PY" -c "$limit_check" "$(dirname "$OPS")" 2>&1) == "timed out" ]]; then
  ok "liger_ops.py: a case past --case-timeout is stopped"
else
  fail "liger_ops.py: time_limit did not stop a case"
fi
if "$PY" "$OPS" --help | grep -q "use_ref_model=False"; then ok "liger_ops.py --help"; else fail "liger_ops.py --help"; fi
"$PY" "$OPS" --moe-shapes nope > /dev/null 2>&1
code=$?
if [[ $code -eq 2 ]]; then ok "liger_ops.py: an unknown --moe-shapes"; else fail "liger_ops.py --moe-shapes nope exit $code"; fi
out=$("$PY" "$OPS" --op moe,nope 2>&1)
code=$?
if [[ $code -eq 2 ]] && grep -q "unknown case 'nope'" <<< "$out"; then
  ok "liger_ops.py: an unknown --op"
else
  fail "liger_ops.py --op nope (exit $code): $out"
fi
if "$PY" "$SRC/scripts/baselines/baseline_available.py" liger 2> /dev/null; then
  echo "skip liger_ops.py without the Liger-Kernel baseline: this Python has it"
else
  out=$("$PY" "$OPS" 2>&1)
  code=$?
  if [[ $code -eq 1 && $(wc -l <<< "$out") -eq 1 ]] && grep -q "cannot import .*pip install --no-deps" <<< "$out"; then
    ok "liger_ops.py: no baseline package is one line with the install command"
  else
    fail "liger_ops.py without the baseline package (exit $code): $out"
  fi
fi

# d) ops_vs_liger.sh with stand-ins for liger-bench and for the Python
mkdir -p "$work/build/apps"
cat > "$work/build/apps/liger-bench" << EOF
#!/usr/bin/env bash
echo "\$*" > "$work/bench_args"
while [[ \$# -gt 0 ]]; do [[ \$1 == --json ]] && cp "$work/ours.json" "\$2"; shift; done
exit 0
EOF
cat > "$work/python" << EOF
#!/usr/bin/env bash
[[ \$1 == -m && \$2 == pip ]] && exit 0                 # the wheel's install
if [[ \$1 == scripts/baselines/liger_ops.py ]]; then
  echo "\$*" > "$work/liger_args"
  while [[ \$# -gt 0 ]]; do [[ \$1 == --json ]] && cp "$work/liger.json" "\$2"; shift; done
  exit 0
fi
exec "$PY" "\$@"
EOF
chmod +x "$work/build/apps/liger-bench" "$work/python"
touch "$work/baseline_wheel-0.0-py3-none-any.whl"
OUT=$work/out BUILD=0 LIGER_PYTHON=$work/python bash "$SRC/bench/ops_vs_liger.sh" "$work/build" \
  "$work/baseline_wheel-0.0-py3-none-any.whl" > "$work/sh.log" 2>&1
code=$?
if [[ $code -eq 0 ]] && grep -q "0.60x yes" "$work/out/ops_vs_liger.md" 2> /dev/null &&
  grep -q "^GPU: " "$work/out/ops_vs_liger.md" &&
  grep -qF -- "--op moe,fused_linear_preference --dtype bf16 --backend cuda,composite --reps 20" "$work/bench_args"; then
  ok "ops_vs_liger.sh: both runs, the table in \$OUT"
else
  fail "ops_vs_liger.sh (exit $code): $(cat "$work/sh.log")"
fi
# MOE_SHAPES reaches liger_ops.py; Liger's autotuned choices are kept beside the build
OUT=$work/out2 BUILD=0 MOE_SHAPES=mixtral LIGER_PYTHON=$work/python bash "$SRC/bench/ops_vs_liger.sh" \
  "$work/build" "$work/baseline_wheel-0.0-py3-none-any.whl" > "$work/sh2.log" 2>&1
if grep -qF -- "--moe-shapes mixtral" "$work/liger_args" && [[ -d $work/build/baseline_kernel_cache ]]; then
  ok "ops_vs_liger.sh: MOE_SHAPES and the baseline's autotuning cache"
else
  fail "ops_vs_liger.sh MOE_SHAPES=mixtral: $(cat "$work/liger_args" 2> /dev/null) $(ls "$work/build")"
fi
out=$(BUILD=0 bash "$SRC/bench/ops_vs_liger.sh" "$work/build" "$work/none.whl" 2>&1)
code=$?
if [[ $code -eq 1 && $(wc -l <<< "$out") -eq 1 ]] && grep -q "no Liger-Kernel wheel at '.*none.whl'" <<< "$out"; then
  ok "ops_vs_liger.sh: no wheel is one line"
else
  fail "ops_vs_liger.sh without a wheel (exit $code): $out"
fi
bash "$SRC/bench/ops_vs_liger.sh" --bad > /dev/null 2>&1
code=$?
if [[ $code -eq 2 ]]; then ok "ops_vs_liger.sh: usage"; else fail "ops_vs_liger.sh --bad exit $code"; fi

finish
