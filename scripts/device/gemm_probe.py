#!/usr/bin/env python3
"""Whether packing the MLP's gate and up projections pays on the 1B bench
shape (tokens 8192, hidden 2048, intermediate 8192, bf16): each variant's
forward GEMMs, input-gradient GEMMs (+ the add of two gradients, or an
addmm accumulating the second into the first) and weight-gradient GEMMs,
median of 20 with CUDA events.
    python3 scripts/device/gemm_probe.py [TOKENS HIDDEN INTERMEDIATE]"""
import sys

import torch

from cuda_timing import median_ms  # scripts/device/cuda_timing.py

t, h, i = (int(a) for a in sys.argv[1:4]) if len(sys.argv) > 3 else (8192, 2048, 8192)
bf = dict(device="cuda", dtype=torch.bfloat16)
x = torch.randn(t, h, **bf)
wg, wu = torch.randn(i, h, **bf) * 0.02, torch.randn(i, h, **bf) * 0.02
w = torch.cat([wg, wu])
dg, du = torch.randn(t, i, **bf), torch.randn(t, i, **bf)
d = torch.cat([dg, du], 1)


flop = 2 * t * h * i * 2  # two projections
rows = [
    ("forward: two GEMMs x W^T", lambda: (x @ wg.t(), x @ wu.t())),
    ("forward: one packed GEMM", lambda: x @ w.t()),
    ("dx: two GEMMs + add", lambda: dg @ wg + du @ wu),
    ("dx: GEMM + addmm (beta 1)", lambda: torch.addmm(dg @ wg, du, wu)),
    ("dx: one packed GEMM (K = 2 I)", lambda: d @ w),
    ("dW: two GEMMs", lambda: (dg.t() @ x, du.t() @ x)),
    ("dW: one packed GEMM", lambda: d.t() @ x),
]
print(f"tokens {t}, hidden {h}, intermediate {i}: {flop / 1e9:.0f} GFLOP per row")
for name, fn in rows:
    ms = median_ms(fn, reps=20)
    print(f"  {name:32s} {ms:7.3f} ms  {flop / ms / 1e9:5.0f} TFLOP/s")
