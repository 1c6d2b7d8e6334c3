#!/usr/bin/env bash
# HF parity on the GPU (device tool): our forward/loss/gradients against HF
# transformers (eager attention) for every family, first fp32 on CUDA, then
# bf16 (parameters and compute), with the CUDA kernels on and off, plus the
# export round trip. Builds nothing: build-gpu/ must exist (e.g. from
# scripts/device/build_and_train.sh, or `ninja -C build-gpu test_hf_parity`).
#   bash scripts/device/hf_parity_bf16.sh            # logs in $OUT (or out/)
# Tolerances (max |ours - HF| / max |HF|) default to 1e-5 in fp32 and to
# loss 2e-2, logits 5e-2, gradients 1e-1 in bf16; override with
# LIGER_PARITY_TOL_LOSS / _LOGITS / _GRAD. The metric table is printed either way.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
BUILD=${BUILD:-build-gpu}
BIN="$BUILD/tests/models/test_hf_parity"
if [ ! -x "$BIN" ]; then
  echo "no $BIN: build first (ninja -C $BUILD test_hf_parity)"; exit 1
fi
export LIGER_SOURCE_DIR=$PWD
export LIGER_PYTHON=${LIGER_PYTHON:-python3}
"$LIGER_PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "gpu", torch.cuda.get_device_name(0))' \
  | tee "$OUT/hf_parity_env.txt"

status=0
for dtype in fp32 bf16; do
  echo "=== HF parity: cuda, $dtype ===" | tee "$OUT/hf_parity_$dtype.log"
  LIGER_PARITY_DEVICE=cuda LIGER_PARITY_DTYPE=$dtype LIGER_PARITY_DIR="$OUT/hf_parity_$dtype" \
    "$BIN" 2>&1 | tee -a "$OUT/hf_parity_$dtype.log" | grep -Ev '^\s*$' | tail -40
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
# The oracle folders (HF models, oracle tensors) are large: keep only the logs.
rm -rf "$OUT"/hf_parity_fp32 "$OUT"/hf_parity_bf16
exit $status
