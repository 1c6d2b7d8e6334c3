#!/usr/bin/env python3
"""HF transformers + PEFT as the oracle of the LoRA parity test (test_lora_parity).

  peft_oracle.py make OUT
      For every case below: a small random HF base model with awkward sizes
      (tests/models/hf_oracle.py's), saved to OUT/<case>/hf; a PEFT LoRA
      adapter on it with random A AND B (B nonzero, so that every gradient is
      exercised), saved with save_pretrained to OUT/<case>/adapter; and
      OUT/<case>/oracle.safetensors with the batch (input_ids, labels) and
      PEFT's answers on it: logits, the mean cross-entropy loss and the
      gradient of every trainable parameter ("grad.<our name>", i.e. PEFT's
      name without "base_model.model." and the adapter name "default").
  peft_oracle.py check OUT
      For every case: PeftModel.from_pretrained(base, OUT/<case>/export_adapter)
      (written by liger-train after changing the adapters) must give the
      logits of PEFT's own model of the case's LoRA settings holding the same
      tensors (OUT/<case>/ours.safetensors "param.<name>") to 1e-6, and the
      logits liger-train computed to 1e-5, as must transformers'
      from_pretrained(OUT/<case>/export_merged) (the merged model). Exit
      status 1 if any case differs.

Only the public APIs of transformers and peft are used.
"""
import argparse
import json
import os
import sys

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_oracle  # noqa: E402

BATCH, SEQ = 2, 13


def cases():
    """name -> (hf_oracle case, LoRA settings). Awkward: rank 3 with alpha 7
    (scaling 7/3), a target set without k_proj and gate|up (Mistral: the
    packed q|k|v with a block that has no adapter, an MLP with only its down
    adapter), saved modules on the untied Llama, Qwen2's frozen q/k/v biases
    under adapters on q and v only (the packed q|k|v's k block has a bias but
    no adapter)."""
    return {
        "llama": ("llama", dict(r=3, lora_alpha=7, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                  "gate_proj", "up_proj", "down_proj"],
                                modules_to_save=["lm_head", "embed_tokens"])),
        "mistral": ("mistral", dict(r=2, lora_alpha=5, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])),
        "gemma": ("gemma", dict(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                   "gate_proj", "up_proj", "down_proj"])),
        "qwen2": ("qwen2", dict(r=3, lora_alpha=6, target_modules=["q_proj", "v_proj", "o_proj", "gate_proj",
                                                                   "up_proj", "down_proj"])),
    }


def our_name(peft_name):
    name = peft_name
    if name.startswith("base_model.model."):
        name = name[len("base_model.model."):]
    return name.replace(".default.", ".").replace(".modules_to_save.", ".")


def make(out):
    base_cases = hf_oracle.cases()
    names = list(base_cases.keys())
    for index, (name, (base_case, lora)) in enumerate(cases().items()):
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        config_class, kwargs = base_cases[base_case]
        base = hf_oracle.build(config_class, kwargs, seed=200 + names.index(base_case))
        base.save_pretrained(os.path.join(folder, "hf"))
        base = hf_oracle.load(os.path.join(folder, "hf"), "cpu", torch.float32)
        model = get_peft_model(base, LoraConfig(lora_dropout=0.0, task_type="CAUSAL_LM", **lora))
        g = torch.Generator().manual_seed(31 + index)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "lora_A" in pname:  # A and B random (B nonzero: every gradient is tested), of the
                    # sizes training gives them: A near its init's 1/sqrt(in), B a small fraction of W
                    p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
                elif "lora_B" in pname:
                    p.copy_(0.03 * torch.randn(p.shape, generator=g))
                elif "modules_to_save" in pname:  # the saved copies move away from the base
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        model.save_pretrained(os.path.join(folder, "adapter"))
        model.train()  # lora_dropout is 0: train() only as in training

        ids = torch.randint(0, kwargs["vocab_size"], (BATCH, SEQ), generator=g)
        labels = torch.randint(0, kwargs["vocab_size"], (BATCH, SEQ), generator=g)
        labels[0, :3] = -100
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                                                 ignore_index=-100)
        loss.backward()
        tensors = {"input_ids": ids, "labels": labels, "logits": logits.detach().float().contiguous(),
                   "loss": loss.detach().float().reshape(1)}
        trainable = 0
        for pname, p in model.named_parameters():
            if p.requires_grad:
                tensors["grad." + our_name(pname)] = p.grad.detach().float().contiguous()
                trainable += 1
            elif p.grad is not None:
                raise SystemExit(f"{name}: frozen {pname} got a gradient")
        save_file(tensors, os.path.join(folder, "oracle.safetensors"))
        print(f"{name}: loss {loss.item():.6f}, {trainable} trainable tensors")
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump({"cases": list(cases().keys()), "transformers": transformers.__version__}, f)


def relative_to_max(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def peft_name(name, model):
    """Our tensor name -> the PEFT model's parameter holding it (adapter "default")."""
    for candidate in (name.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."),
                      name.replace(".weight", ".modules_to_save.default.weight")):
        full = "base_model.model." + candidate
        if full in dict(model.named_parameters()):
            return full
    raise SystemExit(f"{name}: no such parameter in the PEFT model")


def check(out):
    meta = json.load(open(os.path.join(out, "cases.json")))
    base_cases = hf_oracle.cases()
    failed = False
    for name in meta["cases"]:
        folder = os.path.join(out, name)
        ours = load_file(os.path.join(folder, "ours.safetensors"))
        ids = ours["input_ids"]
        # 1. our export, loaded by PEFT from its adapter_config.json and safetensors
        adapted = PeftModel.from_pretrained(hf_oracle.load(os.path.join(folder, "hf"), "cpu", torch.float32),
                                            os.path.join(folder, "export_adapter")).eval()
        # 2. PEFT's own model of this case's LoRA settings, our trained tensors put in by name
        _, lora = cases()[name]
        reference = get_peft_model(hf_oracle.load(os.path.join(folder, "hf"), "cpu", torch.float32),
                                   LoraConfig(lora_dropout=0.0, task_type="CAUSAL_LM", **lora))
        params = dict(reference.named_parameters())
        with torch.no_grad():
            for key, value in ours.items():
                if key.startswith("param."):
                    params[peft_name(key[len("param."):], reference)].copy_(value)
        reference.eval()
        merged = hf_oracle.load(os.path.join(folder, "export_merged"), "cpu", torch.float32).eval()
        with torch.no_grad():
            peft_logits = adapted(input_ids=ids).logits.float()
            reference_logits = reference(input_ids=ids).logits.float()
            merged_logits = merged(input_ids=ids).logits.float()
        e_format = relative_to_max(peft_logits, reference_logits)
        e_ours = relative_to_max(peft_logits, ours["logits"])
        e_merged = relative_to_max(merged_logits, ours["logits"])
        ok = e_format <= 1e-6 and e_ours <= 1e-5 and e_merged <= 1e-5
        print(f"{name}: PEFT with our export vs PEFT with our tensors {e_format:.2e} (tol 1e-6); "
              f"vs our logits {e_ours:.2e} (tol 1e-5); merged export vs ours {e_merged:.2e} (tol 1e-5)"
              f"{'' if ok else '  FAILED'}")
        failed |= not ok
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("make").add_argument("out")
    sub.add_parser("check").add_argument("out")
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    import warnings
    warnings.filterwarnings("ignore")
    if args.command == "make":
        make(args.out)
        return 0
    return check(args.out)


if __name__ == "__main__":
    sys.exit(main())
