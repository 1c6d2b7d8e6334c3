#!/usr/bin/env python3
"""The figures of bench/e2e_moe.sh: one line per run, and the markdown table
of liger-train beside HF transformers + Liger-Kernel and HF alone, with the
targets (liger-train >= 1.5x HF + Liger-Kernel's tokens/s, at no more peak
memory).

    python3 bench/e2e_moe_table.py line RUN [--warmup 5]
    python3 bench/e2e_moe_table.py table --liger RUN --hf-liger RUN [--hf RUN] [--hf-eager RUN]
                                         [--warmup 5] [--target 1.5]

RUN is liger-train's metrics.jsonl (median tokens/s of the steps after
--warmup, the highest peak_mem_bytes, median mfu) or the JSON of
scripts/baselines/hf_moe_liger.py (its own median after its warm-up). A
missing or unreadable RUN is a row that says so. Standard library only.
Exit 0 when the table was made (missed targets included), 2 on bad arguments.
"""
import argparse
import json
import math
import os
import statistics


def load(path, warmup):
    """A run's figures: tokens_per_s, peak_gib, mfu, steps, loss_first, loss_last,
    oom, note; or {"missing": why}."""
    if not path or not os.path.exists(path):
        return {"missing": f"no result ({path or 'not run'})"}
    try:
        if path.endswith(".jsonl"):
            rows = [json.loads(line) for line in open(path) if line.strip()]
            if not rows:
                return {"missing": f"no steps in {path}"}
            steady = rows[warmup:] or rows
            peak = max(r.get("peak_mem_bytes", 0) for r in rows)
            return {"tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in steady)),
                    "peak_gib": round(peak / 2**30, 2) if peak > 0 else None,
                    "mfu": statistics.median(r.get("mfu", 0) for r in steady) or None,
                    "steps": len(rows), "steps_timed": len(steady),
                    "loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"], "oom": None, "note": ""}
        r = json.load(open(path))
    except (OSError, ValueError, KeyError) as e:
        return {"missing": f"unreadable {path}: {e}"}
    experts = r.get("experts") or {}
    notes = []
    if experts.get("class"):  # HF's experts say which implementation ran; LigerExperts has one
        impl = experts.get("implementation") if experts["class"] == "MixtralExperts" else None
        notes.append(f"experts: {experts['class']}" + (f" ({impl})" if impl else ""))
    if (r.get("config") or {}).get("activation_checkpointing"):
        notes.append("gradient checkpointing")
    return {"tokens_per_s": r.get("tokens_per_s") or None, "peak_gib": r.get("peak_mem_gib"), "mfu": r.get("mfu"),
            "steps": r.get("steps_done"), "steps_timed": r.get("steps_timed"), "loss_first": r.get("loss_first"),
            "loss_last": r.get("loss_last"), "oom": r.get("oom"), "note": ", ".join(notes)}


def fmt(value, spec, none="n/a"):
    return none if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def line(run):
    """One line of figures for a run (what e2e_moe.sh prints after it)."""
    if "missing" in run:
        return run["missing"]
    text = (f"{fmt(run['tokens_per_s'], ',')} tokens/s, peak {fmt(run['peak_gib'], '.2f')} GiB, "
            f"MFU {fmt(run['mfu'], '.1%')}, {run['steps']} steps ({run['steps_timed']} timed), "
            f"loss {fmt(run['loss_first'], '.4f')} -> {fmt(run['loss_last'], '.4f')}")
    if run["oom"]:
        text += f"; OUT OF MEMORY at {run['oom']}"
    return text + (f"; {run['note']}" if run["note"] else "")


def table(rows, target):
    """rows: (label, run); the first is liger-train, the second HF + Liger-Kernel."""
    out = ["| run | tokens/s | peak GiB | MFU | loss first -> last | vs HF + Liger-Kernel |",
           "|---|---|---|---|---|---|"]
    base = rows[1][1]
    base_tps = None if "missing" in base or base["oom"] else base["tokens_per_s"]
    for label, run in rows:
        if "missing" in run:
            out.append(f"| {label} | {run['missing']} | | | | |")
            continue
        if run["oom"]:
            out.append(f"| {label} | out of memory ({run['oom'][:80]}) | {fmt(run['peak_gib'], '.2f')} | | | |")
            continue
        ratio = f"{run['tokens_per_s'] / base_tps:.2f}x" if base_tps and run["tokens_per_s"] else "n/a"
        loss = f"{fmt(run['loss_first'], '.4f')} -> {fmt(run['loss_last'], '.4f')}"
        note = f" ({run['note']})" if run["note"] else ""
        out.append(f"| {label}{note} | {fmt(run['tokens_per_s'], ',')} | {fmt(run['peak_gib'], '.2f')} | "
                   f"{fmt(run['mfu'], '.1%')} | {loss} | {ratio} |")
    ours = rows[0][1]
    out.append("")
    if "missing" in ours or ours["oom"] or not ours["tokens_per_s"]:
        out.append("targets: not judged (no liger-train figures)")
    elif base_tps is None:
        why = "ran out of memory" if "missing" not in base else "has no figures"
        out.append(f"targets: not judged (HF + Liger-Kernel {why})")
    else:
        ratio = ours["tokens_per_s"] / base_tps
        out.append(f"speed: liger-train / HF + Liger-Kernel = {ratio:.2f}x tokens/s "
                   f"(target >= {target:g}x): {'MET' if ratio >= target else 'MISSED'}")
        if ours["peak_gib"] is None or base["peak_gib"] is None:
            out.append("memory: not judged (no peak memory: not a GPU run)")
        else:
            ok = ours["peak_gib"] <= base["peak_gib"]
            out.append(f"memory: liger-train peak {ours['peak_gib']:.2f} GiB vs HF + Liger-Kernel "
                       f"{base['peak_gib']:.2f} GiB (target <=): {'MET' if ok else 'MISSED'}")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    one = sub.add_parser("line", help="one line of figures for one run")
    one.add_argument("run")
    tab = sub.add_parser("table", help="the markdown table and the targets")
    tab.add_argument("--liger", required=True, help="liger-train's metrics.jsonl")
    tab.add_argument("--hf-liger", required=True, help="hf_moe_liger.py --liger's JSON")
    tab.add_argument("--hf", default="", help="hf_moe_liger.py's JSON (HF's default experts)")
    tab.add_argument("--hf-eager", default="", help="hf_moe_liger.py --experts eager's JSON")
    tab.add_argument("--target", type=float, default=1.5, help="tokens/s ratio liger-train must reach")
    for p in (one, tab):
        p.add_argument("--warmup", type=int, default=5, help="liger-train steps left out of the median")
    args = ap.parse_args()
    if args.mode == "line":
        print(line(load(args.run, args.warmup)))
        return
    rows = [("liger-train, `precision: bf16`", load(args.liger, args.warmup)),
            ("HF transformers + Liger-Kernel, bf16", load(args.hf_liger, args.warmup))]
    if args.hf:
        rows.append(("HF transformers, bf16", load(args.hf, args.warmup)))
    if args.hf_eager:
        rows.append(("HF transformers, bf16, loop over experts", load(args.hf_eager, args.warmup)))
    print(table(rows, args.target))


if __name__ == "__main__":
    main()
