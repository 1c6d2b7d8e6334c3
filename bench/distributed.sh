#!/usr/bin/env bash
# On a 2-GPU machine (device tool, kind nvidia-h200-x2): build, then
#   a) 2 ranks through scripts/launch.sh on Llama-3-8B shapes (random init),
#      bf16 compute, fp32 master, fused loss, activation checkpointing;
#   b) the same as two "nodes" on one host (--nnodes 2, one GPU each);
#   c) the PyTorch FSDP2 + HF transformers baseline (and + Liger-Kernel when
#      its wheel is carried in under wheels/), same shapes, batch and sequence.
# Results (metrics, logs, JSON) go to $OUT.
#   bash bench/distributed.sh [STEPS] [PARTS]   PARTS: any of a l b c (default "a l b c";
#   l = a with kernels.flce_mode=lean)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
STEPS=${1:-20}
PARTS=${2:-"a l b c"}
BUILD=build-gpu
export PATH=/usr/local/cuda/bin:$PATH
# Keep NVLink multicast off (shared hosts).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/env.txt"
TORCH_CMAKE=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" -DBUILD_TESTING=OFF \
  -DLIGER_CUDA=ON -DLIGER_PCRE2=OFF -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" > "$OUT/configure.log" 2>&1
ninja -C "$BUILD" -j16 liger-train > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"

run8b=(--config configs/llama3_8b.yaml --set training.steps="$STEPS" --set training.gradient_accumulation_steps=1
       --set training.micro_batch_size=1 --set data.seq_len=8192 --set training.activation_checkpointing=full
       --set training.warmup_steps=2 --set logging.every=1 --set checkpoint.every=0 --set checkpoint.save_final=false
       --set logging.progress_bar=off)

summary() {  # metrics.jsonl -> median tokens/s per GPU after 3 warm-up steps, peak GiB
  python3 - "$1" "$2" <<'PY'
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

if [[ $PARTS == *a* ]]; then
  timeout 300 bash scripts/launch.sh --nproc 2 -- "$BUILD/apps/liger-train" "${run8b[@]}" \
    --set checkpoint.output_dir="$OUT/a" > "$OUT/a.log" 2>&1
  echo "a) launch.sh --nproc 2: exit $?  $(summary "$OUT/a/metrics.jsonl" 2)" | tee -a "$OUT/summary.txt"
fi
if [[ $PARTS == *l* ]]; then  # a) with the lean fused loss (no [vocab, hidden] fp32 buffer)
  timeout 300 bash scripts/launch.sh --nproc 2 -- "$BUILD/apps/liger-train" "${run8b[@]}" --set kernels.flce_mode=lean \
    --set checkpoint.output_dir="$OUT/l" > "$OUT/l.log" 2>&1
  echo "l) launch.sh --nproc 2, flce lean: exit $?  $(summary "$OUT/l/metrics.jsonl" 2)" | tee -a "$OUT/summary.txt"
fi
if [[ $PARTS == *b* ]]; then
  port=$((20000 + RANDOM % 20000))
  for node in 0 1; do
    CUDA_VISIBLE_DEVICES=$node timeout 300 bash scripts/launch.sh --nproc 1 --nnodes 2 --node-rank $node \
      --master 127.0.0.1:$port -- "$BUILD/apps/liger-train" "${run8b[@]}" --set training.steps=$((STEPS / 2 + 3)) \
      --set checkpoint.output_dir="$OUT/b" > "$OUT/b.$node.log" 2>&1 &
  done
  wait
  echo "b) two nodes (--nnodes 2): $(summary "$OUT/b/metrics.jsonl" 2)" | tee -a "$OUT/summary.txt"
fi
if [[ $PARTS == *c* ]]; then
  timeout 300 torchrun --standalone --nproc_per_node 2 scripts/baselines/fsdp2_hf_llama.py --preset llama3_8b \
    --seq-len 8192 --micro-batch 1 --steps "$STEPS" --warmup 3 --json "$OUT/fsdp2.json" > "$OUT/fsdp2.log" 2>&1
  echo "c) FSDP2 + HF: $(cat "$OUT/fsdp2.json" 2>/dev/null || tail -3 "$OUT/fsdp2.log")" | tee -a "$OUT/summary.txt"
  if ls wheels/liger_kernel-*.whl > /dev/null 2>&1; then
    pip install --no-deps --target /tmp/liger wheels/liger_kernel-*.whl > /dev/null 2>&1
    PYTHONPATH=/tmp/liger timeout 300 torchrun --standalone --nproc_per_node 2 scripts/baselines/fsdp2_hf_llama.py \
      --preset llama3_8b --seq-len 8192 --micro-batch 1 --steps "$STEPS" --warmup 3 --liger \
      --json "$OUT/fsdp2_liger.json" > "$OUT/fsdp2_liger.log" 2>&1
    echo "c) FSDP2 + HF + Liger: $(cat "$OUT/fsdp2_liger.json" 2>/dev/null || tail -3 "$OUT/fsdp2_liger.log")" | tee -a "$OUT/summary.txt"
  fi
fi
cat "$OUT/summary.txt"
