#!/usr/bin/env bash
# Sharded data parallelism on the CPU (Gloo, 2 processes on this host):
#  1. two ranks with micro-batch 2 each train exactly like one process with
#     micro-batch 4 (same windows, the loss normalised over both ranks): the
#     per-step losses and the final parameters agree to 1e-5 (fp32);
#     the same from a Hugging Face folder (model.hf_path), each rank reading
#     only its rows of each tensor;
#  2. with activation checkpointing on as well; with an untied head; Qwen2's
#     biases and Qwen3's q/k norms in the layer units;
#     started with SLURM's variables instead of torchrun's;
#  3. a sharded checkpoint, resumed on 2 ranks, ends where an uninterrupted run ends;
#     resuming it on 1 rank is a clear error;
#  4. when one rank is killed, the other stops with an error naming the failed
#     collective at once; 5. when one hangs, within parallelism.timeout_s.
# Usage: test_distributed.sh BIN_DIR SOURCE_DIR
set -uo pipefail
BIN=$1
SRC=$2
cd "$SRC"
failures=0
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

common=(--config configs/tiny.yaml --set training.device=cpu --set training.threads=1
        --set data.seq_len=64 --set training.steps=5 --set training.lr_schedule=constant
        --set training.warmup_steps=0 --set logging.every=1 --set logging.sample_tokens=0
        --set checkpoint.every=0 --set logging.progress_bar=off --set parallelism.timeout_s=30
        --set training.lr=0.001)

source "$(dirname "$0")/same_losses.sh"

# --- 1. two ranks == one process ------------------------------------------
"$BIN/liger-train" "${common[@]}" --set training.micro_batch_size=4 \
  --set checkpoint.output_dir="$work/one" > "$work/one.log" 2>&1 || { fail "single-process run"; tail -5 "$work/one.log"; }
bash scripts/launch.sh --nproc 2 -- "$BIN/liger-train" "${common[@]}" --set training.micro_batch_size=2 \
  --set logging.tensorboard=true \
  --set checkpoint.output_dir="$work/two" > "$work/two.log" 2>&1 || { fail "2-rank run"; tail -15 "$work/two.log"; }
events=$(find "$work/two" -maxdepth 1 -name 'events.out.tfevents.*' | wc -l)
[ "$events" = 1 ] && echo "ok   2 ranks: one TensorBoard events file (rank 0's)" \
  || fail "2 ranks with logging.tensorboard wrote $events events files, expected 1 (rank 0's)"
if out=$(same_losses "$work/two/metrics.jsonl" "$work/one/metrics.jsonl"); then
  echo "ok   2 ranks == 1 process, losses: $out"
else
  fail "2-rank losses differ from 1 process: $out"
fi
if out=$("$BIN/liger-compare" "$work/two/step-5" "$work/one/step-5" --rtol 1e-5 2>&1); then
  echo "ok   2 ranks == 1 process, parameters: $out"
else
  fail "2-rank parameters differ: $out"
fi
[ -f "$work/two/step-5/shards.json" ] && [ -f "$work/two/step-5/model.rank-1.pt" ] \
  || fail "the 2-rank checkpoint is not sharded (no shards.json / model.rank-1.pt)"

# --- 1b. from a Hugging Face folder: each rank copies its rows out of the mapped files ---
if "$BIN/liger-export" --checkpoint "$work/one/step-5" --out "$work/hf" > "$work/export.log" 2>&1; then
  hf=(--set model.hf_path="$work/hf" --set training.steps=3)
  "$BIN/liger-train" "${common[@]}" "${hf[@]}" --set training.micro_batch_size=4 \
    --set checkpoint.output_dir="$work/hf_one" > "$work/hf_one.log" 2>&1 || { fail "1-process run from hf_path"; tail -5 "$work/hf_one.log"; }
  bash scripts/launch.sh --nproc 2 -- "$BIN/liger-train" "${common[@]}" "${hf[@]}" --set training.micro_batch_size=2 \
    --set checkpoint.output_dir="$work/hf_two" > "$work/hf_two.log" 2>&1 || { fail "2-rank run from hf_path"; tail -15 "$work/hf_two.log"; }
  if grep -q "sharded (each rank reads its rows)" "$work/hf_two.log" &&
     out=$(same_losses "$work/hf_two/metrics.jsonl" "$work/hf_one/metrics.jsonl") &&
     cmp_out=$("$BIN/liger-compare" "$work/hf_two/step-3" "$work/hf_one/step-3" --rtol 1e-5 2>&1); then
    echo "ok   from model.hf_path, 2 ranks (each reading its rows) == 1 process: $out; $cmp_out"
  else
    fail "from model.hf_path, 2 ranks differ from 1 process: ${out:-} ${cmp_out:-}"; tail -5 "$work/hf_two.log"
  fi
