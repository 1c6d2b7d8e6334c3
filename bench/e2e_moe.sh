#!/usr/bin/env bash
# End-to-end speed and memory of a sparse MoE model on ONE GPU:
# configs/bench/moe_h100.yaml (Mixtral shapes: 8 experts, 2 per token, hidden
# 2048, 16 layers, expert FFN 5632, vocab 32000; 4.73 B parameters, random
# init; micro-batch 4 x 2048 tokens; bf16 parameters, gradients and AdamW
# state) with liger-train, beside HF transformers + Liger-Kernel and HF alone
# (scripts/baselines/hf_moe_liger.py, the same shapes), then a markdown table
# against the target: liger-train >= 1.5x HF + Liger-Kernel's tokens/s at no
# more peak memory. Every run takes STEPS steps and reports the median tokens/s
# of the steps after 5 warm-up steps and its peak memory. Last, the bf16
# convergence check of the tiny Mixtral (fused kernels vs reference).
#
#   bash bench/e2e_moe.sh [STEPS [PARTS]]      # STEPS default 30
#     e.g. OUT=/tmp/moe bash bench/e2e_moe.sh
#          SKIP_BASELINES=1 bash bench/e2e_moe.sh 30      # liger-train (+ convergence) only
#          bash bench/e2e_moe.sh 30 "liger hf_liger"
#
# PARTS, run in this order (default "liger hf_liger hf convergence"):
#   liger        liger-train --config configs/bench/moe_h100.yaml
#   hf_liger     HF + Liger-Kernel (its wheel under wheels/), bf16; after an
#                out-of-memory, again with gradient checkpointing
#   hf           HF alone, bf16, the experts implementation transformers picks
#                (grouped_mm where torch._grouped_mm runs); the same fallback
#   hf_eager     HF alone with its loop over experts (--experts eager): not in
#                the default list
#   convergence  scripts/convergence.sh configs/tiny_mixtral.yaml in bf16 on the
#                GPU, CONVERGENCE_STEPS steps (fused vs reference kernels),
#                with the load-balancing loss (bench/README.md)
# Environment (all optional):
#   OUT=out               results: e2e_moe.md (the table), summary.txt, the logs,
#                         JSON and run folders
#   SKIP_BASELINES=1      leaves out hf_liger, hf and hf_eager
#   SKIP_BUILD=1          uses BUILD_DIR as it is
#   BUILD_DIR=build-gpu   built with bench/build.sh (its variables apply)
#   LIGER_PYTHON=python3  the Python with torch and transformers (and triton) for HF
#   HF_STEPS=STEPS        steps of the HF runs
#   CONFIG=configs/bench/moe_h100.yaml   the liger run's config
#   EXTRA="..."           more liger-train arguments for the liger run
#   HF_EXTRA="..."        more hf_moe_liger.py arguments (they win), e.g. a smoke
#                         run without a GPU: CONFIG=configs/tiny_mixtral.yaml
#                         EXTRA="--set training.device=cpu" HF_EXTRA="--device cpu --preset tiny"
#   WHEEL=wheels/liger_kernel-*.whl   installed with pip --no-deps --no-index
#                         into LIGER_SITE=/tmp/e2e_moe_liger, put on PYTHONPATH
#   RUN_TIMEOUT_S=240     a run still going after this is stopped (a line says so)
#   DEADLINE_S=540        no run goes past this many seconds after the start
#                         (runs are cut to fit, skipped when < 30 s are left);
#                         0 = no deadline. The table is written in any case.
#   TRITON_CACHE_DIR=BUILD_DIR/baseline_kernel_cache, TRITON_CACHE_AUTOTUNING=1: Liger's
#                         autotuned choices kept there (bench/ops_vs_liger.sh
#                         writes the same place), so HF + Liger-Kernel does not
#                         autotune its MoE kernels again
#   CONVERGENCE_STEPS=100
#   CONVERGENCE_EXTRA="..."  more scripts/convergence.sh arguments (a later --set wins)
#   CONVERGENCE_WORK=/tmp/e2e_moe_convergence   its run folders (checkpoints: kept
#                         out of $OUT; its summary.json and losses.tsv are copied in)
# Output: every line printed is also in $OUT/summary.txt; the table in
# $OUT/e2e_moe.md. Exit 1 when a run failed (an HF out-of-memory that
# checkpointing fixed does not count), 0 otherwise; missed targets do not change it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STEPS=${1:-30}
PARTS=${2:-"liger hf_liger hf convergence"}
if [[ ${SKIP_BASELINES:-0} == 1 ]]; then
  kept=""
  for part in $PARTS; do [[ $part == hf* ]] || kept+=" $part"; done
  PARTS=$kept
