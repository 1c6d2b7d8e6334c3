#!/usr/bin/env python3
"""Baseline for the distributed comparison: PyTorch FSDP2 (`fully_shard`) on the
Hugging Face transformers Llama, same shapes, batch and sequence as liger-train.

    torchrun --standalone --nproc_per_node 2 scripts/baselines/fsdp2_hf_llama.py \\
        --preset llama3_8b --seq-len 8192 --micro-batch 1 --steps 20 --warmup 5 \\
        [--liger] [--no-ac] --json OUT.json

Random init from a LlamaConfig (nothing is downloaded): the model is built on the
meta device, sharded with `fully_shard` per decoder layer and on the root, then
materialised with `to_empty` and initialised. fp32 master parameters, bf16
compute, fp32 gradient reduction (MixedPrecisionPolicy), SDPA attention,
activation checkpointing per decoder layer (unless --no-ac), fused AdamW,
random (seeded) token ids. --liger applies Liger-Kernel (RoPE, RMSNorm, SwiGLU,
fused linear cross entropy) from its wheel before the model is built.

Rank 0 writes OUT.json: tokens_per_s_per_gpu, step_ms (median after the
warm-up steps), peak_mem_gib (per GPU: the max over ranks of
torch.cuda.max_memory_allocated), mfu, loss_first / loss_last (mean over ranks),
config, and oom (null, or the error's first line: an out-of-memory is reported,
not raised; the rank that hits it writes OUT.json at once, as the others may
be stuck in a collective).
"""
import argparse
import datetime
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
PEAK_BF16_FLOPS = 989e12  # dense (no sparsity) bf16 peak of one H100 / H200 SXM


def flops_per_token(cfg, seq_len):
    """Training FLOPs per token, the formula liger-train's mfu uses
    (ModelConfig::training_flops_per_token):

        6 * P + 12 * layers * hidden * seq

    P = the parameters of every matmul (q, k, v, o, gate, up, down of each layer,
    plus lm_head, which is a matmul whether tied to the embedding or not; the
    embedding lookup and the norms are not counted). 6 = forward 2 + backward 4
    per parameter and token. 12 * layers * hidden * seq: attention scores and
    the weighted sum of values, forward + backward, without halving for the
    causal mask. Activation recomputation is not counted (it is overhead)."""
    return 6 * matmul_params(cfg) + 12 * cfg["num_hidden_layers"] * cfg["hidden_size"] * seq_len


def matmul_params(cfg):
    """The parameters of every matmul: q, k, v, o, gate, up, down of each layer, plus lm_head."""
    h, layers, ffn, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = h * cfg["num_key_value_heads"] // cfg["num_attention_heads"]
    return layers * (2 * h * h + 2 * h * kv + 3 * h * ffn) + v * h


def llama_config(preset, seq_len):
    from transformers import LlamaConfig
    return LlamaConfig(**PRESETS[preset], max_position_embeddings=max(8192, seq_len), attn_implementation="sdpa")


def reset_rotary(model, config, device):
    """Recompute the rotary embedding's inv_freq buffers in fp32 on `device`.
    They are not parameters: `to_empty` leaves them uninitialised and
    `.to(bfloat16)` rounds them; an HF model loaded in bf16 keeps them fp32.
    Any HF decoder with `model.model.rotary_emb` (Llama, Mixtral)."""
    rotary = model.model.rotary_emb
    with torch.device("cpu"):
        fresh = type(rotary)(config)
    for name, buf in fresh.named_buffers(recurse=False):
        setattr(rotary, name, buf.to(device=device, dtype=torch.float32))
    for name in ("original_inv_freq",):  # a plain attribute in some transformers versions
        if hasattr(rotary, name) and name not in dict(rotary.named_buffers(recurse=False)):
            setattr(rotary, name, rotary.inv_freq.clone())


def apply_liger():
    # Imported only when asked: the wheel is carried onto the GPU machine.
    from liger_kernel.transformers import apply_liger_kernel_to_llama
    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=True)


def is_oom(e):
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def write_json(path, result):
    if not path:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