else
  fail "liger-export of the 1-process checkpoint"; tail -5 "$work/export.log"
fi

# --- 2. with activation checkpointing --------------------------------------
bash scripts/launch.sh --nproc 2 -- "$BIN/liger-train" "${common[@]}" --set training.micro_batch_size=2 \
  --set training.activation_checkpointing=full --set checkpoint.output_dir="$work/two_ac" > "$work/two_ac.log" 2>&1 \
  || { fail "2-rank run with activation checkpointing"; tail -15 "$work/two_ac.log"; }
if out=$("$BIN/liger-compare" "$work/two_ac/step-5" "$work/one/step-5" --rtol 1e-5 2>&1); then
  echo "ok   2 ranks + activation checkpointing == 1 process: $out"
else
  fail "2 ranks + activation checkpointing differ: $out"
fi

# --- 2b. untied lm_head (separate embedding and head units), gradient accumulation
"$BIN/liger-train" "${common[@]}" --set training.micro_batch_size=4 --set model.tie_embeddings=false \
  --set training.gradient_accumulation_steps=2 --set checkpoint.output_dir="$work/one_untied" > "$work/one_untied.log" 2>&1 \
  || { fail "single-process untied run"; tail -5 "$work/one_untied.log"; }
bash scripts/launch.sh --nproc 2 -- "$BIN/liger-train" "${common[@]}" --set training.micro_batch_size=2 \
  --set model.tie_embeddings=false --set training.gradient_accumulation_steps=2 --set training.activation_checkpointing=full \
  --set checkpoint.output_dir="$work/two_untied" > "$work/two_untied.log" 2>&1 || { fail "2-rank untied run"; tail -15 "$work/two_untied.log"; }
if out=$("$BIN/liger-compare" "$work/two_untied/step-5" "$work/one_untied/step-5" --rtol 1e-5 2>&1) \
   && losses=$(same_losses "$work/two_untied/metrics.jsonl" "$work/one_untied/metrics.jsonl"); then
  echo "ok   untied lm_head, 2 micro-batches, checkpointing: 2 ranks == 1 process: $losses; $out"
else
  fail "untied / accumulation: $out $losses"
fi

# --- 2c. Qwen2 (q/k/v biases sharded and gathered with their layer) and Qwen3 (q/k norms).
# AdamW's eps 1e-5: softmax ignores a shift shared by all keys, so in RoPE's slowly turning
# dimensions the gradient of k's bias is a cancellation near zero, which eps 1e-8 would turn
# into full-size steps of rounding noise (different on 1 and 2 ranks); 1e-5 keeps them small.
# Mixtral (experts sharded and gathered with their layer; the router z-loss weighted by each
# rank's share of the batch, the load-balancing loss with the expert counts summed over the
# ranks: exact, as the LM loss).
for preset in tiny_qwen2 tiny_qwen3 tiny_mixtral; do
  qwen=(--set model.preset=$preset --set training.eps=1e-5)
  if [ "$preset" = tiny_mixtral ]; then
    qwen+=(--set model.router_z_loss_coef=0.01 --set model.output_router_logits=true
           --set model.router_aux_loss_coef=0.05)
  fi
  "$BIN/liger-train" "${common[@]}" "${qwen[@]}" --set training.micro_batch_size=4 \
    --set checkpoint.output_dir="$work/one_$preset" > "$work/one_$preset.log" 2>&1 \
    || { fail "single-process $preset run"; tail -5 "$work/one_$preset.log"; }
  bash scripts/launch.sh --nproc 2 -- "$BIN/liger-train" "${common[@]}" "${qwen[@]}" \
    --set training.micro_batch_size=2 --set checkpoint.output_dir="$work/two_$preset" > "$work/two_$preset.log" 2>&1 \
    || { fail "2-rank $preset run"; tail -15 "$work/two_$preset.log"; }
  if out=$("$BIN/liger-compare" "$work/two_$preset/step-5" "$work/one_$preset/step-5" --rtol 1e-5 2>&1) \
     && losses=$(same_losses "$work/two_$preset/metrics.jsonl" "$work/one_$preset/metrics.jsonl"); then
    echo "ok   $preset: 2 ranks == 1 process: $losses; $out"
  else
    fail "$preset: 2 ranks differ from 1 process: $out ${losses:-}"
  fi
done

