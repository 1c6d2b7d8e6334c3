#!/usr/bin/env python3
"""Which SDPA kernel serves causal GQA attention fastest (bf16): enable_gqa vs
repeated k/v heads, each with the default choice and each backend forced.
Forward + backward, median of 10. Defaults: Llama-3-8B (q 32 heads, k/v 8,
head_dim 128) at one sequence of 8192; Llama-3.2-1B bench shape:
    python3 scripts/device/sdpa_probe.py 2048 4 64
    python3 scripts/device/sdpa_probe.py [SEQ [BATCH [HEAD_DIM]]]"""
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

seq = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1
head_dim = int(sys.argv[3]) if len(sys.argv) > 3 else 128
dev = "cuda"
q = torch.randn(batch, 32, seq, head_dim, device=dev, dtype=torch.bfloat16, requires_grad=True)
k = torch.randn(batch, 8, seq, head_dim, device=dev, dtype=torch.bfloat16, requires_grad=True)
v = torch.randn(batch, 8, seq, head_dim, device=dev, dtype=torch.bfloat16, requires_grad=True)
g = torch.randn(batch, 32, seq, head_dim, device=dev, dtype=torch.bfloat16)
# causal fwd + bwd: 4 B H T^2 D / 2 forward, 2.5x that backward
flops = 3.5 * 4 * batch * 32 * seq * seq * head_dim / 2
print(f"q [{batch}, 32, {seq}, {head_dim}], k/v 8 heads, causal: {flops / 1e12:.2f} TFLOP fwd+bwd")


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
            ms = statistics.median(times)
            print(f"{'enable_gqa' if gqa else 'repeat_kv':10s} {name:9s} {ms:7.2f} ms fwd+bwd "
                  f"({flops / ms / 1e9:.0f} TFLOP/s)")
        except Exception as e:  # a backend that refuses these inputs
            print(f"{'enable_gqa' if gqa else 'repeat_kv':10s} {name:9s} unavailable: {str(e).splitlines()[0][:80]}")
