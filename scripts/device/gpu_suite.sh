#!/usr/bin/env bash
# Everything the GPU machine is for, in one device call: build (CUDA on),
# every test (the GPU ones run here), liger-bench --json, a bf16 convergence
# run of the tiny config with the fused kernels vs the reference, and the
# bf16 HF parity. Results in $OUT:
#   env.txt ctest.log bench.json bench.log convergence.png convergence.json train_gpu.log
#   bash scripts/device/gpu_suite.sh [CONVERGENCE_STEPS]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
STEPS=${1:-150}
BUILD=build-gpu
export PATH=/usr/local/cuda/bin:$PATH
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
{
  date -u
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
} > "$OUT/env.txt" 2>&1
TORCH_CMAKE=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" \
  -DLIGER_CUDA=ON -DLIGER_PCRE2=${LIGER_PCRE2:-OFF} -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" > "$OUT/build.log" 2>&1
ninja -C "$BUILD" -j16 >> "$OUT/build.log" 2>&1 || { echo "BUILD FAILED"; grep -E "error|FAILED" -A3 "$OUT/build.log" | head -40; exit 1; }
echo "build: $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"

(cd "$BUILD" && ctest --output-on-failure --timeout 300 -E "test_convergence" > "$OUT/ctest.log" 2>&1)
tail -25 "$OUT/ctest.log"

# bf16 only: the fp32 reference rows of the losses alone take minutes.
timeout 400 "$BUILD/apps/liger-bench" --dtype bf16 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
cat "$OUT/bench.log" | tail -40

# bf16 convergence, fused (cuda kernels + fused loss) vs reference, on the GPU.
LIGER_BUILD_DIR=$BUILD bash scripts/convergence.sh configs/tiny.yaml --steps "$STEPS" --out /tmp/conv_gpu \
  --set training.device=cuda --set model.dtype=bf16 --loss-rtol 2e-2 --param-noise 2 2>&1 | tail -6
cp /tmp/conv_gpu/losses.tsv "$OUT/convergence_losses.tsv" 2>/dev/null  # no gnuplot there: plot it here
cp /tmp/conv_gpu/summary.json "$OUT/convergence.json" 2>/dev/null
grep -E "kernel|step (1|50|100|150)/" /tmp/conv_gpu/fused.log > "$OUT/train_gpu.log" 2>/dev/null

# HF parity (bf16 and fp32 on CUDA); its logs are summarised here.
OUT=/tmp/parity bash scripts/device/hf_parity_bf16.sh 2>&1 | tail -30
