#!/usr/bin/env python3
"""Single-GPU baseline of the MoE comparison: HF transformers Mixtral
(MixtralForCausalLM, SDPA attention), optionally with Liger-Kernel, at the
shapes, batch and sequence of configs/bench/moe_h100.yaml.

    python3 scripts/baselines/hf_moe_liger.py --preset moe_h100 --micro-batch 4 --seq-len 2048 \\
        --steps 30 --warmup 5 [--liger] [--ac] [--experts default|eager|grouped_mm] --json OUT.json
    python3 scripts/baselines/hf_moe_liger.py --device cpu --preset tiny --micro-batch 2 --seq-len 64 --steps 3
    python3 scripts/baselines/hf_moe_liger.py --preset moe_h100 --count   # parameters only (meta device)

Presets: moe_h100 = configs/bench/moe_h100.yaml's model section on the
mixtral_8x7b preset of models/model_config.cpp (8 experts, top 2, hidden 2048,
16 layers, 32/8 heads of 64, expert FFN 5632, vocab 32000, RoPE theta 1e6, no
sliding window, RMSNorm eps 1e-5, untied embeddings, load-balancing loss on
with weight 0.001); tiny = the tiny_mixtral preset (a CPU smoke run).

Random init from a MixtralConfig (nothing is downloaded), random (seeded)
token ids. bf16: model.to(bfloat16) (the rotary inv_freq kept fp32) and fused
AdamW over the bf16 parameters: bf16 weights, gradients and AdamW state, the
update rounded to nearest (liger-train's `precision: bf16` rounds it
stochastically); bf16-mixed: fp32 parameters and AdamW state, forward under
torch.autocast(bf16). --liger applies Liger-Kernel's
apply_liger_kernel_to_mixtral (RoPE, RMSNorm, fused linear cross entropy, and
with transformers 5 its LigerExperts: the fused MoE) before the model is
built. --experts picks HF's experts implementation without --liger (default:
what transformers chooses, grouped_mm where torch._grouped_mm can run; eager:
the loop over experts). --ac: gradient checkpointing per decoder layer.

Writes tokens_per_s, step_ms (median after the warm-up steps), peak_mem_gib
(torch.cuda.max_memory_allocated from the first step on, as liger-train
counts; null on the CPU), mfu (liger-train's FLOPs per token: the router and
the 2 experts a token passes through), loss_first / loss_last (LM loss + 0.001
x load-balancing loss, as HF computes it), experts (the experts class and
implementation that ran), config, and oom (null, or the error's first line: an
out-of-memory is reported, not raised).
"""
import argparse
import contextlib
import json
import statistics
import sys
import time

import torch

from fsdp2_hf_llama import PEAK_BF16_FLOPS, is_oom, reset_rotary, write_json

# Mixtral shapes in MixtralConfig's names. router_aux_loss_coef and
# output_router_logits: the bench config's model.output_router_logits: true
# with liger-train's default weight (HF's).
PRESETS = {
    "moe_h100": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=64, intermediate_size=5632, vocab_size=32000, num_local_experts=8,
                     num_experts_per_tok=2, rope_theta=1e6, rms_norm_eps=1e-5, tie_word_embeddings=False,
                     sliding_window=None, max_position_embeddings=4096),
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                 head_dim=32, intermediate_size=384, vocab_size=1024, num_local_experts=4,
                 num_experts_per_tok=2, rope_theta=1e6, rms_norm_eps=1e-5, tie_word_embeddings=False,
                 sliding_window=None, max_position_embeddings=1024),
}
ROUTER_AUX_LOSS_COEF = 0.001
LIGER_HINT = ("install the wheel without network: pip install --no-deps --no-index --target DIR "
              "liger_kernel-0.8.5-py3-none-any.whl, then PYTHONPATH=DIR (bench/e2e_moe.sh does this)")


def mixtral_config(preset, seq_len, experts):
    from transformers import MixtralConfig
    cfg = dict(PRESETS[preset])
    theta = cfg.pop("rope_theta")
    positions = max(cfg.pop("max_position_embeddings"), seq_len)
    extra = {} if experts == "default" else {"experts_implementation": experts}
    config = MixtralConfig(**cfg, rope_parameters={"rope_type": "default", "rope_theta": theta},
                           max_position_embeddings=positions,
                           hidden_act="silu", initializer_range=0.02, router_jitter_noise=0.0,
                           attention_dropout=0.0, output_router_logits=True, router_aux_loss_coef=ROUTER_AUX_LOSS_COEF,
                           use_cache=False, attn_implementation="sdpa", **extra)
    # The rope theta is the one field a transformers version could drop silently.
    got = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", None))
    if got != theta:
        sys.exit(f"hf_moe_liger.py: MixtralConfig kept rope theta {got}, not {theta}: this transformers version "
                 "names it differently; set it in mixtral_config()")
    return config


def matmul_params(cfg):
    """liger-train's ModelConfig::matmul_parameters: q, k, v, o, the router and
    the experts a token passes through (num_experts_per_tok), of each layer,
    plus lm_head."""
    h, layers, ffn, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    mlp = 3 * h * ffn * cfg["num_experts_per_tok"] + cfg["num_local_experts"] * h
    return layers * (2 * h * q + 2 * h * kv + mlp) + v * h


def flops_per_token(cfg, seq_len):
    """liger-train's training_flops_per_token: 6 per matmul parameter a token
    meets, plus attention (12 x layers x heads x head_dim x seq)."""
    q = cfg["num_attention_heads"] * cfg["head_dim"]
    return 6 * matmul_params(cfg) + 12 * cfg["num_hidden_layers"] * q * seq_len


