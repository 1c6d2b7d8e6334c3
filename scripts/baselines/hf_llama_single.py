#!/usr/bin/env python3
"""Single-GPU baseline for the end-to-end comparison: HF transformers Llama
(eager, SDPA attention), optionally with Liger-Kernel, same shapes, batch and
sequence as configs/bench/llama3_1b_h100.yaml.

    python3 scripts/baselines/hf_llama_single.py --preset llama3_1b --micro-batch 4 --seq-len 2048 \\
        --steps 20 --warmup 5 --precision bf16|bf16-mixed [--liger] [--ac] --json OUT.json

bf16: model.to(bfloat16) and fused AdamW over the bf16 parameters (what HF
users do); bf16-mixed: fp32 parameters and AdamW state, forward under
torch.autocast(bf16). Random init from a LlamaConfig (nothing is downloaded),
random (seeded) token ids. Writes tokens_per_s, step_ms (median after the
warm-up steps), peak_mem_gib (torch.cuda.max_memory_allocated), mfu (same
FLOPs/token formula as fsdp2_hf_llama.py and liger-train), loss_first /
loss_last, config, and oom (null, or the error's first line: an out-of-memory
is reported, not raised).
"""
import argparse
import contextlib
import json
import statistics
import time

import torch

from fsdp2_hf_llama import PEAK_BF16_FLOPS, PRESETS, apply_liger, flops_per_token, is_oom, llama_config, \
    reset_rotary, write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="llama3_1b", choices=sorted(PRESETS))
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "bf16-mixed"])
    ap.add_argument("--liger", action="store_true", help="apply Liger-Kernel to the HF Llama")
    ap.add_argument("--ac", action="store_true", help="activation checkpointing per layer (HF gradient checkpointing)")
    ap.add_argument("--lr", type=float, default=2e-5, help="AdamW learning rate (configs/bench/llama3_1b_h100.yaml's)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    from transformers import LlamaForCausalLM
    if args.liger:
        apply_liger()  # patches the HF Llama modules: before the model is built
    config = llama_config(args.preset, args.seq_len)
    device = torch.device("cuda")
    torch.manual_seed(0)
    with device:
        model = LlamaForCausalLM(config)  # fp32, HF's own init
    if args.precision == "bf16":
        model = model.to(torch.bfloat16)
        reset_rotary(model, config, device)  # inv_freq stays fp32, as with from_pretrained(dtype=bf16)
    if args.ac:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if args.precision == "bf16-mixed"
                else contextlib.nullcontext())
    gen = torch.Generator(device="cpu").manual_seed(1234)
    times, losses, oom = [], [], None
    try:
        for step in range(args.steps):
            ids = torch.randint(0, config.vocab_size, (args.micro_batch, args.seq_len), generator=gen).to(device)
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
            del out
            print(f"step {step + 1}: loss {losses[-1]:.4f} {times[-1] * 1e3:.0f} ms", flush=True)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
        if not is_oom(e):
            raise
        oom = f"step {len(times) + 1}: " + str(e).strip().splitlines()[0]
        print(f"out of memory: {oom}", flush=True)

    steady = times[args.warmup:] if len(times) > args.warmup else times  # all steps if fewer than the warm-up
    step_s = statistics.median(steady) if steady else float("nan")
    tps = args.micro_batch * args.seq_len / step_s if steady else 0.0
    cfg = PRESETS[args.preset]
    result = {
        "baseline": "hf" + ("+liger" if args.liger else ""),
        "precision": args.precision,
        "steps_timed": len(steady),
        "steps_done": len(times),
        "step_ms": round(step_s * 1e3, 1) if steady else None,
        "tokens_per_s": round(tps),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
        "mfu": round(tps * flops_per_token(cfg, args.seq_len) / PEAK_BF16_FLOPS, 4),
        "flops_per_token": flops_per_token(cfg, args.seq_len),
        "peak_flops": PEAK_BF16_FLOPS,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "oom": oom,
        "config": {"preset": args.preset, **cfg, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
                   "steps": args.steps, "warmup": args.warmup, "precision": args.precision,
                   "activation_checkpointing": args.ac, "liger": args.liger, "attention": "sdpa",
                   "optimizer": f"AdamW(fused, lr={args.lr:g}, betas=(0.9, 0.95), weight_decay=0.1), clip 1.0"},
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device),
    }
    print(json.dumps(result), flush=True)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
