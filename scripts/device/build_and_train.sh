#!/usr/bin/env bash
# On the GPU machine (device tool): configure with CUDA, build with ninja, run
# the tests, then train the tiny config on the GPU. Logs go to $OUT (or out/).
#   bash scripts/device/build_and_train.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
STEPS=${1:-20}
BUILD=build-gpu
export PATH=/usr/local/cuda/bin:$PATH
# Keep NVLink multicast off (shared hosts).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())' | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/env.txt"
TORCH_CMAKE=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')

start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" \
  -DLIGER_CUDA=ON -DLIGER_PCRE2=${LIGER_PCRE2:-OFF} -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" 2>&1 | tee "$OUT/configure.log" | tail -3
ninja -C "$BUILD" -j16 2>&1 | tee "$OUT/build.log" | tail -3
echo "build: $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"

(cd "$BUILD" && ctest --output-on-failure --timeout 600 2>&1) | tee "$OUT/ctest.log" | tail -15

"$BUILD/apps/liger-train" --config configs/tiny.yaml --set training.device=cuda \
  --set training.steps="$STEPS" --set logging.every=5 --set checkpoint.output_dir="$OUT/tiny_gpu" \
  --set checkpoint.every=0 --set checkpoint.save_final=false 2>&1 | tee "$OUT/train_gpu.log" | tail -12
