#!/usr/bin/env bash
# LoRA through the executables, on the CPU (fp32):
#  1. 2 ranks (Gloo, FSDP-sharded: the frozen base sharded and gathered, only
#     the adapters' and lm_head's gradients reduce-scattered) train like 1
#     process: per-step losses to 1e-5, and the adapters as close as the
#     rounding noise allows: the worst tensor's relative difference within 3 x
#     that of a 1-process run with only the micro-batch split changed (B
#     starts at zero and AdamW normalises its first small gradients, whose
#     cancellations make a fixed tolerance on the adapters, or a per-tensor
#     noise ratio, a matter of chance: both are about 5e-5 here); untied head in
#     modules_to_save, 2 micro-batches, full checkpointing (all three runs);
#  2. the same from a Hugging Face base folder (model.hf_path);
#  3. liger-export (of the sharded checkpoint) writes a PEFT adapter folder that peft's
#     PeftModel.from_pretrained loads, and --merge a model transformers loads
#     with the same logits (1e-5);
#  4. model.adapter_path starts a run from that folder: with lr 0 the
#     checkpoint's adapters are the exported ones.
# Usage: test_lora.sh BIN_DIR SOURCE_DIR PYTHON
set -uo pipefail
BIN=$1
SRC=$2
PY=${3:-$SRC/.venv/bin/python}
cd "$SRC"
failures=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

common=(--config configs/tiny_lora.yaml --set training.device=cpu --set training.threads=1
        --set data.seq_len=48 --set training.steps=4 --set training.lr_schedule=constant
        --set training.warmup_steps=0 --set logging.every=1 --set logging.sample_tokens=0
        --set checkpoint.every=0 --set logging.progress_bar=off --set parallelism.timeout_s=30
        --set lora.modules_to_save=[lm_head] --set training.gradient_accumulation_steps=2)
untied=(--set model.tie_embeddings=false --set training.activation_checkpointing=full)

# The worst relative parameter difference liger-compare reports for A against B.
worst_difference() {
  "$BIN/liger-compare" "$1" "$2" --rtol 1 2>&1 | sed -n 's/.*max relative difference \([0-9.e+-]*\).*/\1/p'
}
# A's worst difference from B within 3 x NOISE's (another rounding of B's run).
within_noise() {
  local a n
  a=$(worst_difference "$1" "$2"); n=$(worst_difference "$3" "$2")
  python3 -c "import sys; a, n = float('$a'), float('$n'); print(f'worst relative parameter difference {a:.3e}, noise {n:.3e}'); sys.exit(0 if a <= 3 * n and a < 1e-3 else 1)"
}

source "$(dirname "$0")/same_losses.sh"

# --- 1. two ranks == one process ------------------------------------------
"$BIN/liger-train" "${common[@]}" "${untied[@]}" --set training.micro_batch_size=4 \
  --set checkpoint.output_dir="$work/one" > "$work/one.log" 2>&1 || { fail "1-process LoRA run"; tail -5 "$work/one.log"; }
"$BIN/liger-train" "${common[@]}" "${untied[@]}" --set training.micro_batch_size=2 --set training.gradient_accumulation_steps=4 \
  --set checkpoint.output_dir="$work/resplit" > "$work/resplit.log" 2>&1 || { fail "1-process resplit LoRA run"; tail -5 "$work/resplit.log"; }
bash scripts/launch.sh --nproc 2 -- "$BIN/liger-train" "${common[@]}" "${untied[@]}" --set training.micro_batch_size=2 \
  --set checkpoint.output_dir="$work/two" > "$work/two.log" 2>&1 \
  || { fail "2-rank LoRA run"; tail -15 "$work/two.log"; }
if losses=$(same_losses "$work/two/metrics.jsonl" "$work/one/metrics.jsonl") &&
   out=$(within_noise "$work/two/step-4" "$work/one/step-4" "$work/resplit/step-4"); then
  echo "ok   LoRA, 2 ranks == 1 process: $losses; $out"
else
  fail "LoRA, 2 ranks differ from 1 process: ${losses:-} ${out:-}"
fi
grep -q "lm_head.weight" "$work/two/step-4/shards.json" && ! grep -q "q_proj.weight\"" "$work/two/step-4/shards.json" \
  || fail "the sharded LoRA checkpoint should hold the adapters and lm_head only"

