#!/usr/bin/env bash
# On one H100 (device tool): build with CUDA, run the GPU kernel tests, run
# compute-sanitizer (memcheck and racecheck) over the kernel tests named by
# SANITIZE (Catch2 tags), and liger-bench the ops named by OPS (cuda backend,
# bf16, plus the reference rows with REFERENCE=1). One summary in
# $OUT/summary.txt; logs and bench.json beside it.
#   OPS=rms_norm,cross_entropy SANITIZE="[rms_norm],[fused_add_rms_norm]" bash scripts/device/kernels_check.sh
# (racecheck is slow: name few, small test cases in SANITIZE)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
BUILD=build-gpu
OPS=${OPS:-}
SANITIZE=${SANITIZE:-}
export PATH=/usr/local/cuda/bin:$PATH
S="$OUT/summary.txt"
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > "$S" 2>&1
TORCH_CMAKE=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" \
  -DLIGER_CUDA=ON -DLIGER_PCRE2=OFF -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" > "$OUT/build.log" 2>&1
ninja -C "$BUILD" -j16 ${TARGETS:-test_kernels_cuda test_kernels_cuda_losses liger-bench liger-train} >> "$OUT/build.log" 2>&1 ||
  { echo "BUILD FAILED" >> "$S"; grep -E "error|FAILED" -A3 "$OUT/build.log" | head -40 >> "$S"; cat "$S"; exit 1; }
echo "build: $(( $(date +%s) - start )) s" >> "$S"

# TESTS: which test programs (default both); FILTER: a Catch2 test spec for them.
for t in ${TESTS:-test_kernels_cuda test_kernels_cuda_losses}; do
  timeout 600 "$BUILD/tests/kernels/$t" ${FILTER:+"$FILTER"} > "$OUT/$t.log" 2>&1
  echo "$t: exit $? -- $(tail -3 "$OUT/$t.log" | tr '\n' ' ')" >> "$S"
  grep -B2 -A12 "FAILED" "$OUT/$t.log" | head -60 >> "$S"
done

if [[ -n $SANITIZE ]]; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 "$BUILD/tests/kernels/test_kernels_cuda" "$SANITIZE" \
      > "$OUT/sanitizer_$tool.log" 2>&1
    echo "compute-sanitizer $tool $SANITIZE: exit $? -- $(grep -E "ERROR SUMMARY|test cases" "$OUT/sanitizer_$tool.log" | tr '\n' ' ')" >> "$S"
  done
fi

backends=cuda
[[ ${REFERENCE:-0} == 1 ]] && backends=all
op_args=()
[[ -n $OPS ]] && op_args=(--op "$OPS")
timeout 400 "$BUILD/apps/liger-bench" --dtype bf16 --backend "$backends" "${op_args[@]}" --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
echo "liger-bench: exit $?" >> "$S"
cat "$OUT/bench.log" >> "$S"
cat "$S"
