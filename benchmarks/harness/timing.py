"""Modes, warm-up and timing. Every number is the median over >= min_reps repetitions after warm-up; the
providers of a case are timed interleaved (round robin), so each sees the same machine load."""
import math
import time
from dataclasses import dataclass

import torch

from .cases import MODES


@dataclass
class Budget:
    """How long a case is measured: warm-up calls, repetitions and the seconds each provider aims at."""
    warmup: int
    min_reps: int
    max_reps: int
    target_seconds: float

    @classmethod
    def for_run(cls, quick):
        return cls(2, 15, 40, 0.25) if quick else cls(5, 25, 200, 1.0)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mode_steps(mode, fn, x, target, provider=None, loss_scale=1.0):
    """(prepare, timed): prepare() runs untimed and returns state, timed(state) is the measured work.
    loss_scale: the backward differentiates loss * loss_scale (torch.amp.GradScaler's), i.e. gets that grad_output."""
    def gradient(loss):
        grad_output = None if loss_scale == 1.0 else torch.full_like(loss, loss_scale)
        return torch.autograd.grad(loss, x, grad_output)

    if provider == "roofline":  # the floor is the same single pass in every mode
        return (lambda: None), (lambda _: fn(x, target))
    if mode == "forward":
        def timed(_):
            with torch.no_grad():
                return fn(x, target)

        return (lambda: None), timed
    if mode == "full":
        def timed(_):
            return gradient(fn(x, target))

        return (lambda: None), timed
    if mode == "backward":
        def timed(loss):
            return gradient(loss)

        return (lambda: fn(x, target)), timed
    raise ValueError(f"mode: expected one of {MODES}, given {mode!r}")


def warm_up(prepare, timed, device, warmup, target_seconds):
    """At least one call; the rest only while they fit in half the time budget (slow naive cases)."""
    began = time.perf_counter()
    for index in range(warmup):
        if index > 0 and time.perf_counter() - began > target_seconds / 2:
            break
        state = prepare()
        timed(state)
        del state
        synchronize(device)


def one_iteration(prepare, timed, device):
    """Milliseconds of one timed(prepare()) call: CUDA events on a GPU, synchronised perf_counter on CPU."""
    state = prepare()
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = timed(state)
        end.record()
        end.synchronize()
        del result, state
        return start.elapsed_time(end)
    begin = time.perf_counter()
    result = timed(state)
    elapsed = (time.perf_counter() - begin) * 1e3
    del result, state
    return elapsed


def measure_interleaved(steps, device, min_reps, max_reps, target_seconds):
    """Per-iteration ms for each provider, taken in rotating round-robin so that every provider sees the
    same machine load (a shared CPU drifts by 2x within a minute); rounds sized to fill the budget."""
    times = {name: [one_iteration(*steps[name], device)] for name in steps}
    round_ms = max(sum(values[0] for values in times.values()), 1e-3)
    reps = int(min(max_reps, max(min_reps, target_seconds * len(steps) * 1e3 / round_ms)))
    order = list(steps)
    for rep in range(reps - 1):
        shift = rep % len(order)
        for name in order[shift:] + order[:shift]:
            times[name].append(one_iteration(*steps[name], device))
    return times


def measure_times(steps, device, budget):
    """(times per provider, providers that ran out of memory): interleaved, or one provider at a time when
    the interleaved run does not fit (rare: each provider alone fitted)."""
    reps = (budget.min_reps, budget.max_reps, budget.target_seconds)
    try:
        return measure_interleaved(steps, device, *reps), []
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
    times, out_of_memory = {}, []
    for provider, step in steps.items():
        try:
            times.update(measure_interleaved({provider: step}, device, *reps))
        except torch.cuda.OutOfMemoryError:
            out_of_memory.append(provider)
            torch.cuda.empty_cache()
    return times, out_of_memory


def percentile(values, fraction):
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