fi
has() { [[ " $PARTS " == *" $1 "* ]]; }
[[ $STEPS =~ ^[0-9]+$ && $STEPS -gt 5 ]] || { echo "e2e_moe.sh: STEPS '$STEPS' must be a number above 5 (the warm-up)" >&2; exit 2; }
HF_STEPS=${HF_STEPS:-$STEPS}
BUILD_DIR=${BUILD_DIR:-build-gpu}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$BUILD_DIR/baseline_kernel_cache}  # from the repository root, as every run
export TRITON_CACHE_AUTOTUNING=${TRITON_CACHE_AUTOTUNING:-1}
LIGER_PYTHON=${LIGER_PYTHON:-python3}
LIGER_SITE=${LIGER_SITE:-/tmp/e2e_moe_liger}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-240}
DEADLINE_S=${DEADLINE_S:-540}
CONVERGENCE_STEPS=${CONVERGENCE_STEPS:-100}
read -r -a conv_extra <<< "${CONVERGENCE_EXTRA:-}"
CONVERGENCE_WORK=${CONVERGENCE_WORK:-/tmp/e2e_moe_convergence}
CONFIG=${CONFIG:-configs/bench/moe_h100.yaml}
read -r -a extra <<< "${EXTRA:-}"
read -r -a hf_extra <<< "${HF_EXTRA:-}"
S=$OUT/summary.txt
: > "$S"
status=0
start=$(date +%s)
say() { echo "$*" | tee -a "$S"; }

# budget LABEL: prints the seconds the next run may take (RUN_TIMEOUT_S, cut to
# the deadline); false, with a line, when too little is left.
budget() {
  local left=$RUN_TIMEOUT_S
  if [[ $DEADLINE_S -gt 0 ]]; then
    left=$((DEADLINE_S - ($(date +%s) - start)))
    if [[ $left -lt 30 ]]; then
      say "$1: skipped (DEADLINE_S=$DEADLINE_S: $left s left)" >&2
      return 1
    fi
    [[ $left -lt $RUN_TIMEOUT_S ]] || left=$RUN_TIMEOUT_S
  fi
  echo "$left"
}
ended() {  # ended CODE SECONDS: how a run ended, in words
  case $1 in
    0) echo "exit 0" ;;
    124 | 137) echo "STOPPED after $2 s (timeout)" ;;
    *) echo "FAILED, exit $1" ;;
  esac
}

gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2> /dev/null | head -n 1 || echo "no nvidia-smi")
say "GPU: $gpu; commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown); $(date -u '+%Y-%m-%d %H:%M UTC');" \
  "STEPS=$STEPS, PARTS=\"${PARTS# }\", CONFIG=$CONFIG${EXTRA:+, EXTRA=\"$EXTRA\"}${HF_EXTRA:+, HF_EXTRA=\"$HF_EXTRA\"}"

if [[ ${SKIP_BUILD:-0} != 1 ]] && (has liger || has convergence); then
  targets="liger-train"
  has convergence && targets="liger-train liger-compare"
  if ! TARGETS=$targets bash bench/build.sh "$BUILD_DIR" > "$OUT/build.log" 2>&1; then
    say "build FAILED ($OUT/build.log): $(grep -m 1 -E 'error|FAILED' "$OUT/build.log" || tail -n 1 "$OUT/build.log")"
    exit 1
  fi
  say "$(tail -n 1 "$OUT/build.log")"
fi

# --- liger-train ---------------------------------------------------------------
if has liger && t=$(budget "liger-train"); then
  code=0
  rm -rf "$OUT/liger"
  timeout -k 20 "$t" "$BUILD_DIR/apps/liger-train" --config "$CONFIG" \
    --set training.steps="$STEPS" --set logging.progress_bar=off --set checkpoint.output_dir="$OUT/liger" \
    "${extra[@]}" > "$OUT/liger.log" 2>&1 || code=$?
  [[ $code -eq 0 ]] || status=1
  say "liger-train bf16: $(ended $code "$t"): $(python3 bench/e2e_moe_table.py line "$OUT/liger/metrics.jsonl")"
  { grep -E "memory per GPU|kernel moe" "$OUT/liger.log" | cut -c1-300 | head -n 3 | tee -a "$S"; } || true
  [[ $code -eq 0 ]] || { tail -n 2 "$OUT/liger.log" | cut -c1-400 | tee -a "$S"; } || true
fi

# --- HF transformers (+ Liger-Kernel) ------------------------------------------------
hf_result=""
hf() {  # hf LABEL NAME ARGS...: one hf_moe_liger.py run into $OUT/NAME.{json,log}; hf_result: ok, oom, failed, skipped
  local label=$1 name=$2 code=0 t
  shift 2
  hf_result=skipped
  t=$(budget "$label") || return 0
  hf_result=failed
  rm -f "$OUT/$name.json"
  mkdir -p "$TRITON_CACHE_DIR"
  timeout -k 20 "$t" "$LIGER_PYTHON" scripts/baselines/hf_moe_liger.py --preset moe_h100 --micro-batch 4 \
    --seq-len 2048 --steps "$HF_STEPS" --warmup 5 "$@" "${hf_extra[@]}" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1 || code=$?
  if [[ -f $OUT/$name.json ]]; then
    say "$label: $(ended $code "$t"): $(python3 bench/e2e_moe_table.py line "$OUT/$name.json")"
  else
    say "$label: $(ended $code "$t"), no JSON: $(grep -v '^\s' "$OUT/$name.log" | tail -n 1 | cut -c1-300)"
  fi
  if grep -q '"oom": "' "$OUT/$name.json" 2> /dev/null; then
    hf_result=oom
  elif [[ $code -eq 0 ]]; then
    hf_result=ok
  fi
}
hf_fit() {  # hf_fit LABEL NAME ARGS...: without checkpointing, then with it after an out-of-memory
  local label=$1 name=$2
  shift 2
  hf "$label" "$name" "$@"
  [[ $hf_result == oom ]] && hf "$label, gradient checkpointing" "$name" "$@" --ac
  [[ $hf_result == ok || $hf_result == skipped ]] || status=1
}

