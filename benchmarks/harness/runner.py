"""One case (preset, size, dtype): every provider's loss and gradient checked against the baseline provider
(focal_cuda, else reference), then each mode warmed up, its peak memory measured and its time taken."""
import statistics
import time
from dataclasses import dataclass
from typing import Optional

import torch

from . import bandwidth
from .cases import DTYPES, PRESETS, make_inputs
from .memory import measure_peak_bytes, tensor_bytes
from .providers import BASELINES
from .timing import Budget, measure_times, mode_steps, percentile, synchronize, warm_up


@dataclass
class Settings:
    modes: list
    budget: Budget
    loss_scale: float = 1.0
    copy_bandwidth: Optional[float] = None  # bytes/s of a device copy: adds % HBM; None: off


def run_case(preset_name, size, dtype_name, device, provider_names, providers, settings, context, table):
    """The rows of one case, one per (mode, provider); each mode's rows are printed as they are measured.
    context: the run's columns (device, torch, threads, date, reduction, ...)."""
    preset, dtype = PRESETS[preset_name], DTYPES[dtype_name]
    x, target = make_inputs(preset, size, dtype, device)
    x.requires_grad_(True)
    shape = "x".join(str(d) for d in x.shape)
    label = f"{preset_name} {shape} {dtype_name}"
    functions = {p: providers.make(p, preset, x, target) for p in provider_names}
    checks, notes = check_providers(functions, x, target, dtype, (preset["op"], dtype_name),
                                    providers.compile_failures, device, label)
    base_row = dict(context, preset=preset_name, op=preset["op"], shape=shape, elements=x.numel(), dtype=dtype_name)
    rows = []
    for mode in settings.modes:
        case_rows = measure_mode(mode, functions, checks, notes, x, target, base_row, settings, device, label)
        rows.extend(case_rows)
        table.print_rows(case_rows)
    del x, target, functions
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def check_providers(functions, x, target, dtype, failure_key, compile_failures, device, label):
    """One fwd+bwd per provider: checks values against focal_cuda (or reference) and warms compilers.
    Returns (check per provider that can be timed, note per provider)."""
    checks, notes, baseline = {}, {}, None
    for provider in [p for p in ("focal_cuda", "reference") if p in functions] + \
            [p for p in functions if p not in ("focal_cuda", "reference")]:
        if provider == "compiled" and failure_key in compile_failures:
            notes[provider] = compile_failures[failure_key]
            continue
        if provider in ("roofline", "cross_entropy"):  # not a focal loss: nothing to compare
            functions[provider](x, target)
            checks[provider] = "-"
            continue
        try:
            began = time.perf_counter()
            result = loss_and_grad(functions[provider], x, target)
            synchronize(device)
            if provider == "compiled":
                notes[provider] = f"compile + first fwd+bwd {time.perf_counter() - began:.1f}s"
        except Exception as error:  # a compiler failure or OOM is reported, the others keep running
            notes[provider] = provider_failure(error, provider, label)
            if notes[provider].startswith("compile failed"):
                compile_failures[failure_key] = notes[provider]
            continue
        if baseline is None:
            baseline = result
            checks[provider] = "baseline"
        else:
            checks[provider] = compare(result, baseline, dtype)
        del result
    return checks, notes


def measure_mode(mode, functions, checks, notes, x, target, base_row, settings, device, label):
    """One row per provider for one mode: time (median, p20, p80), GB/s, peak MB, the "x P" ratios."""
    minimal_bytes = tensor_bytes(x) + tensor_bytes(target)
    if mode != "forward":
        minimal_bytes += tensor_bytes(x)
    rows, steps = {}, {}
    for provider, function in functions.items():
        row = rows[provider] = dict(base_row, mode=mode, provider=provider, minimal_bytes=minimal_bytes,
                                    check=checks.get(provider, ""), note=notes.get(provider, ""))
        if provider not in checks:
            row["note"] = row["note"] or "skipped"
            continue
        prepare, timed = mode_steps(mode, function, x, target, provider, settings.loss_scale)
        try:
            # warm-up compiles the no-grad graph for forward mode; peak memory: one profiled call
            warm_up(prepare, timed, device, settings.budget.warmup, settings.budget.target_seconds)
            row["peak_mb"] = measure_peak_bytes(prepare, timed, device) / 2**20
            steps[provider] = (prepare, timed)
        except Exception as error:
            row["note"] = provider_failure(error, provider, f"{label} {mode}")
        del prepare, timed
    times, out_of_memory = measure_times(steps, device, settings.budget)
    del steps
    for provider in out_of_memory:
        rows[provider]["note"] = "out of memory"
    for provider, values in times.items():
        median = statistics.median(values)
        rows[provider].update(median_ms=median, p20_ms=percentile(values, 0.2), p80_ms=percentile(values, 0.8),
                              reps=len(values), gbps=minimal_bytes / (median * 1e-3) / 1e9)
    timed_rows = {provider: row for provider, row in rows.items() if "median_ms" in row}
    for row in timed_rows.values():
        for baseline_name in BASELINES:
            if baseline_name in timed_rows and baseline_name != row["provider"]:
                row[f"x_{baseline_name}"] = row["median_ms"] / timed_rows[baseline_name]["median_ms"]
    if settings.copy_bandwidth:
        bandwidth.annotate(rows.values(), mode, x, target, settings.copy_bandwidth)
    return list(rows.values())


def provider_failure(error, provider, case):
    """The note for a provider that could not run a case: out of memory, or a torch.compile failure.
    Any other error in focal_cuda, naive or reference is a bug and is raised."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        print(f"warning: {case}: {provider} ran out of memory")
        torch.cuda.empty_cache()
        return "out of memory"
    if provider != "compiled":
        raise error
    print(f"warning: {case}: torch.compile failed, compiled skipped: {first_line(error)}")
    return f"compile failed: {first_line(error)}"


def compare(result, baseline, dtype):
    """'ok' when loss and gradient match the baseline provider's within the dtype's tolerance."""
    tolerance = 1e-3 if dtype in (torch.float32, torch.float64) else 5e-2
    loss, grad = result
    base_loss, base_grad = baseline
    loss_error = abs(float(loss) - float(base_loss)) / max(abs(float(base_loss)), 1e-12)
    scale = float(base_grad.abs().max().float())
    grad_error = float((grad.float() - base_grad.float()).abs().max()) / max(scale, 1e-30)
    if loss_error <= tolerance and grad_error <= tolerance:
        return "ok"
    return f"MISMATCH(loss {loss_error:.1e}, grad {grad_error:.1e})"


def loss_and_grad(fn, x, target):
    loss = fn(x, target)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def first_line(error):
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[0][:160] if text else type(error).__name__