# --- 2d. the same job started the SLURM way (srun's variables, no torchrun ones)
job=$((RANDOM % 100000))
for r in 0 1; do
  env -u RANK -u WORLD_SIZE SLURM_PROCID=$r SLURM_NTASKS=2 SLURM_LOCALID=$r SLURM_NODEID=0 \
    SLURM_NTASKS_PER_NODE=2 SLURM_JOB_NODELIST=localhost SLURM_JOB_ID=$job \
    "$BIN/liger-train" "${common[@]}" --set training.micro_batch_size=2 --set checkpoint.output_dir="$work/slurm" \
    > "$work/slurm.$r.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
pids=()
if grep -q "from slurm" "$work/slurm.0.log" && out=$("$BIN/liger-compare" "$work/slurm/step-5" "$work/two/step-5" --rtol 1e-6 2>&1); then
  echo "ok   SLURM variables (nodelist localhost, port from the job id): same as launch.sh: $out"
else
  fail "SLURM-style start: $(tail -2 "$work/slurm.0.log")"
fi

# --- 3. sharded checkpoint + resume ---------------------------------------
bash scripts/launch.sh --nproc 2 -- "$BIN/liger-train" "${common[@]}" --set training.micro_batch_size=2 \
  --set training.steps=3 --set checkpoint.output_dir="$work/resumed" > "$work/first.log" 2>&1 \
  || { fail "first half"; tail -10 "$work/first.log"; }
bash scripts/launch.sh --nproc 2 -- "$BIN/liger-train" "${common[@]}" --set training.micro_batch_size=2 \
  --set checkpoint.resume=auto --set checkpoint.output_dir="$work/resumed" > "$work/second.log" 2>&1 \
  || { fail "resumed half"; tail -10 "$work/second.log"; }
if out=$("$BIN/liger-compare" "$work/resumed/step-5" "$work/two/step-5" --rtol 1e-6 2>&1); then
  echo "ok   resumed sharded run == uninterrupted: $out"
else
  fail "resumed sharded run differs: $out"
fi
out=$("$BIN/liger-train" "${common[@]}" --set training.micro_batch_size=4 --set training.steps=6 \
  --set checkpoint.resume="$work/two/step-5" --set checkpoint.output_dir="$work/wrong" 2>&1); code=$?
if [ $code -ne 0 ] && grep -q "written by 2 rank" <<<"$out"; then
  echo "ok   resuming 2-rank shards on 1 process is a clear error"
else
  fail "resume on another world size: exit $code: $out"
fi

# --- 4. a dead rank ends the job ------------------------------------------
# Starts ranks 0 and 1 of a long job (logs $work/NAME.R.log, pids in $pids)
# and returns once it trains.
start_long_job() {
  local name=$1; shift
  local port=$((20000 + RANDOM % 20000))
  rm -rf "$work/dead"
  pids=()
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$BIN/liger-train" "${long[@]}" "$@" > "$work/$name.$r.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 1 120); do  # until the job trains
    [ -s "$work/dead/metrics.jsonl" ] && break
    sleep 0.5
  done
}
long=("${common[@]}" --set training.steps=100000 --set training.micro_batch_size=2
      --set parallelism.timeout_s=20 --set checkpoint.output_dir="$work/dead" --set checkpoint.save_final=false)
start_long_job dead
kill -9 "${pids[1]}"
start=$(date +%s)
wait "${pids[0]}"; code=$?
took=$(( $(date +%s) - start ))
if [ $code -ne 0 ] && [ $took -le 40 ] && grep -Eq "failed on rank 0" "$work/dead.0.log"; then
  echo "ok   rank 1 killed: rank 0 stopped with an error in ${took}s: $(grep -E 'error' "$work/dead.0.log" | tail -1)"
else
  fail "rank 1 killed: rank 0 exit $code after ${took}s"; tail -5 "$work/dead.0.log"
fi

# --- 5. a hung rank (stopped, sockets open) ends the job after the timeout --
start_long_job hung --set parallelism.timeout_s=5
kill -STOP "${pids[1]}"
start=$(date +%s)
wait "${pids[0]}"; code=$?
took=$(( $(date +%s) - start ))
kill -9 "${pids[1]}" 2>/dev/null
if [ $code -ne 0 ] && [ $took -ge 4 ] && [ $took -le 30 ] && grep -Eq "failed on rank 0.*[Tt]imed out" "$work/hung.0.log"; then
  echo "ok   rank 1 hung: rank 0 stopped after the 5 s timeout (${took}s) with one error line"
else
  fail "rank 1 hung: rank 0 exit $code after ${took}s"; tail -3 "$work/hung.0.log"
fi
exit $failures