def apply_liger():
    try:  # imported only when asked: the wheel is carried onto the GPU machine
        from liger_kernel.transformers import apply_liger_kernel_to_mixtral
    except ImportError as e:
        sys.exit(f"hf_moe_liger.py: cannot import liger_kernel ({e}): {LIGER_HINT}")
    # Before the model is built: the patch replaces the module classes.
    apply_liger_kernel_to_mixtral(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                  fused_linear_cross_entropy=True)


def liger_version():
    import importlib.metadata
    try:
        return importlib.metadata.version("liger_kernel")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def check_expert_init(model, std):
    """The experts' weights must come out of HF's init (N(0, std)), not torch.empty:
    a patched experts class that HF's _init_weights missed would train garbage."""
    experts = model.model.layers[0].mlp.experts
    w = experts.gate_up_proj.detach()[0].float()
    got = w.std().item()
    if not (0.5 * std < got < 2 * std) or not torch.isfinite(w).all():
        sys.exit(f"hf_moe_liger.py: {type(experts).__name__}.gate_up_proj has std {got:.3g}, not ~{std}: "
                 "HF's init did not reach the experts (transformers / Liger-Kernel versions?)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="moe_h100", choices=sorted(PRESETS))
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "bf16-mixed"])
    ap.add_argument("--liger", action="store_true", help="apply Liger-Kernel to the HF Mixtral")
    ap.add_argument("--experts", default="default", choices=["default", "eager", "grouped_mm", "batched_mm"],
                    help="HF's experts implementation (without --liger)")
    ap.add_argument("--ac", action="store_true", help="activation checkpointing per layer (HF gradient checkpointing)")
    ap.add_argument("--lr", type=float, default=2e-5, help="AdamW learning rate (configs/bench/moe_h100.yaml's)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--count", action="store_true", help="print the parameter counts as JSON (meta device) and exit")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.liger and args.experts != "default":
        ap.error("--experts applies to HF's experts; --liger replaces them with LigerExperts")
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be at least 1 and --warmup at least 0")

    from transformers import MixtralForCausalLM
    import transformers
    cfg = PRESETS[args.preset]
    if args.count:
        with torch.device("meta"):
            model = MixtralForCausalLM(mixtral_config(args.preset, args.seq_len, args.experts))
        total = sum(p.numel() for p in model.parameters())
        print(json.dumps({"preset": args.preset, "parameters": total, "matmul_parameters": matmul_params(cfg),
                          "flops_per_token": flops_per_token(cfg, args.seq_len)}))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("hf_moe_liger.py: no CUDA device visible: run on a GPU, or pass --device cpu --preset tiny")
    if args.liger:
        apply_liger()
    config = mixtral_config(args.preset, args.seq_len, args.experts)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    times, losses, oom, experts = [], [], None, None
    try:
        with device:
            model = MixtralForCausalLM(config)  # fp32, HF's own init
        check_expert_init(model, config.initializer_range)
        if args.precision == "bf16":
            model = model.to(torch.bfloat16)
            reset_rotary(model, config, device)  # inv_freq stays fp32, as with from_pretrained(dtype=bf16)
        if args.ac:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        mlp = model.model.layers[0].mlp
        experts = {"class": type(mlp.experts).__name__,
                   "implementation": getattr(model.config, "_experts_implementation", None)}
        params = list(model.parameters())
        opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1,
                                **({"fused": True} if cuda else {"foreach": True}))
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16-mixed"
                    else contextlib.nullcontext())
        if cuda:  # what the fp32 init and its bf16 copy held is not part of training
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        gen = torch.Generator(device="cpu").manual_seed(1234)
        for step in range(args.steps):
            ids = torch.randint(0, config.vocab_size, (args.micro_batch, args.seq_len), generator=gen).to(device)
            sync()
            t0 = time.perf_counter()
            with autocast:
                out = model(input_ids=ids, labels=ids)  # loss = LM loss + 0.001 x load-balancing loss
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            times.append(time.perf_counter() - t0)
            losses.append(out.loss.item())
            del out
            print(f"step {step + 1}: loss {losses[-1]:.4f} {times[-1] * 1e3:.0f} ms", flush=True)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
        if not is_oom(e):
            raise
        where = f"step {len(times) + 1}" if experts else "building the model"
        oom = f"{where}: " + str(e).strip().splitlines()[0]
        print(f"out of memory: {oom}", flush=True)

    steady = times[args.warmup:] if len(times) > args.warmup else times  # all steps if fewer than the warm-up
    step_s = statistics.median(steady) if steady else float("nan")
    tps = args.micro_batch * args.seq_len / step_s if steady else 0.0
    flops = flops_per_token(cfg, args.seq_len)
    result = {
        "baseline": "hf" + ("+liger" if args.liger else ""),
        "precision": args.precision,
        "steps_timed": len(steady),
        "steps_done": len(times),
        "step_ms": round(step_s * 1e3, 1) if steady else None,
        "tokens_per_s": round(tps),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
        "mfu": round(tps * flops / PEAK_BF16_FLOPS, 4) if cuda else None,
        "flops_per_token": flops,
        "parameters": sum(p.numel() for p in params) if experts else None,
        "peak_flops": PEAK_BF16_FLOPS,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "oom": oom,
        "experts": experts,
        "config": {"preset": args.preset, **cfg, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
                   "steps": args.steps, "warmup": args.warmup, "precision": args.precision,
                   "activation_checkpointing": args.ac, "liger": args.liger, "attention": "sdpa",
                   "output_router_logits": True, "router_aux_loss_coef": ROUTER_AUX_LOSS_COEF,
                   "optimizer": f"AdamW({'fused' if cuda else 'foreach'}, lr={args.lr:g}, betas=(0.9, 0.95), "
                                "weight_decay=0.1), clip 1.0"},
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "liger_kernel": liger_version() if args.liger else None,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
    }
    print(json.dumps(result), flush=True)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
