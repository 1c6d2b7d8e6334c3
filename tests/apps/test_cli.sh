#!/usr/bin/env bash
# liger-train's command line as a user meets it: dry runs, and the one-line
# errors for the mistakes a user makes. Usage: test_cli.sh LIGER_TRAIN SOURCE_DIR
set -uo pipefail
BIN=$1
SRC=$2
cd "$SRC"
failures=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# expect NAME EXIT_CODE PATTERN -- COMMAND...   (PATTERN: grep -E over stdout+stderr)
expect() {
  local name=$1 want_code=$2 pattern=$3
  shift 4
  local out code
  out=$("$@" 2>&1); code=$?
  if [ "$code" -ne "$want_code" ] && ! { [ "$want_code" = nonzero ] && [ "$code" -ne 0 ]; }; then
    echo "FAIL $name: exit $code, wanted $want_code"; echo "$out" | tail -5; failures=$((failures + 1)); return
  fi
  if ! grep -Eq -- "$pattern" <<<"$out"; then
    echo "FAIL $name: output lacks /$pattern/"; echo "$out" | tail -5; failures=$((failures + 1)); return
  fi
  echo "ok   $name"
}

expect "8B dry run prints 8.03 B parameters" 0 "parameters: 8,030,261,248 \(8\.03 B\)" -- \
  "$BIN" --config configs/llama3_8b.yaml --dry-run
# The shipped 8B config on one 80 GB GPU (assumed: none here) and sharded over 8.
expect "8B dry run plans bf16 with full checkpointing for one 80 GB GPU" 0 \
  "^memory plan: bf16 \(stochastic rounding\), activation checkpointing full, fused loss: [0-9.]+ GiB of the 76\.00 GiB budget on 1 GPU" -- \
  "$BIN" --config configs/llama3_8b.yaml --dry-run
expect "8B dry run estimates under 76 GiB per GPU" 0 "^under 76 GiB: [0-9.]+$" -- \
  bash -c "total=\$('$BIN' --config configs/llama3_8b.yaml --dry-run | grep '^memory per GPU' | grep -Eo 'total [0-9.]+' | cut -d' ' -f2); \
           awk -v t=\"\$total\" 'BEGIN { if (t != \"\" && t < 76) print \"under 76 GiB: \" t }'"
expect "8B dry run over 8 ranks plans bf16-mixed without recompute" 0 \
  "^memory plan: bf16-mixed, activation checkpointing none, fused loss: [0-9.]+ GiB of the 76\.00 GiB budget per GPU with 8 ranks" -- \
  env RANK=0 WORLD_SIZE=8 "$BIN" --config configs/llama3_8b.yaml --dry-run
expect "memory plan beside an explicit precision" 1 "config error: --set: training\.precision = 'bf16' is set, but training\.memory_plan = auto" -- \
  "$BIN" --config configs/llama3_8b.yaml --set training.precision=bf16 --dry-run
expect "8B dry run prints the kernel table" 0 "fused_linear_cross_entropy: " -- \
  "$BIN" --config configs/llama3_8b.yaml --dry-run --set training.device=cpu
expect "tiny dry run" 0 "parameters: " -- "$BIN" --config configs/tiny.yaml --dry-run
# Mixtral 8x7B: every expert in the count and the memory estimate, 2 of 8 active per token.
expect "Mixtral 8x7B dry run prints 46.7 B parameters" 0 "parameters: 46,702,792,704 \(46\.70 B\)" -- \
  "$BIN" --config configs/mixtral_8x7b.yaml --dry-run
expect "Mixtral 8x7B dry run prints 12.9 B active parameters" 0 \
  "^experts: 8 per layer, 2 per token; active parameters per token 12,879,925,248 \(12\.88 B" -- \
  "$BIN" --config configs/mixtral_8x7b.yaml --dry-run
expect "Mixtral 8x7B dry run counts every expert's AdamW state" 0 "AdamW states 3[0-9][0-9]\.[0-9]+ GiB" -- \
  "$BIN" --config configs/mixtral_8x7b.yaml --dry-run
