#!/usr/bin/env python3
"""Hugging Face transformers as the oracle of the parity test (test_hf_parity).

  hf_oracle.py make OUT [--device cpu|cuda] [--dtype fp32|bf16]
      For every case below: a small random HF model with awkward sizes, saved
      to OUT/<case>/hf (config.json + model.safetensors, in --dtype), and
      OUT/<case>/oracle.safetensors holding the batch (input_ids, labels) and
      HF's answers on it: logits, the mean cross-entropy loss and the gradient
      of every parameter ("grad.<name>"), computed with eager attention.
  hf_oracle.py check-export OUT
      Loads OUT/<case>/export (written by liger-train) with from_pretrained and
      checks that its logits equal those of OUT/<case>/hf. Exit status 1 if any
      case differs.

Only transformers' public API is used: this file runs HF, it copies nothing.
"""
import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

BATCH, SEQ = 2, 19


def cases():
    """name -> (config class name, kwargs). Awkward on purpose: hidden 320 with
    5 heads and 1 KV head (GQA 5:1), an odd vocabulary, Gemma's head_dim 256
    and Qwen3's 48 (not hidden / heads), windows shorter than the sequence
    (Qwen2's from layer 1 on: max_window_layers), both Gemma 2 softcaps small
    enough to bend, a query_pre_attn_scalar that is not head_dim, llama3 RoPE
    scaling, Qwen2's q/k/v biases (randomised by build, as the norms) on tied
    embeddings, Qwen3's q/k norms on untied ones."""
    common = dict(vocab_size=331, hidden_size=320, intermediate_size=488, num_attention_heads=5,
                  num_key_value_heads=1, max_position_embeddings=128, initializer_range=0.08)
    return {
        "llama": ("LlamaConfig", dict(common, num_hidden_layers=2, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                      rope_theta=5000.0,
                                      rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 64})),
        "mistral": ("MistralConfig", dict(common, num_hidden_layers=2, sliding_window=5, rms_norm_eps=1e-5,
                                          tie_word_embeddings=False, rope_theta=10000.0)),
        "gemma": ("GemmaConfig", dict(common, num_hidden_layers=2, head_dim=256, tie_word_embeddings=True,
                                      hidden_act="gelu_pytorch_tanh")),
        "gemma2": ("Gemma2Config", dict(common, num_hidden_layers=3, head_dim=256, tie_word_embeddings=True,
                                        sliding_window=6, query_pre_attn_scalar=144, attn_logit_softcapping=4.0,
                                        final_logit_softcapping=2.5, hidden_activation="gelu_pytorch_tanh")),
        "qwen2": ("Qwen2Config", dict(common, num_hidden_layers=3, tie_word_embeddings=True, rope_theta=1e6,
                                      rms_norm_eps=1e-6, use_sliding_window=True, sliding_window=6,
                                      max_window_layers=1)),
        "qwen3": ("Qwen3Config", dict(common, num_hidden_layers=2, head_dim=48, tie_word_embeddings=False,
                                      rope_theta=1e6, rms_norm_eps=1e-6)),
    }


def build(config_class, kwargs, seed):
    config = getattr(transformers, config_class)(**kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        # HF inits norm weights to a constant and biases to zero; randomise
        # them so that the norms' offset and casting and the biases are
        # tested, not only the matrices.
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    return model


def load(path, device, dtype):
    # transformers 5 names the argument dtype; 4.x torch_dtype.
    major = int(transformers.__version__.split(".")[0])
    dtype_arg = {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", **dtype_arg)
    return model.to(device)


def make(out, device, dtype_name):
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    for index, (name, (config_class, kwargs)) in enumerate(cases().items()):
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        model = build(config_class, kwargs, seed=100 + index).to(dtype)
        model.save_pretrained(os.path.join(folder, "hf"))
        # The oracle runs the model as saved, through from_pretrained.
        model = load(os.path.join(folder, "hf"), device, dtype)
        model.train()  # dropout is 0 everywhere; train() only enables grads as in training

        g = torch.Generator().manual_seed(7 + index)
        ids = torch.randint(0, kwargs["vocab_size"], (BATCH, SEQ), generator=g)
        labels = torch.randint(0, kwargs["vocab_size"], (BATCH, SEQ), generator=g)
        labels[0, :4] = -100  # ignored targets, as prompts are in training
        labels[1, -2:] = -100

        logits = model(input_ids=ids.to(device)).logits  # final softcap included (Gemma 2)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                                 labels.to(device).reshape(-1), ignore_index=-100)
        loss.backward()
        tensors = {"input_ids": ids, "labels": labels, "logits": logits.detach().float().cpu().contiguous(),
                   "loss": loss.detach().float().cpu().reshape(1)}
        for pname, p in model.named_parameters():
            tensors["grad." + pname] = p.grad.detach().float().cpu().contiguous()
        save_file(tensors, os.path.join(folder, "oracle.safetensors"))
        print(f"{name}: loss {loss.item():.6f}, logits |max| {logits.abs().max().item():.3f}, "
              f"{sum(p.numel() for p in model.parameters())} parameters")
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"cases": list(cases().keys()), "device": device, "dtype": dtype_name,
                   "transformers": transformers.__version__}, f)


def check_export(out):
    meta = json.load(open(os.path.join(out, "cases.json")))
    device = meta["device"]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[meta["dtype"]]
    failed = False
    for name in meta["cases"]:
        folder = os.path.join(out, name)
        if not os.path.isdir(os.path.join(folder, "export")):
            print(f"{name}: no export folder", file=sys.stderr)
            failed = True
            continue
        original = load(os.path.join(folder, "hf"), device, dtype).eval()
        exported = load(os.path.join(folder, "export"), device, dtype).eval()
        if type(original) is not type(exported):
            print(f"{name}: export loads as {type(exported).__name__}, not {type(original).__name__}")
            failed = True
            continue
        g = torch.Generator().manual_seed(11)
        ids = torch.randint(0, original.config.vocab_size, (BATCH, SEQ + 5), generator=g).to(device)
        with torch.no_grad():
            a = original(input_ids=ids).logits.float()
            b = exported(input_ids=ids).logits.float()
        diff = (a - b).abs().max().item()
        same = torch.equal(a, b)
        print(f"{name}: exported logits vs original: max |diff| {diff:.3e} ({'identical' if same else 'DIFFERENT'})")
        failed |= not same
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    m.add_argument("--device", default="cpu")
    m.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    c = sub.add_parser("check-export")
    c.add_argument("out")
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    if args.command == "make":
        make(args.out, args.device, args.dtype)
        return 0
    return check_export(args.out)


if __name__ == "__main__":
    sys.exit(main())
