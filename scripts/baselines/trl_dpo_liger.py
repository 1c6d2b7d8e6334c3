#!/usr/bin/env python3
"""Baseline for the DPO comparison: TRL's DPOTrainer with Liger-Kernel on a
Hugging Face Llama, same shapes as liger-train's DPO run (GPU machine).

    python scripts/baselines/trl_dpo_liger.py --preset llama3_1b --pairs 8 \\
        --seq-len 1024 --steps 20 --warmup 5 [--no-liger] --json OUT.json

Random init from a LlamaConfig (nothing is downloaded) and random preference
pairs of token ids: each pair is a prompt of seq_len / 4 tokens and two
responses that fill the rest of seq_len, so every sequence is seq_len tokens
(no truncation, no padding waste). The reference is a frozen copy of the
starting weights (TRL's default ref_model). bf16 weights and compute, SDPA
attention, AdamW, no gradient checkpointing. With Liger (the default)
DPOConfig turns on Liger-Kernel's model patches and, where this TRL has it,
Liger's fused linear DPO loss (use_liger_loss).

Writes OUT.json: pairs_per_s, tokens_per_s (2 sequences of seq_len per
pair), step_ms (median after the warm-up steps), peak_mem_gib
(torch.cuda.max_memory_allocated), loss_first / loss_last, config, and oom
(null, or the error's first line).
"""
import argparse
import dataclasses
import json
import statistics
import time

import torch

PRESETS = {
    "llama3_1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=8192, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True),
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                 intermediate_size=688, vocab_size=32000, rope_theta=10000.0, tie_word_embeddings=True),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama3_1b", choices=sorted(PRESETS))
    p.add_argument("--pairs", type=int, default=8, help="pairs per optimizer step (one micro-batch)")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--no-liger", action="store_true")
    p.add_argument("--json", required=True)
    return p.parse_args()


def random_pairs(n, seq_len, vocab, tokenizer_offset=3):
    """Token-id pairs as TRL's tokenized preference columns."""
    g = torch.Generator().manual_seed(0)
    prompt_len = seq_len // 4
    rows = []
    for _ in range(n):
        prompt = torch.randint(tokenizer_offset, vocab, (prompt_len,), generator=g).tolist()
        chosen = torch.randint(tokenizer_offset, vocab, (seq_len - prompt_len,), generator=g).tolist()
        rejected = torch.randint(tokenizer_offset, vocab, (seq_len - prompt_len,), generator=g).tolist()
        rows.append({"prompt_input_ids": prompt, "chosen_input_ids": chosen, "rejected_input_ids": rejected})
    return rows


def main():
    args = parse_args()
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    config = LlamaConfig(max_position_embeddings=max(2048, args.seq_len), **PRESETS[args.preset])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", torch_dtype=torch.bfloat16)
    model.to("cuda")

    rows = random_pairs(args.pairs * (args.steps + 1), args.seq_len, config.vocab_size)
    dataset = Dataset.from_list(rows)
    # A stand-in tokenizer: the data is already token ids; TRL reads the
    # special ids and pads with pad_token_id.
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<pad>": 0, "<s>": 1, "</s>": 2}, "<pad>")),
                                  pad_token="<pad>", bos_token="<s>", eos_token="</s>")

    fields = {f.name for f in dataclasses.fields(DPOConfig)}
    options = dict(output_dir="/tmp/trl_dpo_liger", per_device_train_batch_size=args.pairs,
                   gradient_accumulation_steps=1, max_steps=args.steps, learning_rate=5e-7, beta=args.beta,
                   bf16=True, logging_steps=1, save_strategy="no", report_to=[], max_length=2 * args.seq_len,
                   remove_unused_columns=False, dataloader_num_workers=0)
    if "max_prompt_length" in fields:
        options["max_prompt_length"] = args.seq_len
    if not args.no_liger:
        options["use_liger_kernel"] = True
        if "use_liger_loss" in fields:
            options["use_liger_loss"] = True
    options = {k: v for k, v in options.items() if k in fields}

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.losses, self.start = [], [], None

        def on_step_begin(self, *a, **k):
            torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

    timer = Timer()
    result = {"config": dict(vars(args), dpo_config={k: str(v) for k, v in options.items()}), "oom": None}
    try:
        trainer = DPOTrainer(model=model, args=DPOConfig(**options), train_dataset=dataset,
                             processing_class=tok, callbacks=[timer])
        torch.cuda.reset_peak_memory_stats()
        trainer.train()
        steady = timer.times[args.warmup:] or timer.times
        step_s = statistics.median(steady)
        result.update(step_ms=1000 * step_s, pairs_per_s=args.pairs / step_s,
                      tokens_per_s=2 * args.pairs * args.seq_len / step_s,
                      peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30,
                      loss_first=timer.losses[0] if timer.losses else None,
                      loss_last=timer.losses[-1] if timer.losses else None)
    except torch.cuda.OutOfMemoryError as error:
        result["oom"] = str(error).splitlines()[0]
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
