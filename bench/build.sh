#!/usr/bin/env bash
# The one build helper of the GPU benchmarks and checks: configures liger-train
# with CMake against the LibTorch of the machine's Python torch (CUDA kernels
# on, PCRE2 off) and builds the TARGETS (default: everything) with ninja.
# Idempotent: a second run reconfigures in place and rebuilds only what changed.
#
#   bash bench/build.sh [BUILD_DIR]
#     e.g. bash bench/build.sh                                  # build-gpu/, every target
#          TARGETS="liger-train liger-compare" bash bench/build.sh build-gpu
#
# Environment (all optional):
#   BUILD_DIR=build-gpu     build folder (the argument wins)
#   TARGETS="..."           ninja targets, space-separated (default: all)
#   LIGER_PYTHON=python3    the Python whose torch provides LibTorch (also the
#                           HF parity tests' Python, passed to CMake)
#   LIGER_CUDA=ON           ON, AUTO or OFF (CMake's LIGER_CUDA)
#   LIGER_PCRE2=OFF         ON needs the PCRE2 headers (HF tokenizer.json)
#   TORCH_CUDA_ARCH_LIST=9.0a   Hopper (the CMake default when unset)
#   LIGER_JOBS=16           ninja jobs (at most the machine's cores)
#   CMAKE_ARGS="..."        more CMake arguments (word-split), after ours
# Output: one line per step on stdout; the full logs are BUILD_DIR/configure.log
# and BUILD_DIR/build.log. On failure: the error lines, then exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -gt 1 || ${1:-} == -* ]]; then
  echo "usage: [TARGETS=\"target ...\"] bash bench/build.sh [BUILD_DIR]" >&2
  exit 2
fi
BUILD_DIR=${1:-${BUILD_DIR:-build-gpu}}
read -r -a targets <<< "${TARGETS:-}"
LIGER_PYTHON=${LIGER_PYTHON:-python3}
LIGER_CUDA=${LIGER_CUDA:-ON}
LIGER_PCRE2=${LIGER_PCRE2:-OFF}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}
cores=$(nproc 2> /dev/null || echo 16)
LIGER_JOBS=${LIGER_JOBS:-$((cores < 16 ? cores : 16))}
read -r -a extra_cmake_args <<< "${CMAKE_ARGS:-}"
[[ -d /usr/local/cuda/bin ]] && export PATH=/usr/local/cuda/bin:$PATH

torch_cmake=$("$LIGER_PYTHON" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)') ||
  { echo "build.sh: $LIGER_PYTHON has no torch (set LIGER_PYTHON)" >&2; exit 1; }
cmake_args=(-S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_cmake"
            -DLIGER_CUDA="$LIGER_CUDA" -DLIGER_PCRE2="$LIGER_PCRE2" -DLIGER_PYTHON="$LIGER_PYTHON"
            -DBUILD_TESTING=ON)
if [[ $LIGER_CUDA != OFF ]] && command -v nvcc > /dev/null; then
  cmake_args+=(-DCMAKE_CUDA_COMPILER="$(command -v nvcc)")
fi
cmake_args+=("${extra_cmake_args[@]}")

start=$(date +%s)
mkdir -p "$BUILD_DIR"
if ! cmake "${cmake_args[@]}" > "$BUILD_DIR/configure.log" 2>&1; then
  echo "CONFIGURE FAILED ($BUILD_DIR/configure.log):"
  tail -n 30 "$BUILD_DIR/configure.log"
  exit 1
fi
if ! ninja -C "$BUILD_DIR" -j "$LIGER_JOBS" "${targets[@]}" > "$BUILD_DIR/build.log" 2>&1; then
  echo "BUILD FAILED ($BUILD_DIR/build.log):"
  { grep -E -A3 "error|FAILED" "$BUILD_DIR/build.log" || tail -n 30 "$BUILD_DIR/build.log"; } | head -n 40 || true
  exit 1
fi
echo "build: $(( $(date +%s) - start )) s, $BUILD_DIR (${targets[*]:-all targets}, LIGER_CUDA=$LIGER_CUDA)"