expect "Mixtral dry run serves the moe op" 0 "^  moe: composite \(fused toggle on" -- \
  "$BIN" --config configs/mixtral_8x7b.yaml --dry-run --set training.device=cpu
expect "LoRA on an MoE model's experts is refused, naming the key" 1 \
  "lora\.target_modules: this model has no gate_proj" -- \
  "$BIN" --config configs/tiny_mixtral.yaml --set model.adapter=lora --set "lora.target_modules=[q_proj, gate_proj]" --dry-run
expect "a bad checkpoint.resume fails the dry run, naming the key" 1 \
  "config error: checkpoint\.resume = 'nowhere': no such folder" -- \
  "$BIN" --config configs/tiny.yaml --set checkpoint.resume=nowhere --dry-run
expect "a bad checkpoint.resume fails a run before the model is built" 1 \
  "config error: checkpoint\.resume = 'nowhere': no such folder" -- \
  "$BIN" --config configs/tiny.yaml --set checkpoint.resume=nowhere --set checkpoint.output_dir="$work/resume"
expect "HF dtype names are accepted" 0 "parameters: " -- \
  "$BIN" --config configs/tiny.yaml --set training.precision=float32 --dry-run
expect "misspelled key names the closest key" 1 "training\.micro_bach_size.*did you mean 'training\.micro_batch_size'" -- \
  "$BIN" --config configs/tiny.yaml --set training.micro_bach_size=4 --dry-run
printf 'training:\n  stepz: 10\n' > "$work/typo.yaml"
expect "misspelled key in a file names the file and the key" 1 "typo\.yaml.*training\.stepz.*training\.steps" -- \
  "$BIN" --config "$work/typo.yaml" --dry-run
expect "CE and fused CE both on" 1 "kernels\.cross_entropy.*kernels\.fused_linear_cross_entropy" -- \
  "$BIN" --config configs/tiny.yaml --set kernels.cross_entropy=true --dry-run
expect "pipeline parallelism rejected" 1 "pipeline_parallel_degree.*not supported.*incompatible" -- \
  "$BIN" --config configs/tiny.yaml --set parallelism.pipeline_parallel_degree=2 --dry-run
expect "bad value names key, value and what is allowed" 1 "training\.lr.*'fast'.*a number" -- \
  "$BIN" --config configs/tiny.yaml --set training.lr=fast --dry-run
expect "missing config file" 1 "nope\.yaml" -- "$BIN" --config nope.yaml --dry-run
# The checks that need the job (launcher environment, device) run in --dry-run too.
expect "dry run: CUDA graphs with several ranks" 1 "config error: training\.cuda_graphs = true with 2 ranks" -- \
  env RANK=0 WORLD_SIZE=2 "$BIN" --config configs/tiny.yaml --set training.device=cuda \
  --set training.cuda_graphs=true --dry-run
expect "dry run: shard degree not the world size" 1 \
  "config error: parallelism\.data_parallel_shard_degree = 4 but the job has 2 ranks" -- \
  env RANK=0 WORLD_SIZE=2 "$BIN" --config configs/tiny.yaml --set parallelism.data_parallel_shard_degree=4 --dry-run
expect "missing data file names it and the key" 1 "config error: data\.train = 'missing\.txt': no such file" -- \
  "$BIN" --config configs/tiny.yaml --set data.train=[missing.txt] --set checkpoint.output_dir="$work/run"
expect "reference.yaml is what --print-reference prints" 0 "" -- \
  bash -c "diff <('$BIN' --print-reference) configs/reference.yaml"
expect "errors are one line without a stack trace" 0 "^lines=1 .*config error: model\.num_kv_heads = 3" -- \
  bash -c "out=\$('$BIN' --config configs/tiny.yaml --set model.num_kv_heads=3 --dry-run 2>&1); echo lines=\$(printf '%s\n' \"\$out\" | wc -l) \"\$out\""

