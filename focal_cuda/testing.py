"""Test machinery: run the CUDA kernels without a GPU, and count kernel launches (docs/design.md §6).

    with focal_cuda.testing.emulated_cuda(sm_count=3):
        loss = focal_cuda.sigmoid_focal_loss(logits_on_cpu, target, reduction="mean")   # CUDA kernels, emulated

Inside `emulated_cuda()` every focal_cuda function and module on CPU tensors runs csrc/cuda's launchers and
kernels (compiled as host C++ against a small SIMT emulator: per-thread fibers, __syncthreads barriers, warp
shuffles, per-block __shared__) instead of the CPU kernels, autograd included. It checks indexing,
reductions, vector/scalar paths, launch counts and block-level synchronisation; it cannot check timing,
occupancy or the GPU memory model. The package must be built with FOCAL_CUDA_EMULATE=1.
"""
import contextlib
import threading

import torch

from . import _ops

__all__ = ["approx_math_error", "emulated_cuda", "emulation_available", "kernel_launches"]

_lock = threading.Lock()


def emulation_available():
    """True when this build contains focal_cuda._emulated (FOCAL_CUDA_EMULATE=1)."""
    try:
        _ops.load_emulated()
    except RuntimeError:
        return False
    return True


@contextlib.contextmanager
def emulated_cuda(sm_count=None, *, reverse_schedule=False, workers=None):
    """Route focal_cuda calls on CPU tensors through the emulated CUDA kernels while active.

    sm_count: the SM count the launchers size their grids with (default 132, an H100/H200), so multi-block
        reductions run on small inputs with sm_count=1..3.
    reverse_schedule: run the threads of each block in reverse order between sync points; a missing
        __syncthreads then changes the result (compare with the forward order).
    workers: OS threads that run the blocks of a launch concurrently (default 2).
    Not reentrant, and global to the process (one emulated device).
    """
    library = _ops.load_emulated()
    if sm_count is not None and (isinstance(sm_count, bool) or not isinstance(sm_count, int) or sm_count < 1):
        raise ValueError(f"sm_count: expected a positive int or None, got {sm_count!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers: expected a positive int or None, got {workers!r}")
    if not _lock.acquire(blocking=False):
        raise RuntimeError("emulated_cuda() is already active: it is not reentrant")
    previous = list(library.emulator_state())
    try:
        library.emulator_configure(sm_count or 132, bool(reverse_schedule), workers or 2)
        _ops._emulated_ops = library
        yield
    finally:
        _ops._emulated_ops = None
        library.emulator_configure(previous[0], bool(previous[1]), previous[2])
        _lock.release()


_APPROX_MODES = {"hashed": 0, "up": 1, "down": -1}


@contextlib.contextmanager
def approx_math_error(mode="hashed"):
    """The direction of the emulated device approx-math error (ex2 / lg2 / rcp at their documented worst case)
    while active: "hashed" (the default: a direction fixed by each input's bits, so errors cancel in a sum),
    "up" or "down" (every result moved the same way: correlated errors, which do not cancel)."""
    if mode not in _APPROX_MODES:
        raise ValueError(f"mode: expected one of {sorted(_APPROX_MODES)}, got {mode!r}")
    library = _ops.load_emulated()
    previous = library.approx_error_mode(_APPROX_MODES[mode])
    try:
        yield
    finally:
        library.approx_error_mode(previous)


def kernel_launches():
    """Kernel launches issued so far by focal_cuda's CUDA launchers, real and emulated together."""
    total = 0
    if hasattr(torch.ops.focal_cuda, "kernel_launches") and _ops.has_cuda_kernels():
        total += torch.ops.focal_cuda.kernel_launches()
    if _ops._EMULATED_LIBRARY is not None:
        total += _ops._EMULATED_LIBRARY.kernel_launches()
    return total
