#!/usr/bin/env bash
# A checkpoint that cannot be written ends the run with one line, and nothing
# is lost (CPU, configs/tiny.yaml):
#  1. a straight 4-step run saves step-2 and step-4 (the reference);
#  2. its step-2 alone, resumed with checkpoint.resume: auto on a file system
#     too small for one more checkpoint (a tmpfs of 1.5 checkpoints when this
#     runs as root and may mount one, else a file-size limit under half of
#     model.pt, with SIGXFSZ ignored so that writes fail with EFBIG), must fail
#     at step 4's save: exit 1, the last stderr line is "checkpoint error: ..."
#     naming the path and the last good checkpoint, no stack dump ("frame #",
#     "terminate called"), no .step-4.tmp left, step-2 byte for byte as it was;
#  3. a resume from that survivor, with room, trains steps 3 and 4 with the
#     straight run's losses (1e-5).
# Usage: test_checkpoint_failure.sh BIN_DIR SOURCE_DIR
set -uo pipefail
BIN=$1
SRC=$2
cd "$SRC"
source tests/apps/same_losses.sh
failures=0
work=$(mktemp -d)
mounted=""
cleanup() {
  [[ -n $mounted ]] && umount "$mounted" 2> /dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

common=(--config configs/tiny.yaml --set training.device=cpu --set training.threads=1 --set data.seq_len=64
        --set training.steps=4 --set checkpoint.every=2 --set checkpoint.keep_last=0 --set logging.every=1
        --set logging.sample_tokens=0 --set logging.progress_bar=off)

# 1. The reference: 4 steps straight.
"$BIN/liger-train" "${common[@]}" --set checkpoint.output_dir="$work/straight" > "$work/straight.log" 2>&1 ||
  { tail -n 5 "$work/straight.log"; echo "FAIL the straight run"; exit 1; }
checkpoint_kib=$(du -sk "$work/straight/step-2" | cut -f1)
model_kib=$(du -k "$work/straight/step-2/model.pt" | cut -f1)

# 2. Step 2's checkpoint on a full file system, resumed: step 4's save must fail cleanly.
full=$work/full
mkdir -p "$full"
limit=()
if [[ $(id -u) == 0 ]] && mount -t tmpfs -o size=$((checkpoint_kib * 3 / 2))k tmpfs "$full" 2> /dev/null; then
  mounted=$full
  echo "file system: a tmpfs of $((checkpoint_kib * 3 / 2)) KiB (one checkpoint is $checkpoint_kib KiB)"
else
  limit=(ulimit -f $((model_kib / 2)))
  echo "file system: a file-size limit of $((model_kib / 2)) KiB (model.pt is $model_kib KiB)"
fi
mkdir -p "$full/run"
cp -r "$work/straight/step-2" "$full/run/"
(cd "$full/run/step-2" && sha256sum ./*) > "$work/step-2.sha256"
code=0
(
  trap '' XFSZ  # a write past the limit fails with EFBIG instead of killing the process
  [[ ${#limit[@]} -gt 0 ]] && "${limit[@]}"
  "$BIN/liger-train" "${common[@]}" --set checkpoint.output_dir="$full/run" --set checkpoint.resume=auto \
    > "$work/full.out" 2> "$work/full.err"
) || code=$?
last_line=$(tail -n 1 "$work/full.err")
echo "exit $code: $last_line"
[[ $code -eq 1 ]] || fail "the failed save exits $code, not 1"
[[ $last_line == "checkpoint error: checkpoint $full/run/step-4 not written: cannot write "* ]] ||
  fail "the last line does not say which checkpoint and file could not be written"
[[ $last_line == *"the last good checkpoint is $full/run/step-2"* ]] || fail "the line does not name step-2"
grep -q -E "frame #|terminate called|Exception raised from" "$work/full.err" "$work/full.out" &&
  fail "a stack dump reached the user"
[[ $(grep -c "error" "$work/full.err") -eq 1 ]] || fail "more than one error line on stderr"
[[ -e $full/run/.step-4.tmp ]] && fail ".step-4.tmp was left behind"
[[ -e $full/run/step-4 ]] && fail "a step-4 folder exists"
(cd "$full/run/step-2" && sha256sum --quiet -c "$work/step-2.sha256") || fail "step-2 changed"

# 3. Resumed from the survivor, with room: steps 3 and 4 as in the straight run.
"$BIN/liger-train" "${common[@]}" --set checkpoint.resume="$full/run/step-2" \
  --set checkpoint.output_dir="$work/resumed" > "$work/resumed.log" 2>&1 || fail "the resume from step-2"
tail -n 2 "$work/straight/metrics.jsonl" > "$work/straight_3_4.jsonl"
same_losses "$work/resumed/metrics.jsonl" "$work/straight_3_4.jsonl" || fail "resumed losses differ"

[[ $failures -eq 0 ]] && echo "OK" || echo "$failures failure(s)"
exit $((failures > 0))
