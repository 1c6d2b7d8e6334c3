#!/usr/bin/env python3
"""The end-to-end DPO runs of bench/e2e_dpo.sh as a markdown table.

    python3 bench/e2e_dpo_table.py OUT [WARMUP]      # WARMUP default 5

Reads from the folder OUT what e2e_dpo.sh leaves there:
  liger_model/metrics.jsonl        liger-train, preference.reference: model
  liger_precomputed/metrics.jsonl  liger-train, preference.reference: precomputed
  trl_liger.json                   scripts/baselines/trl_dpo_liger.py (TRL + Liger-Kernel)
  hf_loop_liger.json               scripts/baselines/hf_dpo_liger_loop.py (HF + Liger-Kernel, no TRL)
  hf_loop.json                     the same loop with --no-liger (plain PyTorch loss)
Any of them may be missing (a run skipped or failed): its row says so.

Per run: the median tokens/s of the steps after WARMUP (liger-train:
metrics.jsonl's tokens_per_s; the baselines: their JSON, which took the
median after their own --warmup), the tokens per step, the peak GiB and both
ratios against the yardstick, the first baseline present in the order above
(TRL + Liger-Kernel, else the HF + Liger-Kernel loop, else the plain loop,
which is labelled as no Liger-Kernel run). Then the target: liger-train with
reference: model >= 1.5x the yardstick's tokens/s at <= its peak memory, and
the further gain of reference: precomputed. Exit 1 when no baseline ran, else
0 whether or not the target is met (bench/e2e_dpo.sh reports failed runs).
"""
import json
import os
import statistics
import sys

TARGET_SPEEDUP = 1.5
GIB = 2**30


def liger_run(path, warmup):
    """metrics.jsonl -> dict(tokens_per_s, tokens_per_step, peak_gib, steps) or None."""
    try:
        rows = [json.loads(line) for line in open(path) if line.strip()]
    except (OSError, ValueError):
        return None
    if not rows:
        return None
    steady = rows[warmup:] or rows
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
            "tokens_per_step": rows[-1].get("tokens"),
            "peak_gib": max(r.get("peak_mem_bytes", 0) for r in rows) / GIB,
            "steps": len(rows), "loss_first": rows[0].get("loss"), "loss_last": rows[-1].get("loss")}


def baseline_run(path):
    """A baseline's JSON -> the same dict, or None; an out-of-memory run -> dict(oom=...)."""
    try:
        doc = json.load(open(path))
    except (OSError, ValueError):
        return None
    if doc.get("oom"):
        return {"oom": doc["oom"], "label": doc.get("baseline", os.path.basename(path))}
    if "tokens_per_s" not in doc:
        return None
    config = doc.get("config", {})
    versions = ", ".join(f"{k} {v}" for k, v in doc.get("versions", {}).items() if v and k != "torch")
    return {"tokens_per_s": doc["tokens_per_s"], "tokens_per_step": 2 * config.get("pairs", 0) * config.get("seq_len", 0),
            "peak_gib": doc["peak_mem_gib"], "steps": config.get("steps"), "label": doc.get("baseline") or os.path.basename(path),
            "versions": versions, "loss_first": doc.get("loss_first"), "loss_last": doc.get("loss_last")}


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python3 bench/e2e_dpo_table.py OUT [WARMUP]")
    out = sys.argv[1]
    warmup = int(sys.argv[2]) if len(sys.argv) == 3 else 5
    ours = [("liger-train, reference: model", liger_run(f"{out}/liger_model/metrics.jsonl", warmup)),
            ("liger-train, reference: precomputed", liger_run(f"{out}/liger_precomputed/metrics.jsonl", warmup))]
    baselines = [("TRL DPOTrainer + Liger-Kernel", baseline_run(f"{out}/trl_liger.json")),
                 ("HF + Liger-Kernel DPO loop (no TRL)", baseline_run(f"{out}/hf_loop_liger.json")),
                 ("HF DPO loop, no Liger-Kernel (plain PyTorch loss)", baseline_run(f"{out}/hf_loop.json"))]
    yard = next((r for _, r in baselines if r and "oom" not in r), None)

    print("| run | tokens/s | tokens/step | peak GiB | tokens/s vs yardstick | memory vs yardstick |")
    print("|---|---|---|---|---|---|")
    for name, run in ours + baselines:
        if run is None:
            print(f"| {name} | not run or failed | | | | |")
            continue
        if "oom" in run:
            print(f"| {name} | out of memory: {run['oom'][:80]} | | | | |")
            continue
        label = run["label"] if run.get("label") else name
        label += (f" ({run['versions']})" if run.get("versions") else "")
        label += " (yardstick)" if run is yard else ""
        speed = f"{run['tokens_per_s'] / yard['tokens_per_s']:.2f}x" if yard else "-"
        memory = f"{run['peak_gib'] / yard['peak_gib']:.2f}x" if yard and yard["peak_gib"] > 0 else "-"
        print(f"| {label} | {run['tokens_per_s']:,.0f} | {run['tokens_per_step']} | {run['peak_gib']:.2f} "
              f"| {speed} | {memory} |")

    model, precomputed = ours[0][1], ours[1][1]
    print()
    if yard is None:
        print("target: no baseline ran: no yardstick")
    elif model is None:
        print("target: the liger-train run with reference: model is missing")
    else:
        speedup = model["tokens_per_s"] / yard["tokens_per_s"]
        met = speedup >= TARGET_SPEEDUP and model["peak_gib"] <= yard["peak_gib"]
        # What the yardstick stands for: the label comes from the baseline's own JSON.
        if "Liger-Kernel" not in yard["label"]:
            note = " (no Liger-Kernel: not the target's yardstick)"
        elif "TRL" not in yard["label"]:
            note = " (TRL's DPO step with Liger-Kernel, without TRL)"
        else:
            note = ""
        print(f"target: liger-train (reference: model) >= {TARGET_SPEEDUP}x {yard['label']}{note} tokens/s at <= its "
              f"memory: {'MET' if met else 'MISSED'} ({speedup:.2f}x, {model['peak_gib']:.2f} vs "
              f"{yard['peak_gib']:.2f} GiB)")
        if model["tokens_per_step"] != yard["tokens_per_step"]:
            print(f"note: tokens per step differ: liger-train {model['tokens_per_step']}, "
                  f"baseline {yard['tokens_per_step']}")
    if model and precomputed:
        print(f"reference: precomputed: {precomputed['tokens_per_s'] / model['tokens_per_s']:.2f}x the tokens/s of "
              f"reference: model, peak {precomputed['peak_gib']:.2f} vs {model['peak_gib']:.2f} GiB"
              + (f"; {precomputed['tokens_per_s'] / yard['tokens_per_s']:.2f}x the yardstick" if yard else ""))
    return 0 if yard else 1


if __name__ == "__main__":
    sys.exit(main())
