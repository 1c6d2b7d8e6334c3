#!/usr/bin/env bash
# Our moe and fused_linear_preference ops beside Liger-Kernel's, on ONE GPU,
# bf16, in one sitting: liger-bench (cuda and composite backends) and
# scripts/baselines/liger_ops.py (Liger's fused MoE and fused linear DPO loss
# at the same shapes and inputs), then a markdown table per case: forward +
# backward ms and peak extra MiB, ours (cuda) / Liger, and the targets
# (moe: <= 0.7x the time, no more memory; fused_linear_preference: <= 0.5x
# the time and <= 0.5x the memory).
#
#   bash bench/ops_vs_liger.sh [BUILD_DIR] [WHEEL]
#     BUILD_DIR  default build-gpu; liger-bench is built there through
#                bench/build.sh first (a no-op when up to date; BUILD=0 skips it)
#     WHEEL      default wheels/liger_kernel-*.whl; installed with pip
#                --no-deps --no-index into LIGER_SITE and put on PYTHONPATH
#                (nothing is downloaded)
# Environment: OUT (unset: the table on stdout only, the JSON and logs in a
#   temporary folder), LIGER_PYTHON=python3 (torch and triton), REPS=20,
#   WARMUP=5 (both runs), BUILD=1, LIGER_SITE=/tmp/liger_ops_site,
#   CASE_TIMEOUT=240 (seconds per Liger-Kernel case, its Triton autotuning
#   included; a case past it shows as not finished), MOE_SHAPES=all (or e128,
#   mixtral: liger_ops.py --moe-shapes), TRITON_CACHE_DIR=BUILD_DIR/baseline_kernel_cache
#   with TRITON_CACHE_AUTOTUNING=1 (Liger's autotuned choices are kept there,
#   so a later run, or HF + Liger-Kernel in bench/e2e_moe.sh, reuses them).
# Output in $OUT: ops_vs_liger.md (the table), ops_vs_liger_ours.json,
#   ops_vs_liger_liger.json and a log of each run. Exit 1 when a run failed or
#   a case lacks a row; the targets do not set the exit status.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -gt 2 || ${1:-} == -* ]]; then
  echo "usage: [OUT=DIR] bash bench/ops_vs_liger.sh [BUILD_DIR] [WHEEL]" >&2
  exit 2
fi
BUILD_DIR=${1:-build-gpu}
WHEEL=${2:-}
if [[ -z $WHEEL ]]; then
  wheels=(wheels/liger_kernel-*.whl)
  WHEEL=${wheels[0]}
fi
if [[ ! -f $WHEEL ]]; then
  echo "ops_vs_liger.sh: no Liger-Kernel wheel at '$WHEEL': pass its path as the 2nd argument" \
    "or put it under wheels/ (pip download --no-deps liger-kernel==0.8.5 -d wheels)" >&2
  exit 1
fi
LIGER_PYTHON=${LIGER_PYTHON:-python3}
REPS=${REPS:-20}
WARMUP=${WARMUP:-5}
LIGER_SITE=${LIGER_SITE:-/tmp/liger_ops_site}
if [[ -n ${OUT:-} ]]; then
  mkdir -p "$OUT"
  WORK=$(cd "$OUT" && pwd)
else
  WORK=$(mktemp -d /tmp/ops_vs_liger.XXXXXX)
fi
ours=$WORK/ops_vs_liger_ours.json
theirs=$WORK/ops_vs_liger_liger.json
rm -f "$ours" "$theirs"

gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2> /dev/null | head -n 1 || echo "no nvidia-smi")
header="GPU: $gpu; commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown); $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "$header"
if [[ ${BUILD:-1} != 0 ]]; then
  TARGETS=liger-bench bash bench/build.sh "$BUILD_DIR" || exit 1
fi
bench=$BUILD_DIR/apps/liger-bench
if [[ ! -x $bench ]]; then
  echo "ops_vs_liger.sh: no $bench: build it (TARGETS=liger-bench bash bench/build.sh $BUILD_DIR)" >&2
  exit 1
fi

status=0
if ! "$LIGER_PYTHON" -m pip install -q --no-deps --no-index --upgrade --target "$LIGER_SITE" "$WHEEL" \
  > "$WORK/pip_liger.log" 2>&1; then
  echo "ops_vs_liger.sh: pip install of $WHEEL into $LIGER_SITE failed: $(tail -n 1 "$WORK/pip_liger.log")" >&2
  status=1
fi

echo "liger-bench: $bench --op moe,fused_linear_preference --dtype bf16 --backend cuda,composite"
"$bench" --op moe,fused_linear_preference --dtype bf16 --backend cuda,composite --reps "$REPS" \
  --warmup "$WARMUP" --json "$ours" 2>&1 | tee "$WORK/liger_bench.log" || status=1

echo "Liger-Kernel: scripts/baselines/liger_ops.py"
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$BUILD_DIR/baseline_kernel_cache}
export TRITON_CACHE_AUTOTUNING=${TRITON_CACHE_AUTOTUNING:-1}
mkdir -p "$TRITON_CACHE_DIR"
PYTHONPATH=$LIGER_SITE${PYTHONPATH:+:$PYTHONPATH} "$LIGER_PYTHON" scripts/baselines/liger_ops.py \
  --reps "$REPS" --warmup "$WARMUP" --case-timeout "${CASE_TIMEOUT:-240}" \
  --moe-shapes "${MOE_SHAPES:-all}" --json "$theirs" 2>&1 |
  tee "$WORK/liger_ops.log" || status=1

if [[ -f $ours && -f $theirs ]]; then
  echo
  { echo "$header" && echo && "$LIGER_PYTHON" bench/ops_vs_liger_table.py "$ours" "$theirs"; } |
    tee "$WORK/ops_vs_liger.md" || status=1
else
  echo "ops_vs_liger.sh: no table: a run wrote no JSON (logs in $WORK)" >&2
  status=1
fi
[[ -n ${OUT:-} ]] || echo "JSON and logs: $WORK"
exit $status
