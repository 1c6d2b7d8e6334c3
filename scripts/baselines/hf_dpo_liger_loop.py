#!/usr/bin/env python3
"""Baseline for the DPO comparison without TRL: what TRL's DPOTrainer runs with
use_liger_kernel and use_liger_loss, as a plain PyTorch loop (GPU machine).

    python scripts/baselines/hf_dpo_liger_loop.py --preset llama3_1b --pairs 8 \\
        --seq-len 1024 --steps 20 --warmup 5 [--no-liger] --json OUT.json
    # CPU smoke test (no Liger: its kernels are Triton):
    python scripts/baselines/hf_dpo_liger_loop.py --preset tiny --pairs 2 --seq-len 64 \\
        --steps 3 --warmup 1 --no-liger --device cpu --json /tmp/loop.json

TRL needs datasets and pyarrow (about 70 MB of wheels) that a GPU machine
without network may lack; this loop needs only torch, transformers and the
Liger-Kernel wheel. Per step, as TRL's DPOTrainer (0.x with use_liger_loss):
one forward of the policy's decoder on the 2 x pairs sequences (chosen then
rejected), one forward of the frozen reference under no_grad, then Liger's
LigerFusedLinearDPOLoss (sigmoid, beta, summed log-probs, use_ref_model) on
both models' final hidden states and lm_head weights, backward, gradient
clipping at 1.0 (the Trainer's default) and torch AdamW (fused on the GPU).

The model is HF's LlamaForCausalLM from a LlamaConfig (random init, nothing is
downloaded), bf16 weights and compute on the GPU (fp32 on the CPU), SDPA
attention, no gradient checkpointing; with Liger (the default)
apply_liger_kernel_to_llama patches RMSNorm, RoPE and SwiGLU of both models.
The reference is a frozen copy of the starting weights (TRL's default
ref_model). The pairs are random token ids: a prompt of seq_len / 4 tokens and
two responses that fill the rest of seq_len (the last token EOS), so every
sequence is seq_len tokens, as in trl_dpo_liger.py. --no-liger computes the
same loss from the whole [tokens, vocab] logits in fp32 (plain PyTorch).

Writes OUT.json with trl_dpo_liger.py's fields: pairs_per_s, tokens_per_s (2
sequences of seq_len per pair), step_ms (median after the warm-up steps),
peak_mem_gib (torch.cuda.max_memory_allocated; 0 on the CPU), loss_first /
loss_last, versions, config, oom (null, or the error's first line). One line
per step on stdout: "step N: loss X T ms".
"""
import copy
import time

import torch
import torch.nn.functional as F

from dpo_baseline import PRESETS, argument_parser, summarize, synchronize, write_result

EOS, FIRST_WORD, IGNORE = 1, 2, -100


def parse_args():
    p = argument_parser(__doc__)
    p.add_argument("--lr", type=float, default=5e-7, help="TRL's default DPO learning rate")
    return p.parse_args()


def random_batch(g, pairs, seq_len, vocab):
    """ids [2 pairs, seq_len] (chosen rows, then rejected) and next-token labels (IGNORE off the responses)."""
    prompt_len = seq_len // 4
    prompt = torch.randint(FIRST_WORD, vocab, (pairs, prompt_len), generator=g)
    responses = torch.randint(FIRST_WORD, vocab, (2, pairs, seq_len - prompt_len), generator=g)
    responses[:, :, -1] = EOS
    ids = torch.cat([prompt.repeat(2, 1), responses.reshape(2 * pairs, -1)], dim=1)
    # labels[t] is the token after position t; the prompt's positions predict no response token.
    labels = torch.full_like(ids, IGNORE)
    labels[:, prompt_len - 1:-1] = ids[:, prompt_len:]
    return ids, labels


def plain_dpo_loss(weight, hidden, labels, ref_weight, ref_hidden, beta):
    """Sigmoid DPO on summed response log-probs from the whole logits (fp32): the --no-liger path."""
    def logps(w, h):
        logits = (h @ w.t()).float()  # [2 pairs, T, V] in fp32 for the log-softmax
        mask = labels != IGNORE
        token = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (token * mask).sum(-1)

    policy = logps(weight, hidden)
    with torch.no_grad():
        ref = logps(ref_weight, ref_hidden)
    pairs = policy.shape[0] // 2
    u = (policy[:pairs] - ref[:pairs]) - (policy[pairs:] - ref[pairs:])
    return -F.logsigmoid(beta * u).mean()


def main():
    args = parse_args()
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    versions = {"transformers": transformers.__version__, "torch": torch.__version__}
    if not args.no_liger:
        from importlib.metadata import version
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
        from liger_kernel.transformers import apply_liger_kernel_to_llama
        versions["liger_kernel"] = version("liger-kernel")
        # The class-level patches (RMSNorm, RoPE, SwiGLU) before the models are built: both get them.
        apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)
        # As TRL 0.x's use_liger_loss: summed log-probs, sigmoid, the reference's hidden states and weight.
        liger_loss = LigerFusedLinearDPOLoss(ignore_index=IGNORE, beta=args.beta, use_ref_model=True,
                                             average_log_prob=False, loss_type="sigmoid")

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    config = LlamaConfig(max_position_embeddings=max(2048, args.seq_len), **PRESETS[args.preset])
    torch.manual_seed(0)
    model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa", dtype=dtype).to(args.device)
    model.config.use_cache = False
    ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, fused=args.device == "cuda")

    g = torch.Generator().manual_seed(0)
    times, losses = [], []
    result = {"baseline": "HF + Liger-Kernel DPO loop" if not args.no_liger else "HF DPO loop (plain PyTorch loss)",
              "versions": versions, "config": vars(args), "oom": None}
    try:
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for step in range(1, args.steps + 1):
            ids, labels = random_batch(g, args.pairs, args.seq_len, config.vocab_size)
            ids, labels = ids.to(args.device), labels.to(args.device)
            synchronize(args.device)
            start = time.perf_counter()
            hidden = model.model(input_ids=ids).last_hidden_state
            with torch.no_grad():
                ref_hidden = ref_model.model(input_ids=ids).last_hidden_state
            if args.no_liger:
                loss = plain_dpo_loss(model.lm_head.weight, hidden, labels, ref_model.lm_head.weight, ref_hidden,
                                      args.beta)
            else:
                loss = liger_loss(model.lm_head.weight, hidden, labels, ref_input=ref_hidden,
                                  ref_weight=ref_model.lm_head.weight)[0]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(args.device)
            times.append(time.perf_counter() - start)
            losses.append(loss.item())
            print(f"step {step}: loss {losses[-1]:.4f} {1000 * times[-1]:.0f} ms", flush=True)
        summarize(result, args, times, losses)
    except torch.cuda.OutOfMemoryError as error:
        result["oom"] = str(error).splitlines()[0]
    write_result(args.json, result)


if __name__ == "__main__":
    main()
