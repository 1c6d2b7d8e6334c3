#!/usr/bin/env python3
"""Single-GPU baseline for the end-to-end comparison: HF transformers Llama
(eager, SDPA attention), optionally with Liger-Kernel, same shapes, batch and
sequence as configs/bench/llama3_1b_h100.yaml.

    python3 scripts/baselines/hf_llama_single.py --preset llama3_1b --micro-batch 4 --seq-len 2048 \
        --steps 30 --warmup 5 --precision bf16|bf16-mixed [--liger] [--ac] --json OUT.json

bf16: model.to(bfloat16) and fused AdamW over the bf16 parameters (what HF
users do); bf16-mixed: fp32 parameters and AdamW state with torch.autocast(bf16).
Random init from a LlamaConfig, random token ids. Writes tokens/s, the median
step time, the peak memory (torch.cuda.max_memory_allocated) and MFU.
"""
import argparse
import contextlib
import json
import statistics
import time

import torch

from fsdp2_hf_llama import PEAK_BF16_FLOPS, PRESETS, flops_per_token


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llama3_1b", choices=sorted(PRESETS))
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "bf16-mixed"])
    ap.add_argument("--liger", action="store_true")
    ap.add_argument("--ac", action="store_true", help="activation checkpointing per layer")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    from transformers import LlamaConfig, LlamaForCausalLM
    if args.liger:
        from liger_kernel.transformers import apply_liger_kernel_to_llama
        apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=True)
    cfg = dict(PRESETS[args.preset])
    config = LlamaConfig(**cfg, max_position_embeddings=max(8192, args.seq_len), attn_implementation="sdpa")
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = LlamaForCausalLM(config).to(device)
    if args.precision == "bf16":
        model = model.to(torch.bfloat16)
    if args.ac:
        model.gradient_checkpointing_enable()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if args.precision == "bf16-mixed"
                else contextlib.nullcontext())
    gen = torch.Generator(device="cpu").manual_seed(1234)
    times, losses, oom = [], [], None
    torch.cuda.reset_peak_memory_stats(device)
    try:
        for step in range(args.steps):
            ids = torch.randint(0, cfg["vocab_size"], (args.micro_batch, args.seq_len), generator=gen).to(device)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with autocast:
                out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            losses.append(out.loss.item())
    except torch.OutOfMemoryError as e:
        oom = str(e).splitlines()[0]
    steady = times[args.warmup:] or times
    step_s = statistics.median(steady) if steady else float("nan")
    tps = args.micro_batch * args.seq_len / step_s
    result = {
        "baseline": "hf" + ("+liger" if args.liger else ""), "precision": args.precision, "preset": args.preset,
        "micro_batch": args.micro_batch, "seq_len": args.seq_len, "activation_checkpointing": args.ac,
        "steps": len(times), "step_ms": round(step_s * 1e3, 1), "tokens_per_s": round(tps),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
        "mfu": round(tps * flops_per_token(cfg, args.seq_len) / PEAK_BF16_FLOPS, 4),
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "oom": oom, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(device),
    }
    print(json.dumps(result), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