def summary(args, world, times, losses, peak_bytes, oom):
    steady = times[args.warmup:] if len(times) > args.warmup else times  # all steps if fewer than the warm-up
    step_s = statistics.median(steady) if steady else float("nan")
    tokens = args.micro_batch * args.seq_len  # per GPU and step
    tps = tokens / step_s if steady else 0.0
    cfg = PRESETS[args.preset]
    return {
        "baseline": "fsdp2+hf" + ("+liger" if args.liger else ""),
        "world_size": world,
        "steps_timed": len(steady),
        "steps_done": len(times),
        "step_ms": round(step_s * 1e3, 1) if steady else None,
        "tokens_per_s_per_gpu": round(tps),
        "tokens_per_s": round(tps * world),
        "peak_mem_gib": round(peak_bytes / 2**30, 2),
        "mfu": round(tps * flops_per_token(cfg, args.seq_len) / PEAK_BF16_FLOPS, 4),
        "flops_per_token": flops_per_token(cfg, args.seq_len),
        "peak_flops": PEAK_BF16_FLOPS,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "oom": oom,
        "config": {"preset": args.preset, **cfg, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
                   "steps": args.steps, "warmup": args.warmup, "activation_checkpointing": not args.no_ac,
                   "liger": args.liger, "param_dtype": "bfloat16", "reduce_dtype": "float32",
                   "master_dtype": "float32", "attention": "sdpa",
                   "optimizer": f"AdamW(fused, lr={args.lr:g}, betas=(0.9, 0.95), weight_decay=0.1), clip 1.0"},
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="llama3_8b", choices=sorted(PRESETS))
    ap.add_argument("--seq-len", type=int, default=8192)
    ap.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU and step")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    ap.add_argument("--liger", action="store_true", help="apply Liger-Kernel to the HF Llama")
    ap.add_argument("--no-ac", action="store_true", help="no activation checkpointing")
    ap.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate")
    ap.add_argument("--json", default="", help="where rank 0 writes the result")
    args = ap.parse_args()

    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    device = torch.device("cuda", local)
    # A rank that hits an OOM leaves the others waiting in a collective: give up after 5 minutes.
    dist.init_process_group("nccl", device_id=device, timeout=datetime.timedelta(minutes=5))
    rank, world = dist.get_rank(), dist.get_world_size()

    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import DTensor
    from transformers import LlamaForCausalLM

    if args.liger:
        apply_liger()  # patches the HF Llama modules: before the model is built
    config = llama_config(args.preset, args.seq_len)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)  # fp32 parameters: the master weights
    if not args.no_ac:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
        for i, layer in enumerate(model.model.layers):
            model.model.layers[i] = checkpoint_wrapper(layer)  # non-reentrant torch.utils.checkpoint
    # Parameters are gathered in bf16 for compute; gradients are reduce-scattered in fp32.
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model.model.layers:
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)  # embeddings, final norm, lm_head
    model.to_empty(device=device)
    torch.manual_seed(1000 + rank)  # each rank initialises its own shards
    with torch.no_grad():
        for name, p in model.named_parameters():
            local_p = p.to_local() if isinstance(p, DTensor) else p
            if p.dim() == 1:
                local_p.fill_(1.0)  # RMSNorm weights
            else:
                local_p.normal_(0.0, config.initializer_range)
    reset_rotary(model, config, device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)

    gen = torch.Generator(device="cpu").manual_seed(1234 + rank)
    times, losses, oom = [], [], None
    try:
        for step in range(args.steps):
            ids = torch.randint(0, config.vocab_size, (args.micro_batch, args.seq_len), generator=gen).to(device)
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
            del out
            if rank == 0:
                print(f"step {step + 1}: loss {losses[-1]:.4f} {times[-1] * 1e3:.0f} ms "
                      f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB", flush=True)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
        if not is_oom(e):
            raise
        oom = f"rank {rank}, step {len(times) + 1}: " + str(e).strip().splitlines()[0]
        print(f"out of memory: {oom}", flush=True)
        # Write now: the other ranks may never reach the collectives below.
        write_json(args.json, summary(args, world, times, losses, torch.cuda.max_memory_allocated(device), oom))
        out = None
        opt.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()

    # Every rank gets here only if none is stuck: agree on the outcome, then summarise.
    ooms = [None] * world
    dist.all_gather_object(ooms, oom)
    stats = torch.tensor([float(torch.cuda.max_memory_allocated(device)), float(len(times)), -float(len(times))],
                         device=device, dtype=torch.float64)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)  # peak, most steps, -fewest steps
    peak = stats[0].item()
    if stats[1].item() == -stats[2].item() and losses:  # the same steps everywhere: mean loss over ranks
        loss_t = torch.tensor(losses, device=device, dtype=torch.float64)
        dist.all_reduce(loss_t, op=dist.ReduceOp.SUM)
        losses = (loss_t / world).tolist()
    if rank == 0:
        oom = next((o for o in ooms if o), None)
        result = summary(args, world, times, losses, peak, oom)
        print(json.dumps(result), flush=True)
        write_json(args.json, result)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
