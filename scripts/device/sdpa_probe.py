#!/usr/bin/env python3
"""Which SDPA kernel serves Llama-3-8B attention (q 32 heads, k/v 8 heads,
head_dim 128, causal, bf16) fastest: enable_gqa vs repeated k/v heads, each
with the default choice and each backend forced. Forward + backward, median of 10.
    python3 scripts/device/sdpa_probe.py [SEQ]"""
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

seq = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
dev = "cuda"
q = torch.randn(1, 32, seq, 128, device=dev, dtype=torch.bfloat16, requires_grad=True)
k = torch.randn(1, 8, seq, 128, device=dev, dtype=torch.bfloat16, requires_grad=True)
v = torch.randn(1, 8, seq, 128, device=dev, dtype=torch.bfloat16, requires_grad=True)
g = torch.randn(1, 32, seq, 128, device=dev, dtype=torch.bfloat16)


def run(gqa):
    if gqa:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    else:
        out = F.scaled_dot_product_attention(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1), is_causal=True)
    out.backward(g)


for gqa in (True, False):
    for name, backends in (("default", None), ("flash", [SDPBackend.FLASH_ATTENTION]),
                           ("cudnn", [SDPBackend.CUDNN_ATTENTION]), ("efficient", [SDPBackend.EFFICIENT_ATTENTION])):
        try:
            ctx = sdpa_kernel(backends) if backends else torch.enable_grad()
            with ctx:
                for _ in range(3):
                    run(gqa)
                times = []
                for _ in range(10):
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record(); run(gqa); b.record(); torch.cuda.synchronize()
                    times.append(a.elapsed_time(b))
            print(f"{'enable_gqa' if gqa else 'repeat_kv':10s} {name:9s} {statistics.median(times):7.2f} ms fwd+bwd")
        except Exception as e:  # a backend that refuses these inputs
            print(f"{'enable_gqa' if gqa else 'repeat_kv':10s} {name:9s} unavailable: {str(e).splitlines()[0][:80]}")
