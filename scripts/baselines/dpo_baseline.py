"""What the two DPO baselines share (trl_dpo_liger.py and hf_dpo_liger_loop.py):
the model presets, the command line, the per-step timing summary and the
JSON result. Same shapes and fields on both sides, so bench/e2e_dpo.sh can put
either beside liger-train."""
import argparse
import json
import os
import statistics

import torch

PRESETS = {
    "llama3_1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=8192, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True),
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                 intermediate_size=688, vocab_size=32000, rope_theta=10000.0, tie_word_embeddings=True),
}


def argument_parser(description):
    """The options both baselines take (each may add its own)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama3_1b", choices=sorted(PRESETS))
    p.add_argument("--pairs", type=int, default=8, help="pairs per optimizer step (one micro-batch)")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--no-liger", action="store_true")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--json", required=True)
    return p


def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def summarize(result, args, times, losses):
    """Adds the step figures to result: step_ms (median after the warm-up
    steps), pairs_per_s, tokens_per_s (2 sequences of seq_len per pair),
    peak_mem_gib (0 on the CPU), loss_first / loss_last."""
    step_s = statistics.median(times[args.warmup:] or times)
    result.update(step_ms=1000 * step_s, pairs_per_s=args.pairs / step_s,
                  tokens_per_s=2 * args.pairs * args.seq_len / step_s,
                  peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else 0.0,
                  loss_first=losses[0] if losses else None, loss_last=losses[-1] if losses else None)


def write_result(path, result):
    """result as JSON at path (written whole or not at all), and on stdout."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, path)
    print(json.dumps(result))
