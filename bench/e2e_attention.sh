#!/usr/bin/env bash
# Attention variants end to end on ONE GPU, LoRA rank 16 on all seven
# projections (configs/llama3_8b_lora.yaml), 8192 tokens per micro-batch,
# random weights, bf16, CUDA graphs:
#   mistral_window_isolated  Mistral-7B shapes, every layer a 4096 window, packed
#                            documents attended in isolation (data.packing: isolated)
#   mistral_window           the same window, cross-document packing (no document
#                            mask: the warp-specialized passes with dq fused in)
#   mistral_plain            the same shapes with plain causal attention and
#                            cross-document packing (SDPA): the yardstick
#   gemma2_9b                Gemma-2-9B shapes (softcap 50 everywhere, a 4096
#                            window on every other layer), documents isolated
# Each run reports the median tokens/s after its warm-up steps, the peak memory,
# and the attention notes (which path served each variant).
#
#   bash bench/e2e_attention.sh [STEPS]          # STEPS default 12
# Environment: OUT=out, BUILD_DIR=build-gpu (bench/build.sh's variables apply),
#   LIGER_PYTHON=python3, RUNS="mistral_window_isolated mistral_plain gemma2_9b"
#   (the runs to make, in this order). The documents are the shipped Shakespeare text cut into
#   pieces of about 2,400 characters (about 10 documents per 8192-token window).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STEPS=${1:-12}
BUILD_DIR=${BUILD_DIR:-build-gpu}
LIGER_PYTHON=${LIGER_PYTHON:-python3}
S=$OUT/summary_attention.txt
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$S"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), STEPS=$STEPS" >> "$S"
TARGETS=liger-train bash bench/build.sh "$BUILD_DIR" >> "$S" 2>&1 || { cat "$S"; exit 1; }

docs=$OUT/shakespeare_docs.jsonl
"$LIGER_PYTHON" - "$docs" << 'PY'
import json, sys
text = open("data/samples/tinyshakespeare.txt").read()
with open(sys.argv[1], "w") as out:
    for i in range(0, len(text), 2400):
        out.write(json.dumps({"text": text[i:i + 2400]}) + "\n")
PY

status=0
run() {  # run NAME ARGS...: one liger-train run, its summary line
  local name=$1 code=0
  shift
  "$BUILD_DIR/apps/liger-train" --config configs/llama3_8b_lora.yaml --set training.steps="$STEPS" \
    --set training.gradient_accumulation_steps=1 --set training.cuda_graphs=true \
    --set data.seq_len=8192 --set data.train="[$docs]" --set data.format=jsonl_text \
    --set logging.every=1 --set logging.progress_bar=off --set checkpoint.every=0 \
    --set checkpoint.save_final=false --set checkpoint.output_dir="$OUT/$name" "$@" \
    > "$OUT/$name.log" 2>&1 || code=$?
  [[ $code -eq 0 ]] || status=1
  {
    echo "$name: exit $code $("$LIGER_PYTHON" - "$OUT/$name/metrics.jsonl" << 'PY' 2> /dev/null || echo "(no metrics)"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steady = rows[4:] or rows
print(json.dumps({"steps": len(rows), "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in steady)),
                  "peak_gib": round(max(r["peak_mem_bytes"] for r in rows) / 2**30, 2),
                  "loss_first": round(rows[0]["loss"], 4), "loss_last": round(rows[-1]["loss"], 4)}))
PY
)"
    { grep -E "attention \(|memory per GPU" "$OUT/$name.log" || true; } | cut -c1-220 | head -n 8
    [[ $code -eq 0 ]] || tail -n 3 "$OUT/$name.log" | cut -c1-400
  } >> "$S"
}

RUNS=${RUNS:-"mistral_window_isolated mistral_plain gemma2_9b"}
for name in $RUNS; do
  case $name in
    mistral_window_isolated) run "$name" --set model.preset=mistral_7b --set data.packing=isolated ;;
    mistral_window) run "$name" --set model.preset=mistral_7b ;;
    mistral_plain) run "$name" --set model.preset=mistral_7b --set model.sliding_window=0 ;;
    gemma2_9b) run "$name" --set model.preset=gemma2_9b --set data.packing=isolated ;;
    *)
      echo "RUNS: unknown run '$name' (mistral_window_isolated, mistral_window, mistral_plain, gemma2_9b)" >&2
      exit 2
      ;;
  esac
done
cat "$S"
exit $status
