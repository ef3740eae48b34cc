"""Fused linear + softmax focal loss (focal_cuda.linear_softmax_focal_loss) against the compositions people use:
time of forward + backward and peak memory, for an LM-head / extreme-classification shape.

Providers (all reduction "mean", gamma 2, no bias, every row counted):
- fused:    focal_cuda.linear_softmax_focal_loss(x, W, target)
- unfused:  focal_cuda.softmax_focal_loss(F.linear(x, W), target)
- naive:    F.linear + the classic focal class (benchmarks/naive.py FocalLoss: softmax, one-hot mask, pow)
- compiled: torch.compile of the unfused composition

Peak memory: bytes allocated during one forward + backward (x and W allocated before; their .grad set to None
first, so the gradients are allocated inside and counted), and the same "beyond grads", minus the bytes of the
gradients of x and W: the working memory the issue's target is about. CUDA: torch.cuda.max_memory_allocated.
CPU: the PyTorch profiler's memory events (profile_memory=True) replayed in time order, as benchmarks/bench.py
does (allocations of torch's CPU allocator; oneDNN/MKL scratch memory is not seen).

    python benchmarks/bench_linear.py                       # the CPU presets (or the GPU preset with CUDA)
    python benchmarks/bench_linear.py --preset cpu_fp32 --reps 5 --providers fused,unfused
"""
import argparse
import csv
import datetime
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import focal_cuda  # noqa: E402
from harness.memory import measure_peak_bytes  # noqa: E402  (bench.py's peak-memory measure)
import naive  # noqa: E402

PRESETS = {
    "cpu_fp32": dict(N=4096, H=1024, C=32000, dtype="float32", device="cpu"),
    "cpu_bf16": dict(N=4096, H=1024, C=32000, dtype="bfloat16", device="cpu"),
    "gpu_bf16": dict(N=8192, H=4096, C=128256, dtype="bfloat16", device="cuda"),
}
PROVIDERS = ["fused", "unfused", "naive", "compiled"]


def make_provider(name, C, chunk_size):
    if name == "fused":
        return lambda x, W, t: focal_cuda.linear_softmax_focal_loss(x, W, t, chunk_size=chunk_size)
    if name == "unfused":
        return lambda x, W, t: focal_cuda.softmax_focal_loss(F.linear(x, W), t)
    if name == "naive":
        classic = naive.FocalLoss(C)
        return lambda x, W, t: classic(F.linear(x, W), t)
    if name == "compiled":
        return torch.compile(lambda x, W, t: focal_cuda.softmax_focal_loss(F.linear(x, W), t))
    raise ValueError(f"unknown provider {name!r}")


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(fn, x, W, t):
    x.grad = None
    W.grad = None
    loss = fn(x, W, t)
    loss.backward()
    return loss.detach()


def peak_bytes(fn, x, W, t):
    """Peak bytes allocated by one forward + backward above what was allocated before it (bench.py's measure)."""
    x.grad = None
    W.grad = None
    return measure_peak_bytes(lambda: None, lambda _: step(fn, x, W, t), x.device)


