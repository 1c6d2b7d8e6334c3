#!/usr/bin/env python3
"""Baseline for the distributed comparison: PyTorch FSDP2 (`fully_shard`) on the
Hugging Face transformers Llama, same shapes, batch and sequence as liger-train.

    torchrun --standalone --nproc_per_node 2 scripts/baselines/fsdp2_hf_llama.py \
        --preset llama3_8b --seq-len 8192 --micro-batch 1 --steps 20 --warmup 3 \
        [--liger] [--no-ac] --json OUT.json

Random init from a LlamaConfig (nothing is downloaded), fp32 master parameters,
bf16 compute, fp32 gradient reduction (MixedPrecisionPolicy), SDPA attention,
activation checkpointing per decoder layer (unless --no-ac), fused AdamW.
--liger applies Liger-Kernel (RoPE, RMSNorm, SwiGLU, fused linear cross entropy)
from its published wheel. Rank 0 writes tokens/s per GPU, the step time, the
peak memory (max over ranks of torch.cuda.max_memory_allocated) and MFU.
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist

PRESETS = {
    "llama3_8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=14336, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=False),
    "llama3_1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=8192, vocab_size=128256, rope_theta=500000.0, tie_word_embeddings=True),
}
PEAK_BF16_FLOPS = 989e12  # dense bf16 peak of an H100 / H200 SXM


def flops_per_token(cfg, seq_len):
    """6 * (parameters outside the embedding lookup) + attention scores and values:
    12 * layers * hidden * seq (forward + backward, the usual MFU convention; no
    causal halving, no recompute)."""
    h, layers, ffn, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = h * cfg["num_key_value_heads"] // cfg["num_attention_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * ffn
    dense = layers * per_layer + v * h  # lm_head (tied or not, it is a matmul)
    return 6 * dense + 12 * layers * h * seq_len


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama3_8b", choices=sorted(PRESETS))
    ap.add_argument("--seq-len", type=int, default=8192)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--liger", action="store_true")
    ap.add_argument("--no-ac", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    device = torch.device("cuda", local)

    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from transformers import LlamaConfig, LlamaForCausalLM

    if args.liger:
        from liger_kernel.transformers import apply_liger_kernel_to_llama
        apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=True)
    cfg = dict(PRESETS[args.preset])
    config = LlamaConfig(**cfg, max_position_embeddings=max(8192, args.seq_len), attn_implementation="sdpa",
                         torch_dtype=torch.float32)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    if not args.no_ac:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
        for i, layer in enumerate(model.model.layers):
            model.model.layers[i] = checkpoint_wrapper(layer)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model.model.layers:
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1, fused=True)

    gen = torch.Generator(device="cpu").manual_seed(1234 + rank)
    times, losses, oom = [], [], None
    try:
        for step in range(args.steps):
            ids = torch.randint(0, cfg["vocab_size"], (args.micro_batch, args.seq_len), generator=gen).to(device)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            losses.append(out.loss.item())
            if rank == 0:
                print(f"step {step + 1}: loss {losses[-1]:.4f} {times[-1] * 1e3:.0f} ms", flush=True)
    except torch.OutOfMemoryError as e:
        oom = str(e).splitlines()[0]
    peak = torch.tensor([torch.cuda.max_memory_allocated(device)], device=device, dtype=torch.float64)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    if rank == 0:
        steady = times[args.warmup:] or times
        step_s = statistics.median(steady) if steady else float("nan")
        tokens = args.micro_batch * args.seq_len
        tps = tokens / step_s
        result = {
            "baseline": "fsdp2+hf" + ("+liger" if args.liger else ""), "preset": args.preset, "world_size": world,
            "seq_len": args.seq_len, "micro_batch": args.micro_batch, "activation_checkpointing": not args.no_ac,
            "steps": len(times), "step_ms": round(step_s * 1e3, 1), "tokens_per_s_per_gpu": round(tps),
            "peak_mem_gib_per_gpu": round(peak.item() / 2**30, 2),
            "mfu": round(tps * flops_per_token(cfg, args.seq_len) / PEAK_BF16_FLOPS, 4),
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "oom": oom, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(device),
        }
        print(json.dumps(result), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
