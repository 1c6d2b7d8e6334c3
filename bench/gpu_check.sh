#!/usr/bin/env bash
# The GPU check suite: builds with CUDA (bench/build.sh), then runs the parts
# asked for, in this order, and keeps going when one fails:
#   tests        every test program through ctest (the GPU tests run on the GPU)
#   kernels      the CUDA kernel test programs directly, with a Catch2 filter,
#                and compute-sanitizer (memcheck, racecheck) when SANITIZE is set
#   trainer      tests/trainer/test_training (TRAINER_FILTER) and test_optimizer
#   bench        liger-bench in bf16, its table and bench.json
#   train        configs/tiny.yaml trained on the GPU
#   convergence  the bf16 convergence check (scripts/convergence.sh --param-noise 2,
#                fused vs reference on the GPU), then the same with the fused
#                side's learning rate x 1.05, which the check must catch
#   parity       HF transformers parity on CUDA, fp32 then bf16 (HF transformers
#                in LIGER_PYTHON)
#   e2e          bench/e2e_1b.sh, once per GRAPH_MODES value, with the idle gaps
#                of each profiled run (scripts/trace_gaps.py)
#
#   bash bench/gpu_check.sh [PART ...]      # default: tests bench train convergence parity
#     e.g. bash bench/gpu_check.sh kernels bench
#          FILTER="[rope],[glu]" OPS=rope_qkv bash bench/gpu_check.sh kernels bench
#          CONVERGENCE_STEPS=100 bash bench/gpu_check.sh convergence
#
# Environment (all optional):
#   PARTS="..."           the parts, when no argument names them
#   OUT=out               summary.txt and a few result files (at most six)
#   WORK=/tmp/gpu_check   every full log and run folder
#   BUILD_DIR=build-gpu   the build (and bench/build.sh's LIGER_CUDA, LIGER_PCRE2,
#                         LIGER_JOBS, CMAKE_ARGS); LIGER_PYTHON=python3 the Python
#                         with torch (LibTorch) and transformers (parity)
#   TARGETS="..."         ninja targets to build (default: all with tests, else
#                         what the parts run)
#   tests:       CTEST_ARGS   ctest arguments (default "-E ^test_convergence$": the
#                             CPU convergence test; set it empty to run every test)
#   kernels:     TESTS        programs under tests/kernels/ (default
#                             "test_kernels_cuda test_kernels_cuda_losses
#                             test_kernels_cuda_preference test_kernels_cuda_tuned_gemm")
#                FILTER       a Catch2 test spec for them, e.g. "[rms_norm],[rope]"
#                SANITIZE     a Catch2 spec of test_kernels_cuda cases to run under
#                             compute-sanitizer (racecheck is slow: name few, small cases)
#   trainer:     TRAINER_FILTER   a Catch2 spec for test_training (default: every case),
#                             e.g. "cuda graphs*"
#   bench:       OPS          liger-bench --op list, e.g. rms_norm,cross_entropy (default all)
#                BENCH_BACKEND    liger-bench --backend: all (default; the reference
#                             and composite rows too), cuda, composite or reference
#   train:       TRAIN_STEPS  (default 20)
#   convergence: CONVERGENCE_STEPS (default 100); CONV_EXTRA  more --set arguments
#                             for every run, e.g. "--set training.cuda_graphs=true";
#                CONV_CONFIG  the config (default configs/tiny.yaml; the tiny
#                             Mixtral: configs/tiny_mixtral.yaml)
#   parity:      LIGER_PARITY_TOL_LOSS / _LOGITS / _GRAD  tolerances (the test's
#                             defaults: 1e-5 in fp32; loss 2e-2, logits 5e-2, gradients 1e-1 in bf16)
#   e2e:         E2E_STEPS (default 40), E2E_PARTS (bench/e2e_1b.sh's PARTS, default all),
#                GRAPH_MODES  training.cuda_graphs values, one full pass each, e.g.
#                             "false true" (default: one pass as the config says),
#                PROFILE_STEPS, EXTRA, HF_STEPS, POWER_SAMPLE  as in bench/e2e_1b.sh
# Output: summary.txt (environment, commit, build, each part's verdict and
# excerpts) and, per part, ctest.log, bench.json, convergence.json,
# convergence_losses.tsv, parity.log. Exit 0 when every part passed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ALL_PARTS="tests kernels trainer bench train convergence parity e2e"
if [[ $# -gt 0 ]]; then
  PARTS="$*"
else
  PARTS=${PARTS:-"tests bench train convergence parity"}
fi
for part in $PARTS; do
  if [[ " $ALL_PARTS " != *" $part "* ]]; then
    echo "gpu_check.sh: unknown part '$part' (parts: $ALL_PARTS)" >&2
    exit 2
  fi
done
has() { [[ " $PARTS " == *" $1 "* ]]; }

OUT=${OUT:-$ROOT/out}
WORK=${WORK:-/tmp/gpu_check}
BUILD_DIR=${BUILD_DIR:-build-gpu}
export LIGER_PYTHON=${LIGER_PYTHON:-python3}
TESTS=${TESTS:-"test_kernels_cuda test_kernels_cuda_losses test_kernels_cuda_preference test_kernels_cuda_tuned_gemm"}
FILTER=${FILTER:-}
SANITIZE=${SANITIZE:-}
mkdir -p "$OUT" "$WORK"
S=$OUT/summary.txt
: > "$S"
note() { printf '%s\n' "$*" | tee -a "$S"; }  # one line to the summary and stdout
add() { tee -a "$S"; }                         # stdin to the summary and stdout
excerpt() {  # excerpt PATTERN FILE LINES: the lines around PATTERN's matches
  { grep -E -B2 -A14 "$1" "$2" || true; } | head -n "$3" | add
}
[[ -d /usr/local/cuda/bin ]] && export PATH=/usr/local/cuda/bin:$PATH
# NVLink multicast off: the multi-GPU tests run on shared hosts.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

{
  date -u
  echo "commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown), parts: $PARTS"
  "$LIGER_PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())' 2>&1 | tail -n 1 || true
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
} | add

# --- build ------------------------------------------------------------------
targets=()
if [[ -n ${TARGETS:-} ]]; then
  read -r -a targets <<< "$TARGETS"
elif ! has tests; then
  if has kernels; then
    read -r -a targets <<< "$TESTS"
    if [[ -n $SANITIZE && " $TESTS " != *" test_kernels_cuda "* ]]; then targets+=(test_kernels_cuda); fi
  fi
  if has trainer; then targets+=(test_training test_optimizer); fi
  if has bench; then targets+=(liger-bench); fi
  if has train || has convergence || has e2e; then targets+=(liger-train); fi
  if has convergence; then targets+=(liger-compare); fi
  if has parity; then targets+=(test_hf_parity); fi
fi
if ! TARGETS="${targets[*]}" bash bench/build.sh "$BUILD_DIR" 2>&1 | add; then
  note "gpu_check: the build failed"
  exit 1
fi

# --- the parts ----------------------------------------------------------------
# Each returns non-zero when its check failed; the suite goes on to the next.
part_tests() {
  local ctest_args=(-E '^test_convergence$') code=0
  [[ -v CTEST_ARGS ]] && read -r -a ctest_args <<< "$CTEST_ARGS"
  (cd "$BUILD_DIR" && ctest --output-on-failure --timeout 600 "${ctest_args[@]}") > "$OUT/ctest.log" 2>&1 || code=$?
  note "== tests: ctest ${ctest_args[*]}: exit $code"
  tail -n 20 "$OUT/ctest.log" | add
  return "$code"
}

part_kernels() {
  local status=0 code t tool tests
  read -r -a tests <<< "$TESTS"
  note "== kernels: ${tests[*]}${FILTER:+ \"$FILTER\"}"
  for t in "${tests[@]}"; do
    code=0
    timeout 600 "$BUILD_DIR/tests/kernels/$t" ${FILTER:+"$FILTER"} > "$WORK/$t.log" 2>&1 || code=$?
    note "$t: exit $code -- $(tail -n 3 "$WORK/$t.log" | tr '\n' ' ')"
    excerpt FAILED "$WORK/$t.log" 60
    [[ $code -eq 0 ]] || status=1
  done
  if [[ -n $SANITIZE ]]; then
    for tool in memcheck racecheck; do
      code=0
      compute-sanitizer --tool "$tool" --error-exitcode 9 "$BUILD_DIR/tests/kernels/test_kernels_cuda" "$SANITIZE" \
        > "$WORK/sanitizer_$tool.log" 2>&1 || code=$?
      note "compute-sanitizer $tool \"$SANITIZE\": exit $code -- $( { grep -E "ERROR SUMMARY|test cases" "$WORK/sanitizer_$tool.log" || true; } | tr '\n' ' ')"
      [[ $code -eq 0 ]] || status=1
    done
  fi
  return "$status"
}

part_trainer() {
  local status=0 code=0
  note "== trainer: test_training${TRAINER_FILTER:+ \"$TRAINER_FILTER\"}, test_optimizer"
  LIGER_SOURCE_DIR=$ROOT timeout 600 "$BUILD_DIR/tests/trainer/test_training" ${TRAINER_FILTER:+"$TRAINER_FILTER"} \
    > "$WORK/test_training.log" 2>&1 || code=$?
  note "test_training: exit $code -- $(tail -n 3 "$WORK/test_training.log" | tr '\n' ' ')"
  excerpt "FAILED|with expansion|worst per-step" "$WORK/test_training.log" 60
  [[ $code -eq 0 ]] || status=1
  code=0
  LIGER_SOURCE_DIR=$ROOT timeout 300 "$BUILD_DIR/tests/trainer/test_optimizer" > "$WORK/test_optimizer.log" 2>&1 || code=$?
  note "test_optimizer: exit $code -- $(tail -n 2 "$WORK/test_optimizer.log" | tr '\n' ' ')"
  excerpt FAILED "$WORK/test_optimizer.log" 40
  [[ $code -eq 0 ]] || status=1
  return "$status"
}

part_bench() {
  local backend=${BENCH_BACKEND:-all} args code=0
  args=(--dtype bf16 --backend "$backend")
  if [[ -n ${OPS:-} ]]; then args+=(--op "$OPS"); fi
  timeout 600 "$BUILD_DIR/apps/liger-bench" "${args[@]}" --json "$OUT/bench.json" > "$WORK/bench.log" 2>&1 || code=$?
  note "== bench: liger-bench ${args[*]}: exit $code"
  add < "$WORK/bench.log"
  return "$code"
}

part_train() {
  local steps=${TRAIN_STEPS:-20} code=0
  rm -rf "$WORK/tiny_gpu"
  "$BUILD_DIR/apps/liger-train" --config configs/tiny.yaml --set training.device=cuda --set training.steps="$steps" \
    --set logging.every=5 --set logging.progress_bar=off --set checkpoint.output_dir="$WORK/tiny_gpu" \
    --set checkpoint.every=0 --set checkpoint.save_final=false > "$WORK/train.log" 2>&1 || code=$?
  note "== train: configs/tiny.yaml on cuda, $steps steps: exit $code"
  tail -n 12 "$WORK/train.log" | add
  return "$code"
}

part_convergence() {
  local steps=${CONVERGENCE_STEPS:-100} config=${CONV_CONFIG:-configs/tiny.yaml} extra conv lr code=0 perturbed=0
  read -r -a extra <<< "${CONV_EXTRA:-}"
  conv=("$config" --steps "$steps" --set training.device=cuda --set model.dtype=bf16
        --loss-rtol 2e-2 --param-noise 2 --noise-split 2 "${extra[@]}")
  LIGER_BUILD_DIR=$BUILD_DIR bash scripts/convergence.sh "${conv[@]}" --out "$WORK/conv" \
    > "$WORK/convergence.log" 2>&1 || code=$?
  note "== convergence: $config, bf16 on cuda, $steps steps, --loss-rtol 2e-2 --param-noise 2${CONV_EXTRA:+ $CONV_EXTRA}: exit $code"
  { grep -v "^\[convergence\] training" "$WORK/convergence.log" || true; } | tail -n 30 | add
  cp "$WORK/conv/losses.tsv" "$OUT/convergence_losses.tsv" 2> /dev/null || true
  cp "$WORK/conv/summary.json" "$OUT/convergence.json" 2> /dev/null || true
  # The check must be able to fail: the fused run with a 5% larger learning rate.
  lr=$(awk '$1 == "lr:" {print $2 * 1.05; exit}' "$config")
  LIGER_BUILD_DIR=$BUILD_DIR bash scripts/convergence.sh "${conv[@]}" --out "$WORK/conv_perturbed" \
    --set-fused training.lr="$lr" > "$WORK/convergence_perturbed.log" 2>&1 || perturbed=$?
  note "perturbed (fused side training.lr=$lr): exit $perturbed ($([[ $perturbed -eq 1 ]] && echo "caught, as it must be" || echo "NOT caught"))"
  { grep -E "max relative|final parameters" "$WORK/convergence_perturbed.log" || true; } | add
  [[ $code -eq 0 && $perturbed -eq 1 ]]
}

part_parity() {
  local status=0 code dtype bin=$BUILD_DIR/tests/models/test_hf_parity
  note "== parity: HF transformers on cuda, fp32 and bf16 (kernels on and off, export round trip)"
  "$LIGER_PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, "gpu", torch.cuda.get_device_name(0))' \
    2>&1 | tee "$OUT/parity.log" | add || status=1
  for dtype in fp32 bf16; do
    code=0
    echo "=== HF parity: cuda, $dtype ===" > "$WORK/hf_parity_$dtype.log"
    LIGER_SOURCE_DIR=$ROOT LIGER_PARITY_DEVICE=cuda LIGER_PARITY_DTYPE=$dtype LIGER_PARITY_DIR="$WORK/hf_parity_$dtype" \
      "$bin" >> "$WORK/hf_parity_$dtype.log" 2>&1 || code=$?
    note "parity cuda $dtype: exit $code"
    { grep -Ev '^\s*$' "$WORK/hf_parity_$dtype.log" || true; } | tail -n 40 | add
    cat "$WORK/hf_parity_$dtype.log" >> "$OUT/parity.log"
    [[ $code -eq 0 ]] || status=1
  done
  # The oracle folders (HF models, oracle tensors) are large: keep only the logs.
  rm -rf "$WORK/hf_parity_fp32" "$WORK/hf_parity_bf16"
  return "$status"
}

part_e2e() {
  local steps=${E2E_STEPS:-40} status=0 code mode modes dir extra trace
  read -r -a modes <<< "${GRAPH_MODES:-}"
  [[ ${#modes[@]} -gt 0 ]] || modes=(config)
  for mode in "${modes[@]}"; do
    dir=$WORK/e2e_$mode
    extra=${EXTRA:-}
    [[ $mode == config ]] || extra+=" --set training.cuda_graphs=$mode"
    rm -rf "$dir"
    code=0
    OUT=$dir EXTRA="$extra" BUILD_DIR=$BUILD_DIR bash bench/e2e_1b.sh "$steps" ${E2E_PARTS:+"$E2E_PARTS"} \
      > "$WORK/e2e_$mode.log" 2>&1 || code=$?
    note "== e2e: bench/e2e_1b.sh $steps${E2E_PARTS:+ \"$E2E_PARTS\"}, training.cuda_graphs=$mode: exit $code"
    if [[ -f $dir/summary.txt ]]; then add < "$dir/summary.txt"; else tail -n 30 "$WORK/e2e_$mode.log" | add; fi
    { grep -hE "cuda graphs|error|Error" "$dir"/liger_*.log 2> /dev/null || true; } | cut -c1-400 | head -n 5 | add
    for trace in "$dir"/liger_*/profile/rank-0.json; do
      [[ -f $trace ]] || continue
      { echo "idle gaps of $trace:"; python3 scripts/trace_gaps.py "$trace" 25 2>&1 || true; } | add
    done
    [[ $code -eq 0 ]] || status=1
  done
  return "$status"
}

failed=()
for part in $ALL_PARTS; do
  has "$part" || continue
  "part_$part" || failed+=("$part")
done
if [[ ${#failed[@]} -gt 0 ]]; then
  note "gpu_check: FAILED: ${failed[*]} (of: $PARTS); logs under $WORK"
  exit 1
fi
note "gpu_check: passed: $PARTS"