if has hf_liger; then
  if [[ -n ${WHEEL:-} ]]; then wheels=("$WHEEL"); else wheels=(wheels/liger_kernel-*.whl); fi
  if [[ ! -f ${wheels[0]} ]]; then
    say "HF + Liger-Kernel: skipped: no Liger-Kernel wheel at '${wheels[0]}' (put liger_kernel-0.8.5-py3-none-any.whl under wheels/ or set WHEEL)"
    status=1
  elif ! "$LIGER_PYTHON" -m pip install -q --no-deps --no-index --upgrade --target "$LIGER_SITE" "${wheels[0]}" \
    > "$OUT/pip_liger.log" 2>&1; then
    say "HF + Liger-Kernel: skipped: pip install of ${wheels[0]} failed: $(tail -n 1 "$OUT/pip_liger.log")"
    status=1
  else
    PYTHONPATH=$LIGER_SITE${PYTHONPATH:+:$PYTHONPATH} hf_fit "HF + Liger-Kernel bf16" hf_liger --liger
  fi
fi
if has hf; then hf_fit "HF bf16" hf; fi
if has hf_eager; then hf_fit "HF bf16, loop over experts" hf_eager --experts eager; fi

# --- the table -----------------------------------------------------------------------
if has liger || has hf_liger || has hf || has hf_eager; then
  table=(--liger "$OUT/liger/metrics.jsonl" --hf-liger "$OUT/hf_liger.json")
  has hf && table+=(--hf "$OUT/hf.json")
  has hf_eager && table+=(--hf-eager "$OUT/hf_eager.json")
  {
    echo "GPU: $gpu; commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown); $(date -u '+%Y-%m-%d');" \
      "liger-train --config $CONFIG, HF: hf_moe_liger.py --preset moe_h100 --micro-batch 4 --seq-len 2048;" \
      "$STEPS steps, median tokens/s after 5 warm-up steps${EXTRA:+, EXTRA=\"$EXTRA\"}${HF_EXTRA:+, HF_EXTRA=\"$HF_EXTRA\"}"
    echo
    python3 bench/e2e_moe_table.py table "${table[@]}"
  } > "$OUT/e2e_moe.md" || status=1
  echo | tee -a "$S"
  tee -a "$S" < "$OUT/e2e_moe.md"
  echo | tee -a "$S"
fi

# --- bf16 convergence of the tiny Mixtral -------------------------------------------
if has convergence && [[ ! -x $BUILD_DIR/apps/liger-compare ]]; then
  say "convergence: skipped (no $BUILD_DIR/apps/liger-compare: build it, or run without SKIP_BUILD=1)"
  status=1
elif has convergence && t=$(budget "convergence"); then
  code=0
  LIGER_BUILD_DIR=$BUILD_DIR timeout -k 20 "$t" bash scripts/convergence.sh configs/tiny_mixtral.yaml \
    --steps "$CONVERGENCE_STEPS" --out "$CONVERGENCE_WORK" --set training.device=cuda --set model.dtype=bf16 \
    --loss-rtol 2e-2 --param-noise 2 --noise-split 2 "${conv_extra[@]}" \
    > "$OUT/convergence.log" 2>&1 || code=$?
  [[ $code -eq 0 ]] || status=1
  cp "$CONVERGENCE_WORK/summary.json" "$OUT/convergence.json" 2> /dev/null || true
  cp "$CONVERGENCE_WORK/losses.tsv" "$OUT/convergence_losses.tsv" 2> /dev/null || true
  verdict=$(grep -E '^\[convergence\] (OK|DIVERGED)' "$OUT/convergence.log" || echo "no verdict")
  say "convergence, tiny Mixtral bf16, $CONVERGENCE_STEPS steps: $(ended $code "$t"): ${verdict#\[convergence\] }"
  { { grep -E "losses:|final parameters:|failed" "$OUT/convergence.log" || tail -n 3 "$OUT/convergence.log"; } |
    cut -c1-400 | tee -a "$S"; } || true
fi
say "e2e_moe.sh: $(($(date +%s) - start)) s, exit $status; results in $OUT"
exit "$status"
