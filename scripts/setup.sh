#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and builds liger-train into build/.
# Idempotent: installs only what is missing, then (re)configures and builds.
#   LIGER_CUDA=AUTO|ON|OFF   build the CUDA kernels (AUTO: when nvcc is found)
#   BUILD_DIR=build          where to build
#   LIGER_JOBS=N             parallel compile jobs (default: cores)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build}
LIGER_CUDA=${LIGER_CUDA:-AUTO}
TORCH_VERSION=2.11.0

say() { printf '[setup] %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------
packages=(build-essential cmake ninja-build pkg-config git python3 python3-venv python3-pip
          libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev libsentencepiece-dev sentencepiece
          catch2 nlohmann-json3-dev gnuplot-nox libpcre2-dev libgloo-dev clang-format)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Python virtual environment: LibTorch from the PyPI torch wheel --------
# The same torch version as the GPU machine; HF transformers/tokenizers are
# the CPU oracles of the parity tests, peft the oracle of the LoRA adapters,
# tensorboard the reader of logging.tensorboard's event files.
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
PY=$ROOT/.venv/bin/python
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" 2>/dev/null; then
  say "installing torch==$TORCH_VERSION into .venv (large download, once)"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "torch==$TORCH_VERSION"
fi
if ! "$PY" -c "import transformers, tokenizers, safetensors, numpy, peft, tensorboard" 2>/dev/null; then
  say "installing transformers, tokenizers, safetensors, numpy, peft, tensorboard into .venv"
  "$PY" -m pip install -q transformers tokenizers safetensors numpy peft tensorboard
fi
# transformers reads a SentencePiece tokenizer.model (an export of a run on one) with these.
if ! "$PY" -c "import sentencepiece, google.protobuf" 2>/dev/null; then
  say "installing sentencepiece, protobuf into .venv"
  "$PY" -m pip install -q sentencepiece protobuf
fi
TORCH_CMAKE=$("$PY" -c "import torch.utils; print(torch.utils.cmake_prefix_path)")

# --- configure + build ------------------------------------------------------
if [ -d /usr/local/cuda/bin ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
JOBS=${LIGER_JOBS:-$(nproc)}
say "configuring $BUILD_DIR (LIGER_CUDA=$LIGER_CUDA)"
mkdir -p "$BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_CMAKE" -DLIGER_CUDA="$LIGER_CUDA" \
  -DPython3_EXECUTABLE="$PY" > "$BUILD_DIR/configure.log" 2>&1 || { cat "$BUILD_DIR/configure.log"; exit 1; }
say "building with $JOBS jobs"
cmake --build "$BUILD_DIR" -j "$JOBS"
say "done: $BUILD_DIR/apps/liger-train"
