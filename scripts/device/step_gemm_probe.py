#!/usr/bin/env python3
"""Every GEMM of one training step of the 1B bench (configs/bench/llama3_1b_h100.yaml:
tokens 8192, hidden 2048, q 2048 + k/v 2 x 512, intermediate 8192, vocab
128256 in FLCE chunks of 4096 tokens, bf16), each timed alone (median of 15,
CUDA events) with cuBLAS and with cuBLASLt as ATen's BLAS backend. Prints
TFLOP/s per shape and the step's total GEMM time, to compare with the step
profiler's GEMM share and to find the shapes worth another layout.
    python3 scripts/device/step_gemm_probe.py [LAYERS]"""
import sys

import torch

from cuda_timing import median_ms  # scripts/device/cuda_timing.py

layers = int(sys.argv[1]) if len(sys.argv) > 1 else 16
T, H, QKV, I, V, CHUNK = 8192, 2048, 3072, 8192, 128256, 4096
bf = dict(device="cuda", dtype=torch.bfloat16)


def r(*shape):
    return torch.randn(*shape, **bf) * 0.02


# (name, count per step, m, n, k, function): one GEMM of m x k times k x n
x, dqkv, attn, dy, h, dglu, wqkv, wo, wg, wd = (r(T, H), r(T, QKV), r(T, H), r(T, H), r(T, I), r(T, I),
                                                  r(QKV, H), r(H, H), r(I, H), r(H, I))
xc, logits, emb = r(CHUNK, H), r(CHUNK, V), r(V, H)
gw32 = torch.zeros(V, H, device="cuda", dtype=torch.float32)
chunks = T // CHUNK
gemms = [
    ("qkv fwd      x Wqkv^T", layers, T, QKV, H, lambda: x @ wqkv.t()),
    ("o fwd        a Wo^T", layers, T, H, H, lambda: attn @ wo.t()),
    ("gate/up fwd  x Wg^T", 2 * layers, T, I, H, lambda: x @ wg.t()),
    ("down fwd     res + h Wd^T", layers, T, H, I, lambda: torch.addmm(dy, h, wd.t())),
    ("down dgrad   dy Wd", layers, T, I, H, lambda: dy @ wd),
    ("down wgrad   dy^T h", layers, H, I, T, lambda: dy.t() @ h),
    ("gate/up wgrad dg^T x", 2 * layers, I, H, T, lambda: dglu.t() @ x),
    ("gate dgrad   dg Wg", layers, T, H, I, lambda: dglu @ wg),
    ("up dgrad     dx += du Wu", layers, T, H, I, lambda: torch.addmm(dy, dglu, wg)),
    ("o dgrad      dy Wo", layers, T, H, H, lambda: dy @ wo),
    ("o wgrad      dy^T a", layers, H, H, T, lambda: dy.t() @ attn),
    ("qkv dgrad    dqkv Wqkv", layers, T, H, QKV, lambda: dqkv @ wqkv),
    ("qkv wgrad    dqkv^T x", layers, QKV, H, T, lambda: dqkv.t() @ x),
    ("head fwd     x E^T", chunks, CHUNK, V, H, lambda: xc @ emb.t()),
    ("head dgrad   dl E", chunks, CHUNK, H, V, lambda: logits @ emb),
    ("head wgrad   dE += dl^T x fp32", chunks, V, H, CHUNK,
     lambda: torch.addmm(gw32, logits.t(), xc, out_dtype=torch.float32)),
]


for backend in ("cublas", "cublaslt"):
    torch.backends.cuda.preferred_blas_library(backend)
    total_ms = total_flop = 0.0
    print(f"== {backend}")
    for name, count, m, n, k, fn in gemms:
        try:
            ms = median_ms(fn, reps=15)
        except Exception as e:  # e.g. an out_dtype this build does not take
            print(f"{name:32s} unavailable: {str(e).splitlines()[0][:80]}")
            continue
        flop = 2.0 * m * n * k
        total_ms += count * ms
        total_flop += count * flop
        print(f"{name:32s} x{count:3d}  {m:6d} x {n:6d} x {k:6d}  {ms:7.3f} ms  {flop / ms / 1e9:5.0f} TFLOP/s  "
              f"step {count * ms:6.2f} ms")
    print(f"total {total_ms:.2f} ms for {total_flop / 1e12:.1f} TFLOP ({total_flop / total_ms / 1e9:.0f} TFLOP/s)")
