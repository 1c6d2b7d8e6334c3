#!/usr/bin/env python3
"""Single-GPU baseline for the end-to-end comparison: HF transformers Llama
(eager, SDPA attention), optionally with Liger-Kernel, same shapes, batch and
sequence as configs/bench/llama3_1b_h100.yaml.

    python3 scripts/baselines/hf_llama_single.py --preset llama3_1b --micro-batch 4 --seq-len 2048 \\
        --steps 20 --warmup 5 --precision bf16|bf16-mixed [--liger] [--ac] --json OUT.json

bf16: model.to(bfloat16) and fused AdamW over the bf16 parameters (what HF
users do); bf16-mixed: fp32 parameters and AdamW state, forward under
torch.autocast(bf16). --lora RANK: PEFT LoRA (alpha 2 x RANK, no dropout) on all
seven projections of a base frozen in bf16, adapters in fp32 (PEFT's default)
with the forward under torch.autocast(bf16), AdamW over the adapters only (what
an HF + PEFT user runs; needs `peft`). Random init from a LlamaConfig (nothing is downloaded),
random (seeded) token ids. Writes tokens_per_s, step_ms (median after the
warm-up steps), peak_mem_gib (torch.cuda.max_memory_allocated), mfu (same
FLOPs/token formula as fsdp2_hf_llama.py and liger-train), loss_first /
loss_last, config (under --lora, mfu counts 4 FLOPs per frozen matmul parameter and
token, forward 2 + input gradient 2, and 6 per adapter parameter), and oom (null, or the error's first line: an out-of-memory
is reported, not raised).
"""
import argparse
import contextlib
import json
import statistics
import time

import torch

from fsdp2_hf_llama import PEAK_BF16_FLOPS, PRESETS, apply_liger, flops_per_token, is_oom, llama_config, \
    matmul_params, reset_rotary, write_json


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
    ap.add_argument("--lora", type=int, default=0, metavar="RANK",
                    help="PEFT LoRA of this rank on q k v o gate up down, base frozen in bf16 (0: full fine-tuning)")
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
    if args.precision == "bf16" or args.lora:
        model = model.to(torch.bfloat16)
        reset_rotary(model, config, device)  # inv_freq stays fp32, as with from_pretrained(dtype=bf16)
    if args.ac:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.lora:
        from peft import LoraConfig, get_peft_model
        if args.ac:
            model.enable_input_require_grads()  # checkpointed layers need an input that requires grad
        model = get_peft_model(model, LoraConfig(
            r=args.lora, lora_alpha=2 * args.lora, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if args.precision == "bf16-mixed" or args.lora
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
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
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
    # Under --lora every matmul of the base (lm_head too) is frozen: forward 2 + input gradient 2
    # FLOPs per parameter and token, not 6; the adapters cost 6 per parameter and token.
    flops = flops_per_token(cfg, args.seq_len)
    if args.lora:
        flops += -2 * matmul_params(cfg) + 6 * sum(p.numel() for p in trainable)
    result = {
        "baseline": "hf" + ("+peft" if args.lora else "") + ("+liger" if args.liger else ""),
        "precision": args.precision,
        "steps_timed": len(steady),
        "steps_done": len(times),
        "step_ms": round(step_s * 1e3, 1) if steady else None,
        "tokens_per_s": round(tps),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
        "mfu": round(tps * flops / PEAK_BF16_FLOPS, 4),
        "flops_per_token": flops,
        "trainable_params": sum(p.numel() for p in trainable),
        "peak_flops": PEAK_BF16_FLOPS,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "oom": oom,
        "config": {"preset": args.preset, **cfg, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
                   "steps": args.steps, "warmup": args.warmup, "precision": args.precision,
                   "activation_checkpointing": args.ac, "liger": args.liger, "lora_rank": args.lora, "attention": "sdpa",
                   "optimizer": f"AdamW(fused, lr={args.lr:g}, betas=(0.9, 0.95), weight_decay=0.1), clip 1.0"},
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device),
    }
    print(json.dumps(result), flush=True)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
