#!/usr/bin/env python3
"""Where the GPU waits: reads a Kineto Chrome trace (logging.profile_steps
writes <output_dir>/profile/rank-R.json), merges the device activity of all
streams, and prints the busy fraction and the longest idle gaps with the
kernels on either side, then the kernels that take the most device time
(summed over their launches).
    python3 scripts/trace_gaps.py TRACE.json [TOP]"""
import json
import sys

trace = json.load(open(sys.argv[1]))
top = int(sys.argv[2]) if len(sys.argv) > 2 else 15
device = [e for e in trace.get("traceEvents", [])
          if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
device.sort(key=lambda e: e["ts"])
if not device:
    sys.exit("no device activity in the trace")
start, end = device[0]["ts"], max(e["ts"] + e["dur"] for e in device)
gaps, busy, cursor, last = [], 0.0, device[0]["ts"], device[0]
for e in device:
    if e["ts"] > cursor:
        gaps.append((e["ts"] - cursor, last["name"], e["name"], cursor - start))
    if e["ts"] + e["dur"] > cursor:
        busy += e["ts"] + e["dur"] - max(cursor, e["ts"])
        cursor = e["ts"] + e["dur"]
        last = e
span = end - start
print(f"device span {span / 1e3:.2f} ms, busy {busy / 1e3:.2f} ms ({100 * busy / span:.1f}%), "
      f"idle {(span - busy) / 1e3:.2f} ms in {len(gaps)} gaps")
for gap, before, after, at in sorted(gaps, reverse=True)[:top]:
    print(f"  {gap / 1e3:7.3f} ms at +{at / 1e3:8.2f} ms  after {before[:70]}  before {after[:70]}")

# Device time by kernel name (all launches in the trace), the largest first.
totals = {}
for e in device:
    name = e["name"]
    count, dur = totals.get(name, (0, 0.0))
    totals[name] = (count + 1, dur + e["dur"])
print(f"device time by kernel (top {top} of {len(totals)}):")
for name, (count, dur) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:top]:
    print(f"  {dur / 1e3:9.3f} ms {100 * dur / span:5.1f}%  x{count:<5d} {name[:110]}")
