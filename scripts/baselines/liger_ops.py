#!/usr/bin/env python3
"""Liger-Kernel's ops at liger-bench's shapes, one GPU: the baseline of
`liger-bench --op moe,fused_linear_preference` (bench/ops_vs_liger.sh runs
both and puts them side by side).

    python3 scripts/baselines/liger_ops.py [--op moe,fused_linear_preference] \\
        [--reps 20] [--warmup 5] [--json OUT.json]

Cases (bf16, the shapes, inputs and seeds of apps/liger_bench.cpp):
  moe                      x [8192, 2048], 8 of 128 experts of FFN 768; and
                           x [8192, 2048], 2 of 8 experts of FFN 5632. The
                           router as HF Mixtral (logits = x @ router^T, softmax
                           in fp32, top k, renormalised to sum to 1, fp32
                           weights) then LigerFusedMoEFunction (Triton grouped
                           GEMMs; gate_up [E, 2F, H]: gate rows then up rows;
                           down [E, H, F]). Gradients of x, router, gate_up, down.
  fused_linear_preference  LigerFusedLinearDPOLoss (sigmoid, beta 0.1, summed
                           log-probs, its defaults otherwise: torch.compile'd
                           chunks of one pair) on 16 sequences x 4096 tokens
                           (8 chosen then 8 rejected), hidden 4096, vocab
                           128256, the first 512 labels of each sequence -100.
                           Gradients of x and W. Its API takes no precomputed
                           reference log-probs (only a reference model's input
                           and weight), so it runs with use_ref_model=False:
                           reference log-probs of 0, one GEMM fewer than any
                           reference model; ours reads them as an input.

What is timed, as liger-bench does: each pass on fresh clones of the leaf
inputs (as activations in a model), CUDA events around the pass after a
~0.1 ms GPU sleep (so host launch overhead hides behind it), the median of
--reps after --warmup: forward (in grad mode), backward (upstream gradient
1 for a loss, random for the MoE output), forward + backward. Peak extra
memory: torch.cuda.max_memory_allocated during one forward + backward minus
what was allocated before it (inputs, their clones, the upstream gradient).

Writes, with --json, liger-bench's --json layout with "backend":
"liger-kernel" on every result. Needs a CUDA device and liger_kernel (with
triton) importable.
"""
import argparse
import contextlib
import datetime
import json
import signal
import statistics
import sys
import time

import torch

CASES = ("moe", "fused_linear_preference")
# (experts, top_k, hidden, ffn) of liger-bench's two MoE rows.
MOE_SHAPES = ((128, 8, 2048, 768), (8, 2, 2048, 5632))
DEVICE = "cuda"
WHEEL_HINT = ("install the wheel without network: pip install --no-deps --no-index --target DIR "
              "liger_kernel-0.8.5-py3-none-any.whl, then PYTHONPATH=DIR (bench/ops_vs_liger.sh does this; "
              "it needs triton too)")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--op", default=",".join(CASES), help="cases, comma separated (default: all)")
    p.add_argument("--reps", type=int, default=20, help="timed repetitions per pass (median)")
    p.add_argument("--warmup", type=int, default=5, help="untimed repetitions first")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--case-timeout", type=float, default=240.0,
                   help="seconds a case may take, first call (Triton's autotuning) included; past it "
                        "the case is recorded as not finished and the next one runs (default 240)")
    p.add_argument("--moe-shapes", default="all", choices=("all", "e128", "mixtral"),
                   help="moe shapes to run: both (all), only E=128 top-8 FFN 768 (e128), or only "
                        "E=8 top-2 FFN 5632 (mixtral); each autotunes Liger's kernels anew")
    args = p.parse_args()
    for name in args.op.split(","):
        if name not in CASES:
            p.error(f"--op: unknown case '{name}' (known: {', '.join(CASES)})")
    if args.reps < 1 or args.warmup < 1:
        p.error("--reps and --warmup must be at least 1")
    return args


def fail(message):
    print(f"liger_ops.py: {message}", file=sys.stderr)
    sys.exit(1)


def import_liger():
    """The two Liger entry points, or a one-line error saying how to get them."""
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
        from liger_kernel.ops import LigerFusedMoEFunction
    except ImportError as e:
        fail(f"cannot import liger_kernel ({e}): {WHEEL_HINT}")
    import importlib.metadata
    try:
        version = importlib.metadata.version("liger_kernel")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return LigerFusedMoEFunction, LigerFusedLinearDPOLoss, version


def dims(*d):
    return "[" + ",".join(str(v) for v in d) + "]"


