#!/usr/bin/env bash
# End-to-end DPO speed and memory on one GPU: configs/bench/dpo_1b_h100.yaml
# (Llama-3.2-1B shapes, 8 pairs x 1024 tokens per step, bf16) with liger-train,
# the reference a frozen model (preference.reference: model) and then
# precomputed log-probs, beside TRL's DPOTrainer + Liger-Kernel
# (scripts/baselines/trl_dpo_liger.py, when TRL imports) and the same step
# without TRL (scripts/baselines/hf_dpo_liger_loop.py: HF Llama + Liger's
# patches + LigerFusedLinearDPOLoss + a frozen reference copy). Every run takes
# STEPS steps and reports the median tokens/s after 5 warm-up steps and the
# peak memory; bench/e2e_dpo_table.py prints the table and the target:
# liger-train (reference: model) >= 1.5x TRL + Liger-Kernel tokens/s at <= its
# memory (the loop stands in when TRL is absent; the table says which).
#
#   bash bench/e2e_dpo.sh [STEPS [PARTS]]     # STEPS default 30
#     e.g. OUT=/tmp/dpo bash bench/e2e_dpo.sh 30
#          bash bench/e2e_dpo.sh 20 "model trl"
#
# PARTS: any of "model precomputed trl loop" (default all): model, precomputed =
#   liger-train with that preference.reference; trl = trl_dpo_liger.py; loop =
#   hf_dpo_liger_loop.py (--no-liger when Liger-Kernel cannot be imported).
# Environment (all optional):
#   OUT=out              results: summary_dpo.txt, e2e_dpo.md (the table), a log
#                        and a run folder or JSON per run
#   BUILD_DIR=build-gpu  built with bench/build.sh (its variables apply); BUILD=0 skips it
#   LIGER_PYTHON=python3 the Python with torch, transformers and triton for the baselines
#   BASE_STEPS=STEPS     steps of the baseline runs
#   EXTRA="..."          more liger-train arguments, e.g. "--set kernels.flce_chunk_mb=1024"
#   BASE_EXTRA="..."     more baseline arguments, e.g. "--preset tiny --device cpu"
#   RUN_TIMEOUT_S=300    a run still going after this is stopped (and counts as failed)
#   DEADLINE_S=0         N > 0: runs that would start after N seconds are skipped
#   LIGER_SITE=/tmp/e2e_dpo_site  where the carried wheels are installed (on PYTHONPATH)
# Carried files (wheels/, git-ignored): liger_kernel-*.whl adds Liger-Kernel to
#   the baselines; the wheels of scripts/baselines/fetch_dpo_wheels.sh add TRL
#   where the machine lacks it (about 2 MiB: the GPU machines' image has pyarrow
#   and pandas; ALL=1 fetches those too).
# Exit 1 when a liger-train run failed or no baseline ran.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-30}
if [[ ! $STEPS =~ ^[0-9]+$ || $# -gt 2 ]]; then
  echo "usage: [OUT=DIR] bash bench/e2e_dpo.sh [STEPS [\"model precomputed trl loop\"]] (see the comment at its top)" >&2
  exit 2
fi
ROOT=$PWD
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PARTS=${2:-"model precomputed trl loop"}
has() { [[ " $PARTS " == *" $1 "* ]]; }
BASE_STEPS=${BASE_STEPS:-$STEPS}
BUILD_DIR=${BUILD_DIR:-build-gpu}
BUILD=${BUILD:-1}
LIGER_PYTHON=${LIGER_PYTHON:-python3}
LIGER_SITE=${LIGER_SITE:-/tmp/e2e_dpo_site}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-300}
DEADLINE_S=${DEADLINE_S:-0}
read -r -a extra <<< "${EXTRA:-}"
read -r -a base_extra <<< "${BASE_EXTRA:-}"
S=$OUT/summary_dpo.txt
WARMUP=5
start=$(date +%s)
status=0
: > "$S"
say() { echo "$*" | tee -a "$S"; }  # one line per step, on stdout and in the summary
in_time() {  # in_time LABEL: false (and a line) once DEADLINE_S has passed
  if [[ $DEADLINE_S -gt 0 && $(($(date +%s) - start)) -ge $DEADLINE_S ]]; then
    say "$1: skipped (past DEADLINE_S=$DEADLINE_S)"
    return 1
  fi
}

say "$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2> /dev/null | head -n 1 || echo 'no nvidia-smi')"
say "commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC'), STEPS=$STEPS, PARTS=\"$PARTS\"${EXTRA:+, EXTRA=\"$EXTRA\"}${BASE_EXTRA:+, BASE_EXTRA=\"$BASE_EXTRA\"}"
if [[ $BUILD != 0 ]]; then
  build_line=$(TARGETS=liger-train bash bench/build.sh "$BUILD_DIR" 2>&1) ||
    { say "build FAILED:"; echo "$build_line" | tee -a "$S"; exit 1; }
  say "$build_line"
fi

summary() {  # metrics.jsonl -> one line: median tokens/s after the warm-up, peak GiB, losses
  python3 - "$1" "$WARMUP" <<'PY' 2> /dev/null || echo "no metrics in $1"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
steady = rows[int(sys.argv[2]):] or rows
print(f"{len(rows)} steps, {statistics.median(r['tokens_per_s'] for r in steady):,.0f} tokens/s, "
      f"{rows[-1].get('tokens')} tokens/step, peak {max(r.get('peak_mem_bytes', 0) for r in rows) / 2**30:.2f} GiB, "
      f"loss {rows[0]['loss']:.4f} -> {rows[-1]['loss']:.4f}")
PY
}

# --- liger-train: reference model, then precomputed ---------------------------------
for reference in model precomputed; do
  has $reference || continue
  in_time "liger-train reference: $reference" || continue
  rm -rf "$OUT/liger_$reference"
  code=0
  timeout "$RUN_TIMEOUT_S" "$BUILD_DIR/apps/liger-train" --config configs/bench/dpo_1b_h100.yaml \
    --set training.steps="$STEPS" --set preference.reference=$reference --set logging.every=5 \
    --set logging.progress_bar=off --set checkpoint.output_dir="$OUT/liger_$reference" "${extra[@]}" \
    > "$OUT/liger_$reference.log" 2>&1 || code=$?
  if [[ $code -eq 0 ]]; then
    say "liger-train reference: $reference: $(summary "$OUT/liger_$reference/metrics.jsonl")"
  else
    status=1
    [[ $code -eq 124 ]] && code="124: timed out after RUN_TIMEOUT_S=$RUN_TIMEOUT_S s"
    say "liger-train reference: $reference: FAILED (exit $code, $OUT/liger_$reference.log): $(tail -n 1 "$OUT/liger_$reference.log" | cut -c1-300)"
  fi
done

# --- the baselines' Python: the carried wheels on PYTHONPATH -------------------------
install_wheels() {  # install_wheels WHAT WHEEL...: pip --no-deps --no-index into LIGER_SITE, one line
  local what=$1
  shift
  if "$LIGER_PYTHON" -m pip install -q --no-deps --no-index --upgrade --target "$LIGER_SITE" "$@" \
    > "$OUT/pip_$what.log" 2>&1; then
    say "installed $what: $(basename -a "$@" | tr '\n' ' ')"
  else
    say "pip install of $what FAILED ($OUT/pip_$what.log): $(tail -n 1 "$OUT/pip_$what.log" | cut -c1-200)"
  fi
}
export PYTHONPATH=$LIGER_SITE${PYTHONPATH:+:$PYTHONPATH}
importable() { "$LIGER_PYTHON" -c "import $1" > /dev/null 2>&1; }
liger=0
if has trl || has loop; then
  liger_wheels=(wheels/liger_kernel-*.whl)
  if ! importable liger_kernel && [[ -f ${liger_wheels[0]} ]]; then
    install_wheels liger-kernel "${liger_wheels[0]}"
  fi
  if has trl && ! importable "trl, datasets, accelerate"; then
    trl_wheels=()
    for name in trl accelerate datasets pyarrow pandas python_dateutil dill multiprocess xxhash fsspec; do
      for file in wheels/"$name"-*.whl; do [[ -f $file ]] && trl_wheels+=("$file"); done
    done
    if [[ ${#trl_wheels[@]} -gt 0 ]]; then install_wheels trl "${trl_wheels[@]}"; fi
  fi
  importable liger_kernel && liger=1 || liger=0
fi

baseline_summary() {  # a baseline's JSON -> one line
  python3 - "$1" <<'PY' 2> /dev/null || echo "unreadable JSON: $1"
import json, sys
d = json.load(open(sys.argv[1]))
if d.get("oom"):
    print(f"{d['baseline']}: OUT OF MEMORY: {d['oom']}")
else:
    print(f"{d['baseline']}: {d['tokens_per_s']:,.0f} tokens/s, peak {d['peak_mem_gib']:.2f} GiB, "
          f"loss {d['loss_first']:.4f} -> {d['loss_last']:.4f}, {d['versions']}")
PY
}
baseline() {  # baseline LABEL NAME SCRIPT ARGS...: one baseline run, NAME.json and NAME.log in $OUT
  local label=$1 name=$2 script=$3 code=0
  shift 3
  in_time "$label" || return 0
  rm -f "$OUT/$name.json"
  timeout "$RUN_TIMEOUT_S" "$LIGER_PYTHON" "scripts/baselines/$script" --preset llama3_1b --pairs 8 --seq-len 1024 \
    --steps "$BASE_STEPS" --warmup "$WARMUP" "$@" "${base_extra[@]}" --json "$OUT/$name.json" \
    > "$OUT/$name.log" 2>&1 || code=$?
  if [[ $code -eq 0 && -f $OUT/$name.json ]]; then
    say "$name: $(baseline_summary "$OUT/$name.json")"
  else
    [[ $code -eq 124 ]] && code="124: timed out after RUN_TIMEOUT_S=$RUN_TIMEOUT_S s"
    say "$label: FAILED (exit $code, $OUT/$name.log): $(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1 | cut -c1-300)"
  fi
}
if has trl; then
  if [[ $liger == 1 ]] && importable "trl, datasets, accelerate"; then
    baseline "TRL DPOTrainer + Liger-Kernel" trl_liger trl_dpo_liger.py
  elif [[ $liger == 1 ]]; then
    say "TRL DPOTrainer + Liger-Kernel: skipped ($LIGER_PYTHON cannot import trl, datasets and accelerate; carry the wheels of scripts/baselines/fetch_dpo_wheels.sh)"
  else
    say "TRL DPOTrainer + Liger-Kernel: skipped (no Liger-Kernel: put its wheel under wheels/)"
  fi
fi
if has loop; then
  if [[ $liger == 1 ]]; then
    baseline "HF + Liger-Kernel DPO loop (no TRL)" hf_loop_liger hf_dpo_liger_loop.py
  else
    say "HF + Liger-Kernel DPO loop: Liger-Kernel cannot be imported: the plain PyTorch loop instead"
    baseline "HF DPO loop, no Liger-Kernel" hf_loop hf_dpo_liger_loop.py --no-liger
  fi
fi

# --- the table ----------------------------------------------------------------------
python3 bench/e2e_dpo_table.py "$OUT" "$WARMUP" > "$OUT/e2e_dpo.md" || status=1
say "table: $OUT/e2e_dpo.md ($(($(date +%s) - start)) s in all)"
tee -a "$S" < "$OUT/e2e_dpo.md"
exit "$status"
