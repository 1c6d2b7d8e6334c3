#!/usr/bin/env bash
# The installed kernels library, used the way a LibTorch user would:
#  1. `cmake --install` into a temporary prefix puts the executables in bin/
#     (they run from there: their run path finds torch), the public headers
#     and the LigerKernels CMake package (config + version file);
#  2. examples/compose, copied out of the source tree, configures with only
#     CMAKE_PREFIX_PATH = prefix;torch, in a clean build folder, and builds;
#  3. flce_snippet: the fused loss on an nn::Linear(128, 256)'s weight equals
#     the reference op (loss and gradients; it exits 1 otherwise);
#  4. compose_lm trains its small LM on Shakespeare: the mean loss of the last
#     5 of 30 steps is at least 1.0 below that of the first 5 (from ~5.5);
#  5. a package recording another LibTorch version is refused at configure
#     time with a message naming both versions;
#  6. the package carries the CUDA code (its library, CUDA::cudart and
#     find_dependency(CUDAToolkit)) exactly when the build has it.
# Usage: test_install.sh BUILD_DIR SOURCE_DIR PYTHON WITH_CUDA(ON|OFF)
set -uo pipefail
BUILD=$1
SRC=$2
PY=$3
WITH_CUDA=$4
failures=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

prefix=$work/prefix
if ! cmake --install "$BUILD" --prefix "$prefix" > "$work/install.log" 2>&1; then
  cat "$work/install.log"
  echo "FAIL cmake --install"
  exit 1
fi
for exe in liger-train liger-export liger-generate liger-bench liger-tokenize; do
  if [ ! -x "$prefix/bin/$exe" ]; then
    fail "bin/$exe not installed"
  elif ! "$prefix/bin/$exe" --help > "$work/help.log" 2>&1; then
    fail "bin/$exe --help does not run: $(head -2 "$work/help.log")"
  fi
done
for f in include/kernels/ops.h include/kernels/registry.h include/kernels/nn/nn.h \
         lib/cmake/LigerKernels/LigerKernelsConfig.cmake \
         lib/cmake/LigerKernels/LigerKernelsConfigVersion.cmake; do
  [ -f "$prefix/$f" ] || fail "$f not installed"
done
# Internal headers stay private.
for f in include/kernels/backend.h include/kernels/checks.h include/kernels/optional_tensor.h; do
  [ ! -e "$prefix/$f" ] || fail "$f is installed but internal"
done

config=$prefix/lib/cmake/LigerKernels/LigerKernelsConfig.cmake
targets=$prefix/lib/cmake/LigerKernels/LigerKernelsTargets.cmake
grep -q "^set(LIGER_KERNELS_WITH_CUDA $WITH_CUDA)" "$config" ||
  fail "the package does not record LIGER_KERNELS_WITH_CUDA $WITH_CUDA"
if [ "$WITH_CUDA" = ON ]; then
  [ -f "$prefix/lib/libliger_cuda_kernels.a" ] || fail "CUDA build: libliger_cuda_kernels.a not installed"
  grep -q "CUDA::cudart" "$targets" || fail "CUDA build: liger::kernels does not link CUDA::cudart"
elif grep -q "cuda_kernels\|CUDA::" "$targets"; then
  fail "a build without CUDA exports CUDA targets"
fi

# The example out of the source tree: it sees the prefix and torch, nothing else.
torch_cmake=$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
cp -r "$SRC/examples/compose" "$work/compose"
configure() {  # configure BUILD_FOLDER LOG
  cmake -S "$work/compose" -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix;$torch_cmake" > "$2" 2>&1
}
if ! configure "$work/build" "$work/configure.log"; then
  cat "$work/configure.log"
  echo "FAIL examples/compose does not configure against the prefix"
  exit 1
fi
if ! cmake --build "$work/build" -j 2 > "$work/build.log" 2>&1; then
  tail -40 "$work/build.log"
  echo "FAIL examples/compose does not build against the prefix"
  exit 1
fi
if grep -q -- "-I$SRC" "$work/build/build.ninja"; then
  fail "examples/compose compiles with the source tree's include folder"
fi

export OMP_NUM_THREADS=2
"$work/build/flce_snippet" > "$work/snippet.log" 2>&1 || fail "flce_snippet: $(cat "$work/snippet.log")"
cat "$work/snippet.log"

if "$work/build/compose_lm" "$SRC/data/samples/tinyshakespeare.txt" 30 > "$work/lm.log" 2>&1; then
  python3 - "$work/lm.log" <<'PYEOF' || fail "compose_lm: the loss does not fall"
import sys
losses = [float(line.split()[3]) for line in open(sys.argv[1]) if line.startswith("step ")]
first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
print(f"compose_lm: {len(losses)} steps, mean loss of the first 5 {first:.3f}, of the last 5 {last:.3f}")
sys.exit(0 if len(losses) == 30 and last < first - 1.0 else 1)
PYEOF
else
  fail "compose_lm exits non-zero: $(tail -3 "$work/lm.log")"
fi

# Another LibTorch than the recorded one: refused when configuring.
sed -i 's/^set(LIGER_KERNELS_TORCH_VERSION "[^"]*")/set(LIGER_KERNELS_TORCH_VERSION "1.0.0")/' "$config"
if configure "$work/build-refused" "$work/refused.log"; then
  fail "a package built against LibTorch 1.0.0 was accepted"
elif ! tr -s ' \n' '  ' < "$work/refused.log" |
       grep -q "built against LibTorch 1.0.0, but find_package(Torch) found LibTorch 2"; then
  cat "$work/refused.log"
  fail "the LibTorch version refusal does not name both versions"
fi

if [ $failures -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "install: all checks passed"
