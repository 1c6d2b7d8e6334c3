#!/usr/bin/env python3
"""Hugging Face transformers as the oracle of the preference losses
(test_preference_training).

  preference_oracle.py make OUT

writes
  OUT/reference   a small random Llama (config.json + model.safetensors): the
                  starting weights, DPO's reference
  OUT/policy      the same model with every weight moved a little: the policy
  OUT/pairs.json  four pairs of token ids with their response masks
  OUT/<variant>.safetensors
                  for each variant (objective and options in OUT/cases.json):
                  the loss over all four pairs, the reported numbers and the
                  gradient of every policy parameter ("grad.<name>")

Every sequence runs through HF on its own (no packing, eager attention, fp32
on the CPU). The losses are written out here from their definitions (TRL's
DPO sigmoid / ipo / hinge, ORPO, SimPO), independently of the C++ code.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

VOCAB = 61

VARIANTS = {
    "dpo_sigmoid": dict(objective="dpo", loss_type="sigmoid", beta=0.5, label_smoothing=0.1, nll_weight=0.3),
    "dpo_ipo": dict(objective="dpo", loss_type="ipo", beta=0.5),
    "dpo_hinge": dict(objective="dpo", loss_type="hinge", beta=0.1),
    "orpo": dict(objective="orpo", orpo_alpha=0.3),
    "simpo": dict(objective="simpo", beta=2.0, simpo_gamma=0.5, label_smoothing=0.05),
}


def build():
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64, tie_word_embeddings=False,
                                      rms_norm_eps=1e-5, initializer_range=0.1)
    torch.manual_seed(11)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model.float()


def make_pairs():
    """Four pairs: BOS (1), a prompt of 2 to 4 tokens, responses of 1 to 5
    tokens ending with EOS (2); the mask marks the response tokens."""
    g = torch.Generator().manual_seed(5)
    pairs = []
    for i in range(4):
        prompt = [1] + torch.randint(3, VOCAB, (2 + i % 3,), generator=g).tolist()
        pair = {}
        for side, length in (("chosen", 1 + (i * 2) % 5), ("rejected", 1 + (i * 3 + 2) % 5)):
            response = torch.randint(3, VOCAB, (length,), generator=g).tolist() + [2]
            pair[side] = {"tokens": prompt + response, "mask": [0] * len(prompt) + [1] * len(response)}
        pairs.append(pair)
    return pairs


def sequence_logps(model, seq):
    """Sum of log p(token) over the response tokens, and their count."""
    ids = torch.tensor([seq["tokens"]])
    logits = model(input_ids=ids).logits[0].float()
    logp = F.log_softmax(logits[:-1], dim=-1)
    targets = ids[0, 1:]
    mask = torch.tensor(seq["mask"][1:], dtype=torch.float32)
    token_logps = logp.gather(1, targets.unsqueeze(1)).squeeze(1)
    return (token_logps * mask).sum(), mask.sum()


def all_logps(model, pairs):
    pc, pr, nc, nr = [], [], [], []
    for pair in pairs:
        a, n = sequence_logps(model, pair["chosen"])
        pc.append(a)
        nc.append(n)
        b, m = sequence_logps(model, pair["rejected"])
        pr.append(b)
        nr.append(m)
    return torch.stack(pc), torch.stack(pr), torch.stack(nc), torch.stack(nr)


def loss_and_stats(v, pc, pr, nc, nr, rc, rr):
    beta = v.get("beta", 0.1)
    ls = v.get("label_smoothing", 0.0)
    averaged = v["objective"] != "dpo" or v.get("loss_type") == "ipo"
    # What the loss reads: sums, or length averages.
    c, r = (pc / nc, pr / nr) if averaged else (pc, pr)
    if v["objective"] == "dpo":
        refc, refr = (rc / nc, rr / nr) if averaged else (rc, rr)
        u = (c - refc) - (r - refr)
        if v["loss_type"] == "sigmoid":
            per_pair = -(1 - ls) * F.logsigmoid(beta * u) - ls * F.logsigmoid(-beta * u)
        elif v["loss_type"] == "ipo":
            per_pair = (u - 1 / (2 * beta)) ** 2
        else:
            per_pair = torch.relu(1 - beta * u)
        reward_c, reward_r = beta * (c - refc), beta * (r - refr)
    elif v["objective"] == "orpo":
        log_odds = (c - r) - (torch.log1p(-torch.exp(c)) - torch.log1p(-torch.exp(r)))
        per_pair = -v["orpo_alpha"] * F.logsigmoid(log_odds)
        reward_c, reward_r = v["orpo_alpha"] * c, v["orpo_alpha"] * r
    else:
        z = beta * (c - r) - v["simpo_gamma"]
        per_pair = -(1 - ls) * F.logsigmoid(z) - ls * F.logsigmoid(-z)
        reward_c, reward_r = beta * c, beta * r
    loss = per_pair.mean()
    nll = v.get("nll_weight", 0.0) + (1.0 if v["objective"] == "orpo" else 0.0)
    if nll:
        loss = loss + nll * (-pc.sum()) / nc.sum()  # NLL per chosen response token
    stats = {
        "rewards/chosen": reward_c.mean(),
        "rewards/rejected": reward_r.mean(),
        "rewards/accuracies": (reward_c > reward_r).float().mean(),
        "rewards/margins": (reward_c - reward_r).mean(),
        "logps/chosen": c.mean(),
        "logps/rejected": r.mean(),
    }
    return loss, stats


def make(out):
    os.makedirs(out, exist_ok=True)
    reference = build()
    reference.save_pretrained(os.path.join(out, "reference"), safe_serialization=True)
    policy = build()
    with torch.no_grad():
        torch.manual_seed(12)
        for _, p in policy.named_parameters():
            p.add_(0.05 * torch.randn_like(p))
    policy.save_pretrained(os.path.join(out, "policy"), safe_serialization=True)
    pairs = make_pairs()
    with open(os.path.join(out, "pairs.json"), "w") as f:
        json.dump(pairs, f)
    with torch.no_grad():
        rc, rr, _, _ = all_logps(reference, pairs)
    for name, v in VARIANTS.items():
        policy.zero_grad()
        pc, pr, nc, nr = all_logps(policy, pairs)
        loss, stats = loss_and_stats(v, pc, pr, nc, nr, rc, rr)
        loss.backward()
        tensors = {"loss": loss.detach().reshape(1)}
        for key, value in stats.items():
            tensors["stat." + key] = value.detach().reshape(1).float()
        for pname, p in policy.named_parameters():
            tensors["grad." + pname] = p.grad.detach().contiguous()
        save_file(tensors, os.path.join(out, name + ".safetensors"))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"variants": VARIANTS}, f)
    print("preference oracle: %d variants in %s (ln 2 = %.9f)" % (len(VARIANTS), out, math.log(2)))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "make":
        sys.exit(__doc__)
    make(sys.argv[2])