def nbytes(t):
    return t.numel() * t.element_size()


class Case:
    """One op at one shape: leaf inputs, which want gradients, the op, and
    the fewest bytes each pass must move (liger-bench's GB/s columns)."""

    def __init__(self, op, shape, inputs, wants_grad, fn, fwd_bytes, bwd_bytes):
        self.op, self.shape, self.inputs, self.wants_grad = op, shape, inputs, wants_grad
        self.fn, self.fwd_bytes, self.bwd_bytes = fn, fwd_bytes, bwd_bytes


def moe_case(moe_function, experts, top_k, hidden, ffn, n=8192):
    dev, dt = DEVICE, torch.bfloat16
    # Drawn in liger-bench's order after the same seed: the same values.
    torch.manual_seed(0)
    x = torch.randn(n, hidden, dtype=dt, device=dev)
    router = torch.randn(experts, hidden, dtype=dt, device=dev) * 0.1
    gate_up = torch.randn(experts, 2 * ffn, hidden, dtype=dt, device=dev) * 0.02
    down = torch.randn(experts, hidden, ffn, dtype=dt, device=dev) * 0.02

    def block(x, router, gate_up, down):
        logits = x @ router.t()  # bf16 [N, E]
        probs = torch.softmax(logits.float(), dim=-1)  # cast: softmax in fp32, as HF Mixtral
        top_p, top_i = torch.topk(probs, top_k, dim=-1)
        weights = top_p / top_p.sum(dim=-1, keepdim=True)  # fp32 routing weights
        # cast: Liger takes int32 expert ids; its kernels read the fp32 weights as fp32
        return moe_function.apply(x, gate_up, down, top_i.to(torch.int32), weights)

    weights_bytes = nbytes(router) + nbytes(gate_up) + nbytes(down)
    shape = f"x {dims(n, hidden)}, {top_k} of {experts} experts of FFN {ffn}"
    return Case("moe", shape, [x, router, gate_up, down], [True] * 4, block,
                weights_bytes + 2 * nbytes(x), 2 * weights_bytes + 3 * nbytes(x))


def preference_case(dpo_loss_class, sequences=16, length=4096, prompt=512, hidden=4096, vocab=128256):
    n = sequences * length
    dev, dt = DEVICE, torch.bfloat16
    torch.manual_seed(0)  # liger-bench's order: labels, x, W, reference log-probs
    labels = torch.randint(0, vocab, (sequences, length), dtype=torch.long, device=dev)
    labels[:, :prompt] = -100
    x = torch.randn(n, hidden, dtype=dt, device=dev)
    w = torch.randn(vocab, hidden, dtype=dt, device=dev) * 0.02
    # liger-bench's summed reference log-probs: drawn to keep the sequence of
    # draws the same; Liger's API has no input for them (see the docstring).
    torch.randn(sequences, dtype=torch.float32, device=dev)
    loss_fn = dpo_loss_class(beta=0.1, loss_type="sigmoid", use_ref_model=False)

    def dpo(x, w, labels):
        # Rows 0-7 are the chosen sequences, 8-15 the rejected ones (Liger's layout).
        loss, _aux = loss_fn(w, x.view(sequences, length, hidden), labels)
        return loss

    shape = f"x {dims(n, hidden)}, W {dims(vocab, hidden)}, {sequences} sequences"
    return Case("fused_linear_preference", shape, [x, w, labels], [True, True, False], dpo,
                2 * (nbytes(x) + nbytes(w)), 0)


def feed(case):
    """Fresh leaves (gradients cleared) and the clones the op reads."""
    leaves, inter = [], []
    for t, grad in zip(case.inputs, case.wants_grad):
        leaf = t.detach().requires_grad_(grad)
        leaves.append(leaf)
        inter.append(leaf.clone() if grad else leaf)
    return leaves, inter


