"""Peak memory of one call, above what was allocated before it.

On a GPU it comes from torch.cuda.max_memory_allocated; on CPU from the allocation/free events of the PyTorch
profiler (profile_memory=True), replayed in time order (torch's CPU allocator: oneDNN/MKL scratch is not seen).
"""
import contextlib
import os
import sys

import torch

from .timing import synchronize


@contextlib.contextmanager
def stderr_silenced():
    """The profiler's native logger writes to fd 2; keep the benchmark output readable."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def measure_peak_bytes(prepare, timed, device):
    """Peak bytes allocated while running prepare() + timed() once, above what was allocated before."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        state = prepare()
        result = timed(state)
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - baseline
        del state, result
        return peak
    from torch.profiler import ProfilerActivity, profile

    with stderr_silenced():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            state = prepare()
            result = timed(state)
            del state, result
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def tensor_bytes(tensor):
    if isinstance(tensor, (tuple, list)):  # class indices + per-row score
        return sum(tensor_bytes(t) for t in tensor)
    return tensor.numel() * tensor.element_size()