# --- 2. from a Hugging Face base ---------------------------------------------
"$BIN/liger-train" --config configs/tiny.yaml --set training.device=cpu --set training.threads=1 --set data.seq_len=48 \
  --set training.steps=1 --set model.tie_embeddings=false --set logging.sample_tokens=0 --set logging.progress_bar=off \
  --set checkpoint.output_dir="$work/base" > "$work/base.log" 2>&1 || fail "base run"
"$BIN/liger-export" --checkpoint "$work/base/step-1" --out "$work/hf" > /dev/null 2>&1 || fail "base export"
hf=(--set model.hf_path="$work/hf")
"$BIN/liger-train" "${common[@]}" "${hf[@]}" --set training.micro_batch_size=4 \
  --set checkpoint.output_dir="$work/hf_one" > "$work/hf_one.log" 2>&1 || { fail "1-process LoRA run from hf_path"; tail -5 "$work/hf_one.log"; }
bash scripts/launch.sh --nproc 2 -- "$BIN/liger-train" "${common[@]}" "${hf[@]}" --set training.micro_batch_size=2 \
  --set checkpoint.output_dir="$work/hf_two" > "$work/hf_two.log" 2>&1 || { fail "2-rank LoRA run from hf_path"; tail -15 "$work/hf_two.log"; }
"$BIN/liger-train" "${common[@]}" "${hf[@]}" --set training.micro_batch_size=2 --set training.gradient_accumulation_steps=4 \
  --set checkpoint.output_dir="$work/hf_resplit" > "$work/hf_resplit.log" 2>&1 || { fail "1-process resplit run from hf_path"; tail -5 "$work/hf_resplit.log"; }
if losses=$(same_losses "$work/hf_two/metrics.jsonl" "$work/hf_one/metrics.jsonl") &&
   out=$(within_noise "$work/hf_two/step-4" "$work/hf_one/step-4" "$work/hf_resplit/step-4"); then
  echo "ok   LoRA from model.hf_path, 2 ranks == 1 process: $losses; $out"
else
  fail "LoRA from model.hf_path, 2 ranks differ: ${losses:-} ${out:-}"
fi

# --- 3. export: a PEFT folder peft loads, and the merged model ---------------------
"$BIN/liger-export" --checkpoint "$work/hf_two/step-4" --out "$work/adapter" > "$work/export.log" 2>&1 \
  || { fail "liger-export of the LoRA checkpoint"; cat "$work/export.log"; }
"$BIN/liger-export" --checkpoint "$work/hf_two/step-4" --out "$work/merged" --merge > "$work/merge.log" 2>&1 \
  || { fail "liger-export --merge"; cat "$work/merge.log"; }
if out=$("$PY" - "$work/hf" "$work/adapter" "$work/merged" 2>&1 <<'PY'
import sys, warnings
warnings.filterwarnings("ignore")
import torch, transformers
from peft import PeftModel
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
base_dir, adapter_dir, merged_dir = sys.argv[1:4]
base = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
plain = transformers.AutoModelForCausalLM.from_pretrained(base_dir).eval()
adapted = PeftModel.from_pretrained(base, adapter_dir).eval()
merged = transformers.AutoModelForCausalLM.from_pretrained(merged_dir).eval()
ids = torch.randint(0, base.config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(3))
with torch.no_grad():
    a, m, p = adapted(input_ids=ids).logits, merged(input_ids=ids).logits, plain(input_ids=ids).logits
merge_error = ((a - m).abs().max() / a.abs().max()).item()
moved = ((a - p).abs().max() / a.abs().max()).item()
print(f"PEFT-loaded adapter vs merged export: {merge_error:.2e} (tol 1e-5); vs the base: {moved:.2e}")
sys.exit(0 if merge_error <= 1e-5 and moved > 1e-4 else 1)
PY
); then
  echo "ok   export: $out"
else
  fail "export: $out"
fi

# --- 4. model.adapter_path: the run starts from the exported adapter --------------
"$BIN/liger-train" "${common[@]}" "${hf[@]}" --set training.micro_batch_size=4 --set model.adapter_path="$work/adapter" \
  --set training.lr=0 --set training.steps=1 --set training.weight_decay=0 \
  --set checkpoint.output_dir="$work/from_adapter" > "$work/from_adapter.log" 2>&1 \
  || { fail "run from model.adapter_path"; tail -5 "$work/from_adapter.log"; }
if out=$("$BIN/liger-compare" "$work/from_adapter/step-1" "$work/hf_two/step-4" --rtol 1e-7 2>&1); then
  echo "ok   model.adapter_path: the exported adapter comes back: $out"
else
  fail "model.adapter_path: $out"
fi

if [ "$failures" -gt 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "all LoRA app checks passed"
