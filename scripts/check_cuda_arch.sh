#!/usr/bin/env bash
# Compiles every CUDA kernel file (kernels/cuda/*.cu) for one more GPU
# architecture than the build's (default sm_80, the A100's): the Hopper-only
# paths (warpgroup MMA, TMA, bulk copies, clusters) must stay behind their
# architecture guards, so that a build with -DLIGER_CUDA_ARCH=80 compiles.
# Device code only, cubins thrown away; ctest runs it in a CUDA-enabled build.
#   bash scripts/check_cuda_arch.sh [ARCH]      e.g. 80, 89
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-80}
nvcc=${NVCC:-nvcc}
if ! command -v "$nvcc" > /dev/null 2>&1; then
  [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
fi
command -v "$nvcc" > /dev/null 2>&1 || { echo "[cuda-arch] nvcc not found"; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=0
for file in kernels/cuda/*.cu; do
  # -O1 / ptxas -O0: the architecture checks, not the code's speed
  if ! "$nvcc" -std=c++17 -I. -gencode "arch=compute_$arch,code=sm_$arch" -O1 -Xptxas -O0 \
    --expt-relaxed-constexpr -cubin -o "$out/$(basename "$file").cubin" "$file" \
    > "$out/log" 2>&1; then
    echo "[cuda-arch] $file does not compile for sm_$arch:"
    grep -m 5 -i "error" "$out/log" || tail -n 5 "$out/log"
    failed=1
  fi
done
[ $failed -eq 0 ] && echo "[cuda-arch] every kernels/cuda/*.cu compiles for sm_$arch"
exit $failed
