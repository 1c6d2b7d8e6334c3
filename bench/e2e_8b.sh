#!/usr/bin/env bash
# Llama-3-8B on ONE GPU, end to end: LoRA (configs/llama3_8b_lora.yaml: rank 16 on
# all seven projections, micro-batch 1 x 4096 and 1 x 8192 tokens) and full
# fine-tuning (configs/llama3_8b.yaml as shipped: 8192 tokens, memory plan auto),
# liger-train beside HF transformers + PEFT (+ Liger-Kernel) and HF pure bf16 +
# Liger-Kernel (scripts/baselines/hf_llama_single.py). Random weights, bf16.
# Every run reports the median tokens/s after its warm-up steps, the peak memory
# and MFU (LoRA: 4 FLOPs per frozen matmul parameter and token, 6 per trained one);
# nvidia-smi samples power and SM clock meanwhile (the card slows at its power cap).
#
#   bash bench/e2e_8b.sh [STEPS [PARTS]]     # STEPS default 20 (LoRA runs)
#     e.g. bash bench/e2e_8b.sh 20
#          DEADLINE_S=560 bash bench/e2e_8b.sh 20 "lora hf_lora"
#
# PARTS, run in this order (default all): lora = liger-train LoRA at 4096 (with and
#   without GLU recompute) and 8192; hf_lora = HF + PEFT + Liger-Kernel and HF + PEFT
#   at 4096 and 8192 (each without activation checkpointing, then with it where the
#   first ran out of memory); full = liger-train full fine-tuning as shipped
#   (accumulation 8, FULL_STEPS steps) and with accumulation 1 + CUDA graphs;
#   hf_full = HF pure bf16 + Liger-Kernel + checkpointing at 8192 (or its OOM line).
# Environment (all optional):
#   OUT=out              results (summary.txt, logs, JSON, run folders)
#   BUILD_DIR=build-gpu  built with bench/build.sh (its variables apply)
#   BUILD=1              0: run the liger-train already in BUILD_DIR/apps (built
#                        elsewhere for this GPU) without configuring or building
#   LIGER_PYTHON=python3 the Python with torch, transformers and peft for HF
#   FULL_STEPS=6         optimizer steps of the full fine-tuning run as shipped
#   DEADLINE_S=0         N > 0: skip the runs that start after N seconds
#   FULL_EXTRA="..."     more liger-train arguments for the full runs, e.g.
#                        "--set training.memory_budget_gib=76" on a GPU larger than 80 GB
#   POWER_SAMPLE=1       0: no nvidia-smi sampling (power.csv, busy stretches by
#                        bench/power_stretches.py at the end of summary.txt)
# Carried files: wheels/liger_kernel-*.whl adds the + Liger-Kernel rows (as for
#   bench/e2e_1b.sh). Exit 1 when a liger-train run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STEPS=${1:-20}
PARTS=${2:-"lora hf_lora full hf_full"}
has() { [[ " $PARTS " == *" $1 "* ]]; }
FULL_STEPS=${FULL_STEPS:-6}
read -r -a full_extra <<< "${FULL_EXTRA:-}"
DEADLINE_S=${DEADLINE_S:-0}
BUILD_DIR=${BUILD_DIR:-build-gpu}
LIGER_PYTHON=${LIGER_PYTHON:-python3}
POWER_SAMPLE=${POWER_SAMPLE:-1}
S=$OUT/summary.txt
status=0
start=$(date +%s)
in_time() {  # in_time LABEL: false (and a line in the summary) once DEADLINE_S has passed
  if [[ $DEADLINE_S -gt 0 && $(($(date +%s) - start)) -ge $DEADLINE_S ]]; then
    echo "$1: skipped (past DEADLINE_S=$DEADLINE_S)" >> "$S"
    return 1
  fi
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$S"
echo "commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC'), STEPS=$STEPS, PARTS=\"$PARTS\"${FULL_EXTRA:+, FULL_EXTRA=\"$FULL_EXTRA\"}" >> "$S"
if has lora || has full; then
  if [[ ${BUILD:-1} == 0 ]]; then
    [[ -x $BUILD_DIR/apps/liger-train ]] || { echo "BUILD=0: no $BUILD_DIR/apps/liger-train" >&2; exit 1; }
  else
    TARGETS=liger-train bash bench/build.sh "$BUILD_DIR" >> "$S" 2>&1 || { cat "$S"; exit 1; }
  fi
fi
source bench/power_sampling.sh
power_sampling_start "$OUT"

summary() {  # summary METRICS.jsonl WARMUP: median tokens/s after WARMUP rows, peak GiB, mfu
  python3 - "$1" "$2" <<'PY' 2> /dev/null || echo "(no metrics: $1)"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steady = rows[int(sys.argv[2]):] or rows
print(json.dumps({"steps": len(rows), "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in steady)),
                  "peak_gib": round(max(r["peak_mem_bytes"] for r in rows) / 2**30, 2),
                  "mfu": round(statistics.median(r.get("mfu", 0) for r in steady), 4),
                  "loss_first": round(rows[0]["loss"], 4), "loss_last": round(rows[-1]["loss"], 4)}))
PY
}

liger() {  # liger LABEL NAME WARMUP ARGS...: one liger-train run into $OUT/NAME{,.log}
  local label=$1 name=$2 warmup=$3 code=0
  shift 3
  in_time "$label" || return 0
  "$BUILD_DIR/apps/liger-train" "$@" --set logging.every=1 --set logging.progress_bar=off \
    --set checkpoint.every=0 --set checkpoint.save_final=false \
    --set checkpoint.output_dir="$OUT/$name" > "$OUT/$name.log" 2>&1 || code=$?
  [[ $code -eq 0 ]] || status=1
  {
    echo "$label: exit $code $(summary "$OUT/$name/metrics.jsonl" "$warmup")"
    { grep -E "memory plan|memory per GPU|adapter|LoRA" "$OUT/$name.log" || true; } | cut -c1-300 | head -n 6
    [[ $code -eq 0 ]] || tail -n 3 "$OUT/$name.log" | cut -c1-400
  } >> "$S"
}

hf() {  # hf LABEL NAME ARGS...: one hf_llama_single.py run; prints "oom" when it ran out of memory
  local label=$1 name=$2 code=0
  shift 2
  in_time "$label" || return 0
  "$LIGER_PYTHON" scripts/baselines/hf_llama_single.py --preset llama3_8b --micro-batch 1 --warmup 5 "$@" \
    --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1 || code=$?
  echo "$label: $(tr -d '\n' 2> /dev/null < "$OUT/$name.json" || echo "exit $code, no JSON: $(tail -n 1 "$OUT/$name.log")")" >> "$S"
  if grep -q '"oom": "' "$OUT/$name.json" 2> /dev/null; then echo oom; fi
}
hf_fit() {  # hf_fit LABEL NAME ARGS...: without activation checkpointing, then with it after an OOM
  local label=$1 name=$2
  shift 2
  if [[ $(hf "$label" "$name" "$@") == oom ]]; then hf "$label, checkpointing" "${name}_ac" "$@" --ac > /dev/null; fi
}

lora=(--config configs/llama3_8b_lora.yaml --set training.steps="$STEPS" --set training.gradient_accumulation_steps=1
      --set training.cuda_graphs=true)
if has lora; then
  liger "liger-train LoRA 4096, GLU recompute" lora_4096 5 "${lora[@]}"
  liger "liger-train LoRA 4096, no recompute" lora_4096_noac 5 "${lora[@]}" --set training.activation_checkpointing=none
  liger "liger-train LoRA 8192, GLU recompute" lora_8192 5 "${lora[@]}" --set data.seq_len=8192
fi

if has hf_lora; then
  wheels=(wheels/liger_kernel-*.whl)
  if [[ -f ${wheels[0]} ]]; then
    "$LIGER_PYTHON" -m pip install -q --no-deps --target /tmp/liger "${wheels[@]}" > /dev/null 2>&1 ||
      echo "pip install ${wheels[*]} failed" >> "$S"
  fi
  for seq in 4096 8192; do
    if [[ -f ${wheels[0]} ]]; then
      PYTHONPATH=/tmp/liger${PYTHONPATH:+:$PYTHONPATH} hf_fit "HF+PEFT+Liger LoRA $seq" hf_peft_liger_$seq \
        --lora 16 --liger --seq-len $seq --steps "$STEPS"
    fi
    hf_fit "HF+PEFT LoRA $seq" hf_peft_$seq --lora 16 --seq-len $seq --steps "$STEPS"
  done
fi

if has full; then
  liger "liger-train full 8192, as shipped (accumulation 8)" full_shipped 2 --config configs/llama3_8b.yaml \
    --set training.steps="$FULL_STEPS" --set training.warmup_steps=2 "${full_extra[@]}"
  liger "liger-train full 8192, accumulation 1, CUDA graphs" full_acc1 5 --config configs/llama3_8b.yaml \
    --set training.steps=$((STEPS > 12 ? 12 : STEPS)) --set training.warmup_steps=2 \
    --set training.gradient_accumulation_steps=1 --set training.cuda_graphs=true "${full_extra[@]}"
fi

if has hf_full; then
  if ls wheels/liger_kernel-*.whl > /dev/null 2>&1; then
    "$LIGER_PYTHON" -m pip install -q --no-deps --target /tmp/liger wheels/liger_kernel-*.whl > /dev/null 2>&1 || true
    PYTHONPATH=/tmp/liger${PYTHONPATH:+:$PYTHONPATH} hf "HF bf16+Liger full 8192, checkpointing" hf_full_liger \
      --precision bf16 --liger --ac --seq-len 8192 --steps 12 > /dev/null
  else
    echo "HF bf16+Liger full 8192: skipped (no wheels/liger_kernel-*.whl)" >> "$S"
  fi
fi

power_sampling_report "$OUT" "$S"
cat "$S"
exit "$status"
