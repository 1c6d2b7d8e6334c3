#!/usr/bin/env python3
"""Summarises an nvidia-smi sample log into busy stretches.

Input: CSV lines of `nvidia-smi --query-gpu=timestamp,power.draw,clocks.sm,
clocks_throttle_reasons.active --format=csv,noheader -lms 250`. A busy stretch
is a run of at least 4 samples above 300 W; for each it prints its start, its
length, the median power and SM clock, and how many samples had the software
power cap (throttle reason 0x4) active: is the step clock-limited by the cap?
    python3 bench/power_stretches.py SAMPLES.csv   (bench/e2e_1b.sh runs it on its power.csv)
"""
import csv
import sys

SAMPLE_S = 0.25
BUSY_W = 300.0
POWER_CAP_REASON = "0x0000000000000004"


def number(field):
    try:
        return float(field.strip().split()[0])
    except (ValueError, IndexError):
        return None


def report(stretch):
    if len(stretch) < 4:
        return
    power = sorted(number(r[1]) for r in stretch)
    clock = sorted(number(r[2]) or 0.0 for r in stretch)
    capped = sum(1 for r in stretch if r[3].strip() == POWER_CAP_REASON)
    print(f"{stretch[0][0].strip()}  {len(stretch) * SAMPLE_S:5.1f} s  power {power[len(power) // 2]:.0f} W  "
          f"sm {clock[len(clock) // 2]:.0f} MHz  power-capped {capped}/{len(stretch)}")


def main(path):
    rows = [r for r in csv.reader(open(path)) if len(r) >= 4]
    stretch = []
    for r in rows:
        if (number(r[1]) or 0.0) > BUSY_W:
            stretch.append(r)
        else:
            report(stretch)
            stretch = []
    report(stretch)


if __name__ == "__main__":
    main(sys.argv[1])
