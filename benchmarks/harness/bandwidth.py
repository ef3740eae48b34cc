"""% HBM: the fused kernels' compulsory traffic over their time, against a device-to-device copy measured in
the same run (on CPU the same against a memory copy: a dry run of the GPU numbers' path).

Compulsory traffic per mode (the fused kernels keep one gradient buffer): forward without a gradient reads the
logits and targets; forward + backward ("full") also writes the gradient in the forward pass, then reads it
and writes the input gradient in the backward pass (4 x input + targets); "backward" alone is 2 x input.
"""
import statistics

import torch

from .memory import tensor_bytes
from .timing import measure_interleaved, warm_up

COPY_BYTES = 256e6  # well above any GPU's L2 cache


def measure_copy_bandwidth(device, budget, scale=1.0):
    """Bytes per second of a device-to-device copy (read + write), timed like the providers."""
    source = torch.empty(max(1 << 19, int(COPY_BYTES * scale) // 2), dtype=torch.bfloat16, device=device)
    destination = torch.empty_like(source)
    step = ((lambda: None), (lambda _: destination.copy_(source)))
    warm_up(*step, device, budget.warmup, budget.target_seconds)
    times = measure_interleaved({"copy": step}, device, budget.min_reps, budget.max_reps, budget.target_seconds)
    return 2 * tensor_bytes(source) / (statistics.median(times["copy"]) * 1e-3)


def describe(device, device_name, copy_bandwidth):
    return (f"# {device_name}: device copy {copy_bandwidth / 1e12:.3f} TB/s ({copy_bandwidth / 1e9:.1f} GB/s, "
            f"{device.type}), the bandwidth reference for {column_title(device)}")


def column_title(device):
    return "% HBM" if device.type == "cuda" else "% DRAM"


def compulsory_bytes(mode, x, target):
    """Bytes the fused kernels must move in one call of the mode."""
    if mode == "forward":
        return tensor_bytes(x) + tensor_bytes(target)
    if mode == "backward":
        return 2 * tensor_bytes(x)
    return 4 * tensor_bytes(x) + tensor_bytes(target)


def annotate(rows, mode, x, target, copy_bandwidth):
    """Adds the copy bandwidth to every row and focal_cuda's % of it (the traffic model is the fused kernels')."""
    traffic = compulsory_bytes(mode, x, target)
    for row in rows:
        row["copy_tb_s"] = copy_bandwidth / 1e12
        if row["provider"] == "focal_cuda" and "median_ms" in row:
            row["traffic_bytes"] = traffic
            row["pct_hbm"] = 100 * traffic / (row["median_ms"] * 1e-3) / copy_bandwidth
