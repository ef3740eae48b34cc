"""GPU bandwidth benchmark: forward + backward of the fused losses as a share of the HBM bandwidth.

    python benchmarks/gpu_bench.py [--device cuda] [--compile] [--csv OUT.csv] [--scale 1.0]

For each preset: median time (with p20 / p80) of focal_cuda, the eager formula users run (naive), PyTorch's
own cross-entropy / BCE-with-logits (less work than focal: a floor for a library kernel), and with --compile
torch.compile of the best plain formulation (one compile per preset, capped by the caller's time limit).
"% HBM" = the fused kernels' compulsory traffic (forward: read logits and targets, write the gradient;
backward: read it, write the input gradient) over the time, against a device-to-device copy measured in
the same run. "peak MB" = the most GPU memory allocated during one forward + backward above what was allocated
before it (inputs and targets; the input gradient it creates included): torch.cuda.max_memory_allocated.
--device cpu with --scale 0.01 is a dry run of this script on a machine without a GPU (no peak memory there).
"""
import argparse
import csv
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import naive  # noqa: E402

import focal_cuda  # noqa: E402


def plain_softmax_focal(x, t, gamma=2.0):
    """The best plain formulation: log_softmax once, gather the target class."""
    logp = F.log_softmax(x.float(), dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
    return (-(1 - logp.exp()) ** gamma * logp).mean()


def sigmoid_index_naive(x, t):
    """torchvision's formula on the one-hot target users build from class indices (background = C)."""
    one_hot = F.one_hot(t, x.shape[-1] + 1)[..., :-1].to(x.dtype)
    return naive.sigmoid_focal_loss(x, one_hot, reduction="mean")


def sigmoid_index_bce(x, t):
    one_hot = F.one_hot(t, x.shape[-1] + 1)[..., :-1].to(x.dtype)
    return F.binary_cross_entropy_with_logits(x, one_hot)


def presets(scale, dtype):
    def n(value):
        return max(1, int(value * scale))

    yield ("sigmoid_index", (n(4_000_000), 80), dtype,
           {"focal_cuda": lambda x, t: focal_cuda.sigmoid_focal_loss(x, t, reduction="mean"),
            "naive": sigmoid_index_naive, "cross_entropy": sigmoid_index_bce}, "sigmoid")
    for rows, C in ((n(1_000_000), 80), (n(65536), 32000)):
        yield (f"softmax_C{C}", (rows, C), dtype,
               {"focal_cuda": lambda x, t: focal_cuda.softmax_focal_loss(x, t),
                "naive": plain_softmax_focal, "cross_entropy": lambda x, t: F.cross_entropy(x, t)}, "softmax")
    yield ("varifocal_index", (n(4_000_000), 80), dtype,
           {"focal_cuda": lambda x, t: focal_cuda.varifocal_loss(x, t, score=t.score),
            "naive": lambda x, t: naive.varifocal_index_score(x, t, t.score), "cross_entropy": sigmoid_index_bce},
           "varifocal")
    yield ("segmentation", (16, 19, n(512), 512), dtype,
           {"focal_cuda": lambda x, t: focal_cuda.softmax_focal_loss(x, t),
            "naive": plain_softmax_focal, "cross_entropy": lambda x, t: F.cross_entropy(x, t)}, "softmax")


def make_inputs(shape, dtype, kind, device):
    x = torch.randn(shape, device=device, dtype=dtype).requires_grad_(True)
    if kind in ("sigmoid", "varifocal"):
        t = torch.randint(0, shape[-1] + 1, shape[:-1], device=device)
        if kind == "varifocal":  # the IoU score of each anchor's target class rides on the label tensor
            t.score = torch.rand(shape[:-1], device=device, dtype=dtype)
    else:
        t = torch.randint(0, shape[1], (shape[0],) + tuple(shape[2:]), device=device)
    return x, t


def timed(fn, device, reps, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return statistics.median(times), times[len(times) // 5], times[(4 * len(times)) // 5]


def peak_mb(step, x, device):
    """MiB allocated at most while `step` runs once, above what was allocated before it (nan off the GPU)."""
    if device != "cuda":
        return float("nan")
    x.grad = None  # the step's own input gradient counts, not the previous step's
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - baseline) / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="bfloat16,float16")
    parser.add_argument("--compile", action="store_true", help="add torch.compile of the plain formulation")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the presets (dry runs)")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--csv", default=None)
    args = parser.parse_args()
    device = args.device

    copy_src = torch.empty(int(256e6 * args.scale) // 2, dtype=torch.bfloat16, device=device)
    copy_dst = torch.empty_like(copy_src)
    copy_ms = timed(lambda: copy_dst.copy_(copy_src), device, args.reps)[0]
    bandwidth = 2 * copy_src.numel() * copy_src.element_size() / (copy_ms * 1e-3)  # bytes/s
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"# {name}: device copy {bandwidth / 1e12:.2f} TB/s (the bandwidth reference)")

    rows = []
    header = f"{'preset':<16}{'dtype':<10}{'provider':<14}{'ms':>9}{'p20':>9}{'p80':>9}{'%HBM':>7}{'vs focal':>9}{'peak MB':>9}"
    print(header)
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for preset, shape, _, providers, kind in presets(args.scale, dtype):
            x, t = make_inputs(shape, dtype, kind, device)
            traffic = 4 * x.numel() * x.element_size() + t.numel() * t.element_size()
            if hasattr(t, "score"):
                traffic += t.score.numel() * t.score.element_size()
            if args.compile:
                providers = dict(providers, compiled=torch.compile(providers["naive"], dynamic=False))
            focal_ms = None
            for provider, loss_fn in providers.items():
                def step():
                    x.grad = None
                    loss_fn(x, t).backward()
                try:
                    ms, p20, p80 = timed(step, device, args.reps)
                    peak = peak_mb(step, x, device)
                except torch.OutOfMemoryError:
                    print(f"{preset:<16}{dtype_name:<10}{provider:<14} out of memory")
                    continue
                focal_ms = ms if provider == "focal_cuda" else focal_ms
                hbm = 100 * traffic / (ms * 1e-3) / bandwidth
                ratio = ms / focal_ms if focal_ms else float("nan")
                print(f"{preset:<16}{dtype_name:<10}{provider:<14}{ms:9.3f}{p20:9.3f}{p80:9.3f}"
                      f"{hbm if provider == 'focal_cuda' else float('nan'):7.1f}{ratio:9.2f}{peak:9.1f}")
                rows.append(dict(device=name, preset=preset, shape="x".join(map(str, shape)), dtype=dtype_name,
                                 provider=provider, ms=f"{ms:.4f}", p20=f"{p20:.4f}", p80=f"{p80:.4f}",
                                 pct_hbm=f"{hbm:.1f}" if provider == "focal_cuda" else "",
                                 copy_tb_s=f"{bandwidth / 1e12:.3f}", peak_mb=f"{peak:.1f}"))
            del x, t
            if device == "cuda":
                torch.cuda.empty_cache()
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