class Timer:
    def __init__(self):
        self.start_event = torch.cuda.Event(enable_timing=True)
        self.end_event = torch.cuda.Event(enable_timing=True)

    def start(self):
        torch.cuda._sleep(200000)  # keep the GPU busy while the host enqueues the pass
        self.start_event.record()

    def stop(self):
        self.end_event.record()
        self.end_event.synchronize()
        return self.start_event.elapsed_time(self.end_event)


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds):
    """Raises CaseTimeout in the main thread once `seconds` have passed (SIGALRM: it lands
    when Python next runs, e.g. between Triton's autotuning trials)."""
    def expire(signum, frame):
        raise CaseTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def measure(case, warmup, reps):
    leaves, inter = feed(case)
    out = case.fn(*inter)
    # A scalar output is a loss: upstream gradient 1, as from loss.backward().
    up = torch.ones_like(out) if out.dim() == 0 else torch.randn_like(out)
    del leaves, inter, out
    timer = Timer()
    fwd, bwd, full = [], [], []
    for i in range(warmup + reps):
        keep = i >= warmup
        leaves, inter = feed(case)  # forward (grad mode: what it saves is part of its cost)
        torch.cuda.synchronize()
        timer.start()
        out = case.fn(*inter)
        ms = timer.stop()
        if keep:
            fwd.append(ms)
        del leaves, inter, out

        leaves, inter = feed(case)  # backward
        out = case.fn(*inter)
        torch.cuda.synchronize()
        timer.start()
        out.backward(up)
        ms = timer.stop()
        if keep:
            bwd.append(ms)
        del leaves, inter, out

        leaves, inter = feed(case)  # forward + backward
        torch.cuda.synchronize()
        timer.start()
        case.fn(*inter).backward(up)
        ms = timer.stop()
        if keep:
            full.append(ms)
        del leaves, inter

    leaves, inter = feed(case)  # peak extra memory of forward + backward
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    case.fn(*inter).backward(up)
    torch.cuda.synchronize()
    peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    del leaves, inter

    def gbps(nb, ms):
        return nb / (ms * 1e-3) / 1e9 if nb > 0 and ms > 0 else 0.0

    r = {"op": case.op, "backend": "liger-kernel", "dtype": "bf16", "shape": case.shape,
         "fwd_ms": statistics.median(fwd), "bwd_ms": statistics.median(bwd), "full_ms": statistics.median(full)}
    r["fwd_gbps"] = gbps(case.fwd_bytes, r["fwd_ms"])
    r["bwd_gbps"] = gbps(case.bwd_bytes, r["bwd_ms"])
    r["full_gbps"] = gbps(case.fwd_bytes + case.bwd_bytes, r["full_ms"])
    r["peak_extra_mib"] = peak_mib
    return r


def main():
    args = parse_args()
    moe_function, dpo_loss_class, version = import_liger()
    if not torch.cuda.is_available():
        fail("no CUDA device: Liger-Kernel's Triton kernels need one (run this on the GPU machine)")
    wanted = args.op.split(",")
    makers = []
    if "moe" in wanted:
        chosen = {"all": MOE_SHAPES, "e128": MOE_SHAPES[:1], "mixtral": MOE_SHAPES[1:]}[args.moe_shapes]
        makers += [lambda s=s: moe_case(moe_function, *s) for s in chosen]
    if "fused_linear_preference" in wanted:
        makers.append(lambda: preference_case(dpo_loss_class))

    device = torch.cuda.get_device_name()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"device: {device}, torch {torch.__version__}, liger_kernel {version}, {date}, "
          f"median of {args.reps} after {args.warmup} warm-up")
    results = []
    for make in makers:
        case = make()
        print(f"{case.op:<24} liger-kernel bf16 {case.shape:<46} started (limit {args.case_timeout:g} s)",
              flush=True)
        started = time.monotonic()
        try:
            with time_limit(args.case_timeout):
                r = measure(case, args.warmup, args.reps)
        except CaseTimeout:
            # Recorded, not fatal: the table shows the case as not finished.
            r = {"op": case.op, "backend": "liger-kernel", "dtype": "bf16", "shape": case.shape,
                 "error": f"did not finish within {args.case_timeout:g} s"}
            print(f"{r['op']:<24} liger-kernel bf16 {r['shape']:<46} {r['error']}", flush=True)
        else:
            print(f"{r['op']:<24} liger-kernel bf16 {r['shape']:<46} fwd {r['fwd_ms']:9.4f} ms  "
                  f"bwd {r['bwd_ms']:9.4f} ms  f+b {r['full_ms']:9.4f} ms  peak {r['peak_extra_mib']:9.1f} MiB"
                  f"  ({time.monotonic() - started:.0f} s in all)", flush=True)
        results.append(r)
        del case
        torch.cuda.synchronize()
        torch.cuda.empty_cache()

    if args.json:
        doc = {"device": device, "torch": torch.__version__, "liger_kernel": version, "date": date,
               "reps": args.reps, "warmup": args.warmup, "timing": "cuda events, median",
               "notes": {"fused_linear_preference": "use_ref_model=False: Liger's DPO loss takes no "
                                                    "precomputed reference log-probs (they are 0 here)"},
               "results": results}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
