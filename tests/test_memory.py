"""No leaks: 1000 forward+backward iterations of every loss do not grow CPU RSS or CUDA allocated memory.

Tensors are small but not tiny (8-16 KiB each), so that a leak of one buffer per call (loss, stored gradient,
grad_input, or the autograd graph holding them) would add >= 8 MiB over the run, well above the slack allowed
for allocator noise (glibc arenas, autograd's thread-local caches) after a warm-up.
"""

import gc
import os

import pytest
import torch

import focal_cuda

ITERATIONS = 1000
WARMUP = 100
RSS_SLACK_BYTES = 4 * 2**20
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def make_calls(device):
    """(name, call) pairs; each call runs one forward and backward (or a forward without autograd)."""
    logits = torch.randn(64, 32, device=device)
    dense = torch.rand(64, 32, device=device)
    rows = torch.randint(0, 33, (64,), device=device)  # class 32 = background
    classes = torch.randint(0, 32, (64,), device=device)
    prob = torch.rand(64, 32, device=device).clamp(0.01, 0.99)
    spatial = torch.randn(4, 8, 16, 8, device=device)
    spatial_target = torch.randint(0, 8, (4, 16, 8), device=device)
    normalizer = torch.tensor(17.0, device=device)

    def backward(function, input, *args, reduction="mean", **kwargs):
        leaf = input.detach().requires_grad_(True)
        loss = function(leaf, *args, reduction=reduction, **kwargs)
        loss.backward(torch.ones_like(loss))
        assert leaf.grad is not None

    return [
        ("sigmoid dense", lambda: backward(focal_cuda.sigmoid_focal_loss, logits, dense, reduction="none")),
        ("sigmoid index", lambda: backward(focal_cuda.sigmoid_focal_loss, logits, rows, normalizer=normalizer)),
        ("softmax", lambda: backward(focal_cuda.softmax_focal_loss, logits, classes, label_smoothing=0.1)),
        ("softmax spatial", lambda: backward(focal_cuda.softmax_focal_loss, spatial, spatial_target,
                                             reduction="none", alpha=[1.0] * 8)),
        ("binary", lambda: backward(focal_cuda.binary_focal_loss, prob, dense, reduction="sum")),
        ("forward only", lambda: focal_cuda.softmax_focal_loss(logits, classes)),
        # a graph built and dropped without backward must free its stored gradient too
        ("graph dropped", lambda: focal_cuda.sigmoid_focal_loss(logits.detach().requires_grad_(True), dense)),
    ]


def run_all(calls, iterations):
    for _ in range(iterations):
        for _, call in calls:
            call()


def test_cpu_rss_does_not_grow():
    calls = make_calls("cpu")
    run_all(calls, WARMUP)
    gc.collect()
    before = rss_bytes()
    run_all(calls, ITERATIONS)
    gc.collect()
    growth = rss_bytes() - before
    assert growth <= RSS_SLACK_BYTES, (
        f"RSS grew by {growth / 2**20:.1f} MiB over {ITERATIONS} iterations of {[name for name, _ in calls]} "
        f"(allowed {RSS_SLACK_BYTES / 2**20:.0f} MiB)")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_memory_does_not_grow():
    calls = make_calls("cuda")
    run_all(calls, WARMUP)
    torch.cuda.synchronize()
    gc.collect()
    before = torch.cuda.memory_allocated()
    reserved_before = torch.cuda.memory_reserved()
    run_all(calls, ITERATIONS)
    torch.cuda.synchronize()
    gc.collect()
    # allocated bytes are exact (the caching allocator's count of live blocks): no slack
    assert torch.cuda.memory_allocated() == before, (
        f"CUDA allocated memory grew by {torch.cuda.memory_allocated() - before} bytes over {ITERATIONS} iterations")
    # leaks are caught exactly above; this bounds the cache itself (a segment may still be added after warm-up)
    assert torch.cuda.memory_reserved() <= reserved_before + 32 * 2**20, "the CUDA caching allocator kept growing"
