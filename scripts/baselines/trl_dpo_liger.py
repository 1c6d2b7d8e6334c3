#!/usr/bin/env python3
"""Baseline for the DPO comparison: TRL's DPOTrainer with Liger-Kernel on a
Hugging Face Llama, same shapes as liger-train's DPO run (GPU machine).

    python scripts/baselines/trl_dpo_liger.py --preset llama3_1b --pairs 8 \\
        --seq-len 1024 --steps 20 --warmup 5 [--no-liger] --json OUT.json
    # CPU smoke test (no Liger: its kernels are Triton):
    python scripts/baselines/trl_dpo_liger.py --preset tiny --pairs 2 --seq-len 64 \\
        --steps 3 --warmup 1 --no-liger --device cpu --json /tmp/trl.json

Random init from a LlamaConfig (nothing is downloaded) and random preference
pairs: each pair is a prompt of seq_len / 4 tokens and two responses that fill
the rest of seq_len (the last token is EOS), so every sequence is seq_len
tokens (no truncation, no padding waste). The pairs are text of words "w<id>"
and a word-level stand-in tokenizer maps each word to token id <id>, so TRL's
own tokenization gives exactly those ids (TRL 1.x tokenizes text itself). The
reference is a frozen copy of the starting weights (TRL's default ref_model,
passed explicitly: a model built from a config has no path TRL could reload).
bf16 weights and compute (fp32 on the CPU), SDPA attention, AdamW, no
gradient checkpointing. With Liger (the default) DPOConfig turns on
Liger-Kernel's model patches (RMSNorm, RoPE, SwiGLU; TRL 1.x computes the
log-probs with its own chunked LM head and has no use_liger_loss), and the
reference copy gets the same patches; where a TRL has use_liger_loss (0.x), it
is turned on as well.

Writes OUT.json: pairs_per_s, tokens_per_s (2 sequences of seq_len per
pair), step_ms (median after the warm-up steps), peak_mem_gib
(torch.cuda.max_memory_allocated; 0 on the CPU), loss_first / loss_last,
versions, config, and oom (null, or the error's first line). One line per
step on stdout: "step N: loss X T ms".
"""
import copy
import dataclasses
import time

import torch

from dpo_baseline import PRESETS, argument_parser, summarize, synchronize, write_result

PAD, EOS, FIRST_WORD = 0, 1, 2  # token ids of the stand-in tokenizer


def parse_args():
    p = argument_parser(__doc__)
    return p.parse_args()


def random_text_pairs(n, seq_len, vocab):
    """Preference rows of words 'w<id>': prompt + response = seq_len tokens with the EOS TRL appends."""
    g = torch.Generator().manual_seed(0)
    prompt_len = seq_len // 4
    response_len = seq_len - prompt_len - 1  # TRL appends EOS to each response

    def words(k):
        return " ".join(f"w{i}" for i in torch.randint(FIRST_WORD, vocab, (k,), generator=g).tolist())

    # The responses start with a space: the prompt's words stay a prefix of prompt + response.
    return [{"prompt": words(prompt_len), "chosen": " " + words(response_len), "rejected": " " + words(response_len)}
            for _ in range(n)]


def word_tokenizer(vocab):
    """A fast tokenizer whose word 'w<id>' is token <id>; '<pad>' and '</s>' are special."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast
    ids = {"<pad>": PAD, "</s>": EOS, **{f"w{i}": i for i in range(FIRST_WORD, vocab)}}
    backend = Tokenizer(WordLevel(ids, unk_token="<pad>"))
    backend.pre_tokenizer = WhitespaceSplit()
    backend.add_special_tokens([AddedToken("<pad>", special=True), AddedToken("</s>", special=True)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>")


def main():
    args = parse_args()
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, LlamaConfig, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    config = LlamaConfig(max_position_embeddings=max(2048, args.seq_len), **PRESETS[args.preset])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype).to(args.device)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    liger_version = None
    if not args.no_liger:
        # The same kernels in the reference as in the policy (the trainer patches only the policy).
        from importlib.metadata import version
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
        liger_version = version("liger-kernel")
        _apply_liger_kernel_to_instance(model=ref_model, fused_linear_cross_entropy=False)

    dataset = Dataset.from_list(random_text_pairs(args.pairs * (args.steps + 1), args.seq_len, config.vocab_size))
    tok = word_tokenizer(config.vocab_size)

    fields = {f.name for f in dataclasses.fields(DPOConfig)}
    options = dict(output_dir="/tmp/trl_dpo_liger", per_device_train_batch_size=args.pairs,
                   gradient_accumulation_steps=1, max_steps=args.steps, learning_rate=5e-7, beta=args.beta,
                   bf16=args.device == "cuda", use_cpu=args.device == "cpu", logging_steps=1, save_strategy="no",
                   report_to=[], max_length=args.seq_len, remove_unused_columns=False, dataloader_num_workers=0,
                   gradient_checkpointing=False)
    if "max_prompt_length" in fields:  # TRL 0.x
        options["max_prompt_length"] = args.seq_len
    if not args.no_liger:
        options["use_liger_kernel"] = True
        if "use_liger_loss" in fields:  # TRL 0.x only
            options["use_liger_loss"] = True
    options = {k: v for k, v in options.items() if k in fields}

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.losses, self.start = [], [], None

        def on_step_begin(self, *a, **k):
            synchronize(args.device)
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            synchronize(args.device)
            self.times.append(time.perf_counter() - self.start)

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])
                if self.times:
                    print(f"step {len(self.times)}: loss {logs['loss']:.4f} {1000 * self.times[-1]:.0f} ms", flush=True)

    timer = Timer()
    result = {"baseline": "TRL DPOTrainer" + ("" if args.no_liger else " + Liger-Kernel"),
              "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__,
                           "liger_kernel": liger_version},
              "config": dict(vars(args), dpo_config={k: str(v) for k, v in options.items()}), "oom": None}
    try:
        trainer = DPOTrainer(model=model, ref_model=ref_model, args=DPOConfig(**options), train_dataset=dataset,
                             processing_class=tok, callbacks=[timer])
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        summarize(result, args, timer.times, timer.losses)
    except torch.cuda.OutOfMemoryError as error:
        result["oom"] = str(error).splitlines()[0]
    write_result(args.json, result)


if __name__ == "__main__":
    main()
