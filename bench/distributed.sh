#!/usr/bin/env bash
# Distributed speed and memory on one host with 2 GPUs, Llama-3-8B shapes
# (configs/llama3_8b.yaml, random init), micro-batch 1 x 8192 tokens, bf16
# compute with fp32 master weights, fused loss, full activation checkpointing:
#   launch  2 ranks through scripts/launch.sh --nproc 2
#   lean    the same with kernels.flce_mode=lean (no [vocab, hidden] fp32 buffer)
#   nodes   the same as two "nodes" on one host (--nnodes 2, one GPU each)
#   fsdp2   the PyTorch FSDP2 + HF transformers baseline
#           (scripts/baselines/fsdp2_hf_llama.py), and + Liger-Kernel when its
#           wheel is under wheels/, same shapes, batch and sequence
# Each reports the median tokens/s per GPU after 3 warm-up steps and the peak
# memory per GPU.
#
#   bash bench/distributed.sh [STEPS [PARTS]]    # STEPS default 20
#     e.g. bash bench/distributed.sh 20 "launch fsdp2"
# PARTS: any of "launch lean nodes fsdp2" (default all).
# Environment (all optional):
#   OUT=out              results: summary.txt, env.txt, a log and a metrics folder per run
#   BUILD_DIR=build-gpu  built with bench/build.sh (its variables apply)
#   LIGER_PYTHON=python3 the Python with torch and transformers for the FSDP2 runs (torchrun)
# Carried files: wheels/liger_kernel-*.whl adds the FSDP2 + HF + Liger-Kernel run.
# Exit 1 when a run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
STEPS=${1:-20}
PARTS=${2:-"launch lean nodes fsdp2"}
has() { [[ " $PARTS " == *" $1 "* ]]; }
BUILD_DIR=${BUILD_DIR:-build-gpu}
LIGER_PYTHON=${LIGER_PYTHON:-python3}
S=$OUT/summary.txt
: > "$S"
status=0
# NVLink multicast off: the hosts these run on are shared.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  echo "commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown), $(date -u '+%Y-%m-%d %H:%M UTC')"
} > "$OUT/env.txt" 2>&1
TARGETS=liger-train bash bench/build.sh "$BUILD_DIR" 2>&1 | tee -a "$OUT/env.txt"

run8b=(--config configs/llama3_8b.yaml --set training.steps="$STEPS" --set training.gradient_accumulation_steps=1
       --set training.micro_batch_size=1 --set data.seq_len=8192 --set training.memory_plan=off
       --set training.precision=bf16-mixed --set training.activation_checkpointing=full
       --set training.warmup_steps=2 --set logging.every=1 --set checkpoint.every=0 --set checkpoint.save_final=false
       --set logging.progress_bar=off)

summary() {  # metrics.jsonl WORLD -> median tokens/s per GPU after 3 warm-up steps, peak GiB
  python3 - "$1" "$2" <<'PY' 2> /dev/null || echo "(no metrics: $1)"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
world = int(sys.argv[2])
steady = rows[3:] or rows
tps = statistics.median(r["tokens_per_s"] for r in steady) / world
peak = max(r["peak_mem_bytes"] for r in rows) / 2**30
print(json.dumps({"steps": len(rows), "tokens_per_s_per_gpu": round(tps), "peak_gib_per_gpu": round(peak, 2),
                  "loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"]}))
PY
}
report() { printf '%s\n' "$*" | tee -a "$S"; }

if has launch; then
  code=0
  timeout 300 bash scripts/launch.sh --nproc 2 -- "$BUILD_DIR/apps/liger-train" "${run8b[@]}" \
    --set checkpoint.output_dir="$OUT/launch" > "$OUT/launch.log" 2>&1 || code=$?
  [[ $code -eq 0 ]] || status=1
  report "launch: launch.sh --nproc 2: exit $code  $(summary "$OUT/launch/metrics.jsonl" 2)"
fi
if has lean; then
  code=0
  timeout 300 bash scripts/launch.sh --nproc 2 -- "$BUILD_DIR/apps/liger-train" "${run8b[@]}" --set kernels.flce_mode=lean \
    --set checkpoint.output_dir="$OUT/lean" > "$OUT/lean.log" 2>&1 || code=$?
  [[ $code -eq 0 ]] || status=1
  report "lean: launch.sh --nproc 2, kernels.flce_mode=lean: exit $code  $(summary "$OUT/lean/metrics.jsonl" 2)"
fi
if has nodes; then
  port=$((20000 + RANDOM % 20000))
  pids=()
  for node in 0 1; do
    CUDA_VISIBLE_DEVICES=$node timeout 300 bash scripts/launch.sh --nproc 1 --nnodes 2 --node-rank $node \
      --master 127.0.0.1:$port -- "$BUILD_DIR/apps/liger-train" "${run8b[@]}" --set training.steps=$((STEPS / 2 + 3)) \
      --set checkpoint.output_dir="$OUT/nodes" > "$OUT/nodes.$node.log" 2>&1 &
    pids+=($!)
  done
  codes=()
  for pid in "${pids[@]}"; do
    code=0
    wait "$pid" || code=$?
    codes+=("$code")
    [[ $code -eq 0 ]] || status=1
  done
  report "nodes: two nodes (--nnodes 2): exit ${codes[*]}  $(summary "$OUT/nodes/metrics.jsonl" 2)"
fi
if has fsdp2; then
  torchrun=("$LIGER_PYTHON" -m torch.distributed.run --standalone --nproc_per_node 2)
  fsdp2=(scripts/baselines/fsdp2_hf_llama.py --preset llama3_8b --seq-len 8192 --micro-batch 1 --steps "$STEPS" --warmup 3)
  code=0
  timeout 300 "${torchrun[@]}" "${fsdp2[@]}" --json "$OUT/fsdp2.json" > "$OUT/fsdp2.log" 2>&1 || code=$?
  [[ $code -eq 0 ]] || status=1
  report "fsdp2: FSDP2 + HF: $(cat "$OUT/fsdp2.json" 2> /dev/null || tail -n 3 "$OUT/fsdp2.log")"
  wheels=(wheels/liger_kernel-*.whl)
  if [[ -f ${wheels[0]} ]]; then
    "$LIGER_PYTHON" -m pip install -q --no-deps --target /tmp/liger "${wheels[@]}" > /dev/null 2>&1 ||
      report "pip install ${wheels[*]} failed"
    code=0
    PYTHONPATH=/tmp/liger${PYTHONPATH:+:$PYTHONPATH} timeout 300 "${torchrun[@]}" "${fsdp2[@]}" \
      --liger --json "$OUT/fsdp2_liger.json" > "$OUT/fsdp2_liger.log" 2>&1 || code=$?
    [[ $code -eq 0 ]] || status=1
    report "fsdp2: FSDP2 + HF + Liger: $(cat "$OUT/fsdp2_liger.json" 2> /dev/null || tail -n 3 "$OUT/fsdp2_liger.log")"
  fi
fi
exit "$status"
