#!/usr/bin/env python3
"""Ours vs Liger-Kernel per op, as a markdown table (bench/ops_vs_liger.sh).

    python3 bench/ops_vs_liger_table.py OURS.json LIGER.json

OURS.json: `liger-bench --op moe,fused_linear_preference --json` (rows of
the cuda and composite backends); LIGER.json: scripts/baselines/liger_ops.py
--json. Rows are matched by op and shape. Per case: forward + backward ms of
ours (cuda), ours (composite) and Liger, the ratio ours (cuda) / Liger, the
peak extra MiB of both and their ratio, and whether each target is met:

    moe                      time <= 0.7 x Liger, memory <= 1.0 x Liger
    fused_linear_preference  time <= 0.5 x Liger, memory <= 0.5 x Liger

Exit 1 when a case has no cuda row or no Liger row (a run failed or was
skipped), else 0 whether or not the targets are met.
"""
import json
import sys

# op -> (largest time ratio, largest memory ratio), ours (cuda) / Liger.
TARGETS = {"moe": (0.7, 1.0), "fused_linear_preference": (0.5, 0.5)}


def load(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"ops_vs_liger_table.py: cannot read {what} results {path}: {e}")


def index(doc, backend):
    """(op, shape) -> result of this backend."""
    return {(r["op"], r["shape"]): r for r in doc.get("results", []) if r.get("backend") == backend}


def ms(r):
    if r and r.get("error"):
        return r["error"]  # e.g. a case past liger_ops.py's --case-timeout
    return f"{r['full_ms']:.3f}" if r else "-"


def mib(r):
    return f"{r['peak_extra_mib']:.0f}" if r and r.get("peak_extra_mib") is not None else "-"


def value(r, key):
    """r[key], or None for a missing row or one that did not finish."""
    return r.get(key) if r and not r.get("error") else None


def ratio(a, b):
    return a / b if a is not None and b else None


def verdict(value, limit):
    if value is None:
        return f"- (<= {limit:g}x)"
    return f"{value:.2f}x {'yes' if value <= limit else 'NO'} (<= {limit:g}x)"


def table(ours, liger):
    cuda, composite, lk = index(ours, "cuda"), index(ours, "composite"), index(liger, "liger-kernel")
    cases = [key for key in list(cuda) + list(composite) + list(lk) if key[0] in TARGETS]
    cases = list(dict.fromkeys(cases))  # each once, in first-seen order
    lines = [
        f"ours: {ours.get('device', '?')}, torch {ours.get('torch', '?')}, {ours.get('date', '?')}, "
        f"median of {ours.get('reps', '?')}; Liger-Kernel {liger.get('liger_kernel', '?')}: "
        f"{liger.get('device', '?')}, {liger.get('date', '?')}, median of {liger.get('reps', '?')}",
        "",
        "| op | shape | ours cuda f+b ms | ours composite f+b ms | Liger f+b ms | time ours/Liger "
        "| ours cuda peak MiB | Liger peak MiB | memory ours/Liger |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    complete = True
    for key in cases:
        op, shape = key
        ours_r, comp_r, lk_r = cuda.get(key), composite.get(key), lk.get(key)
        complete = complete and ours_r is not None and lk_r is not None
        time_limit, mem_limit = TARGETS[op]
        time_ratio = ratio(value(ours_r, "full_ms"), value(lk_r, "full_ms"))
        mem_ratio = ratio(value(ours_r, "peak_extra_mib"), value(lk_r, "peak_extra_mib"))
        lines.append(f"| {op} | {shape} | {ms(ours_r)} | {ms(comp_r)} | {ms(lk_r)} | "
                     f"{verdict(time_ratio, time_limit)} | {mib(ours_r)} | {mib(lk_r)} | "
                     f"{verdict(mem_ratio, mem_limit)} |")
    if not cases:
        complete = False
        lines.append("| (no moe or fused_linear_preference results) | | | | | | | | |")
    notes = liger.get("notes", {})
    for op in TARGETS:
        if op in notes:
            lines.append(f"\nLiger {op}: {notes[op]}.")
    return "\n".join(lines), complete


def main():
    if len(sys.argv) == 2 and sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return
    if len(sys.argv) != 3:
        sys.exit("usage: ops_vs_liger_table.py OURS.json LIGER.json (see --help)")
    ours, liger = load(sys.argv[1], "liger-bench"), load(sys.argv[2], "Liger-Kernel")
    text, complete = table(ours, liger)
    print(text)
    if not complete:
        print("ops_vs_liger_table.py: a case lacks its cuda or Liger-Kernel row", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