def measure_interleaved(fns, x, W, t, warmup, reps):
    """Times of each provider, the providers interleaved in every repetition (a load change on the machine hits
    them alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            step(fn, x, W, t)
    times = {name: [] for name in fns}
    losses = {}
    for _ in range(reps):
        for name, fn in fns.items():
            synchronize(x.device)
            start = time.perf_counter()
            losses[name] = step(fn, x, W, t)
            synchronize(x.device)
            times[name].append(time.perf_counter() - start)
    return times, losses


def run(args):
    rows = []
    for preset in args.preset:
        spec = PRESETS[preset]
        device = torch.device(spec["device"])
        if device.type == "cuda" and not torch.cuda.is_available():
            print(f"# {preset}: skipped (no CUDA device)")
            continue
        dtype = getattr(torch, spec["dtype"])
        N, H, C = (args.N or spec["N"]), (args.H or spec["H"]), (args.C or spec["C"])
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(N, H, generator=gen).to(device, dtype).requires_grad_(True)
        W = (torch.randn(C, H, generator=gen) / H ** 0.5).to(device, dtype).requires_grad_(True)
        t = torch.randint(0, C, (N,), generator=gen).to(device)
        grad_bytes = x.numel() * x.element_size() + W.numel() * W.element_size()
        fns = {}
        for name in args.providers:
            fns[name] = make_provider(name, C, args.chunk_size)
        times, losses = measure_interleaved(fns, x, W, t, args.warmup, args.reps)
        reference = None
        for name, fn in fns.items():
            peak = peak_bytes(fn, x, W, t)  # also leaves this provider's gradients in x.grad, W.grad
            grads = (x.grad.detach().clone(), W.grad.detach().clone())
            loss = losses[name]
            if reference is None:
                reference = (loss, grads)
            check = max((g - r).double().norm().item() / max(r.double().norm().item(), 1e-30)
                        for g, r in zip((loss.reshape(1),) + grads, (reference[0].reshape(1),) + reference[1]))
            ts = times[name]
            rows.append(dict(preset=preset, provider=name, N=N, H=H, C=C, dtype=spec["dtype"], device=str(device),
                             threads=torch.get_num_threads(), reps=len(ts),
                             median_s=statistics.median(ts), min_s=min(ts), max_s=max(ts),
                             peak_mb=peak / 2**20, peak_beyond_grads_mb=(peak - grad_bytes) / 2**20,
                             rel_diff_vs_first=check))
            print(f"# {preset} {name}: median {rows[-1]['median_s']:.3f} s, peak {rows[-1]['peak_mb']:.0f} MB",
                  flush=True)
            x.grad = None
            W.grad = None
    return rows


def print_table(rows):
    by_preset = {}
    for row in rows:
        by_preset.setdefault(row["preset"], []).append(row)
    print("| preset | shape N × H → C | dtype | provider | median s (min–max) | peak MB | peak beyond grads MB "
          "| x unfused time | x unfused peak beyond grads |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for preset, group in by_preset.items():
        base = next((r for r in group if r["provider"] == "unfused"), group[0])
        for r in group:
            print(f"| {preset} | {r['N']} × {r['H']} → {r['C']} | {r['dtype']} | {r['provider']} | "
                  f"{r['median_s']:.2f} ({r['min_s']:.2f}–{r['max_s']:.2f}) | {r['peak_mb']:.0f} | "
                  f"{r['peak_beyond_grads_mb']:.0f} | {r['median_s'] / base['median_s']:.2f} | "
                  f"{r['peak_beyond_grads_mb'] / base['peak_beyond_grads_mb']:.2f} |")


def write_csv(rows, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", nargs="+", choices=list(PRESETS), default=None,
                        help="default: gpu_bf16 with CUDA, else cpu_fp32 and cpu_bf16")
    parser.add_argument("--providers", type=lambda s: s.split(","), default=PROVIDERS,
                        help=f"comma-separated subset of {','.join(PROVIDERS)}")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions after warm-up (median, min, max)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=None, help="rows per chunk of the fused op (default: "
                        "its memory budget)")
    parser.add_argument("--N", type=int, default=None, help="override the preset's rows")
    parser.add_argument("--H", type=int, default=None, help="override the preset's hidden size")
    parser.add_argument("--C", type=int, default=None, help="override the preset's class count")
    parser.add_argument("--csv", default=None, help="default: benchmarks/results/linear_<device>_<date>.csv")
    args = parser.parse_args(argv)
    if args.preset is None:
        args.preset = ["gpu_bf16"] if torch.cuda.is_available() else ["cpu_fp32", "cpu_bf16"]
    return args


def main(argv=None):
    args = parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, {datetime.date.today()}")
    rows = run(args)
    if not rows:
        return
    print_table(rows)
    device = "cuda" if any(r["device"].startswith("cuda") for r in rows) else "cpu"
    path = args.csv or os.path.join(HERE, "results", f"linear_{device}_{datetime.date.today()}.csv")
    write_csv(rows, path)
    print(f"# wrote {path}")


if __name__ == "__main__":
    main()