# A tokenizer folder whose chat template is none we render (Phi-3's): chat data
# is one error naming the file and data.chat_template; setting it trains.
mkdir -p "$work/phi3"
cp data/samples/shakespeare_bpe1024.model "$work/phi3/tokenizer.model"
cat > "$work/phi3/tokenizer_config.json" <<'EOF'
{"chat_template": "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"}
EOF
cat > "$work/chat.jsonl" <<'EOF'
{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]}
EOF
phi3=("$BIN" --config configs/tiny.yaml --set data.tokenizer="$work/phi3" --set data.train=["$work/chat.jsonl"]
      --set data.seq_len=8 --set training.micro_batch_size=1 --set training.steps=1 --set logging.sample_tokens=0
      --set checkpoint.output_dir="$work/phi3_run" --set checkpoint.save_final=false --set logging.level=error)
unknown_template="^lines=1 data error: .*phi3/tokenizer_config\.json: its chat template is none of .*"
unknown_template+="set data\.chat_template to llama3, mistral, gemma or chatml"
expect "unrecognised chat template: one line naming the file and data.chat_template" 0 "$unknown_template" -- \
  bash -c 'out=$("$@" 2>&1); echo "lines=$(printf "%s\n" "$out" | wc -l) $out"' _ "${phi3[@]}"
expect "unrecognised chat template: data.chat_template set, it trains" 0 "final loss" -- \
  "${phi3[@]}" --set data.chat_template=mistral --set logging.level=info

# SIGTERM (SLURM preemption): finish the step, save, exit 0.
run_dir="$work/preempt"
"$BIN" --config configs/tiny.yaml --set training.steps=100000 --set logging.every=1 \
  --set data.seq_len=32 --set training.micro_batch_size=2 --set checkpoint.every=0 \
  --set checkpoint.output_dir="$run_dir" > "$work/preempt.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [ -f "$run_dir/metrics.jsonl" ] && [ "$(wc -l < "$run_dir/metrics.jsonl")" -ge 3 ] && break
  sleep 0.1
done
kill -TERM $pid
wait $pid; code=$?
saved=$(ls -d "$run_dir"/step-* 2>/dev/null | head -1)
if [ "$code" -eq 0 ] && [ -n "$saved" ] && [ -f "$saved/trainer_state.json" ]; then
  echo "ok   SIGTERM saves $(basename "$saved") and exits 0"
else
  echo "FAIL SIGTERM: exit $code, checkpoint '${saved}'"; tail -5 "$work/preempt.log"; failures=$((failures + 1))
fi

# liger-bench's attention filters: names checked before anything is timed.
BENCH=$(dirname "$BIN")/liger-bench
expect "liger-bench names the unknown attention variant" 1 \
  "--variant: unknown name 'foo' \(known: causal, window, softcap, documents\)" -- \
  "$BENCH" --op attention --variant foo
expect "liger-bench names the unknown attention implementation" 1 "--impl: unknown name 'nope'" -- \
  "$BENCH" --op attention --impl liger,nope
expect "liger-bench refuses zero documents" 1 "--documents: 1 to --tokens \(8192\) documents per sequence, got 0" -- \
  "$BENCH" --op attention --documents 0
expect "liger-bench refuses more documents than tokens" 1 "--documents: 1 to --tokens \(512\) documents per sequence, got 1000" -- \
  "$BENCH" --op attention --tokens 512 --documents 1000
expect "liger-bench refuses a sequence under 64 tokens" 1 "--tokens: 64 to 65536 tokens per sequence, got 10" -- \
  "$BENCH" --op attention --tokens 10
expect "liger-bench refuses a batch of zero sequences" 1 "--batch: 1 to 64 sequences, got 0" -- \
  "$BENCH" --op attention --batch 0
expect "liger-bench's attention filters need --op attention" 1 "--variant applies to --op attention alone" -- \
  "$BENCH" --op rms_norm --variant causal
expect "liger-bench's --batch needs --op attention" 1 "--batch applies to --op attention alone" -- \
  "$BENCH" --op rms_norm --batch 2
expect "liger-bench takes a valid attention filter" 0 "." -- \
  "$BENCH" --op attention --shape llama3-1b --variant documents --documents 16 --impl liger --reps 20 --warmup 1

if [ $failures -ne 0 ]; then echo "$failures CLI check(s) failed"; exit 1; fi
echo "all CLI checks passed"
