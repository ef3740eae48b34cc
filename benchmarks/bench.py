#!/usr/bin/env python
"""Benchmark focal_cuda's fused kernels against what users run today.

Providers
  focal_cuda  the package's fused kernels (CUDA on a GPU, vectorised C++ on CPU)
  naive       the implementations people copy (benchmarks/naive.py), run eagerly
  reference   focal_cuda.reference (plain, numerically careful PyTorch), run eagerly
  compiled    torch.compile of the focal_cuda.reference functions

Modes
  forward     loss only, under torch.no_grad()
  backward    the backward pass alone (the forward that builds the graph runs untimed before it)
  full        forward + backward (loss and d loss / d input), what a training step pays

Every number is the median over repetitions after warm-up, with the 20th/80th percentiles.
Effective bandwidth = minimal bytes / median time, where minimal bytes = input + targets read once
(forward), plus the input-sized gradient written once (backward, full). "SoL" is that bandwidth as
a fraction of the device's copy bandwidth (dst.copy_(src) of a large tensor, read + write bytes),
measured in the same run.

Peak memory = the most memory allocated while running the mode once (for backward, the forward
that builds the graph plus the backward) above what was allocated before (inputs and targets).
On a GPU it comes from torch.cuda.max_memory_allocated; on CPU from the allocation/free events of
the PyTorch profiler (profile_memory=True), replayed in time order.

Quick start:  python benchmarks/bench.py --quick
"""
import argparse
import contextlib
import csv
import datetime
import glob
import importlib.util
import logging
import math
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# Inductor's worker pool costs more than it saves on a small CPU machine; the generated code is the same.
if (os.cpu_count() or 1) <= 4:
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def _load_module_from_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


naive = _load_module_from_file("focal_bench_naive", os.path.join(HERE, "naive.py"))


def import_focal_cuda():
    """Return (focal_cuda module or None, reference module, why focal_cuda is missing or None)."""
    # a checkout with an in-place build is what the user just built: prefer it over an installed copy
    if glob.glob(os.path.join(REPO, "focal_cuda", "_C*.so")) and REPO not in sys.path:
        sys.path.insert(0, REPO)
    try:
        import focal_cuda
        import focal_cuda.reference as reference

        return focal_cuda, reference, None
    except Exception as error:  # ImportError, or the loader's RuntimeError when _C is missing
        if REPO not in sys.path:
            sys.path.insert(0, REPO)
            try:
                import focal_cuda
                import focal_cuda.reference as reference

                return focal_cuda, reference, None
            except Exception as second_error:
                error = second_error
        reference_path = os.path.join(REPO, "focal_cuda", "reference.py")
        reference = _load_module_from_file("focal_bench_reference", reference_path)
        return None, reference, f"{type(error).__name__}: {error}"


ALPHA = 0.25
GAMMA = 2.0

# name -> op family, class count, sizes (CPU, GPU), the size --quick uses (CPU, GPU; None: not in --quick)
# sizes are rows N for (N, C) presets and H = W for segmentation
PRESETS = {
    "det_dense": dict(op="sigmoid_dense", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                      quick=(65536, 1 << 23),
                      about="dense detection, sigmoid, (anchors*batch, 80) logits, dense float targets"),
    "det_index": dict(op="sigmoid_index", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                      quick=(65536, 1 << 23),
                      about="dense detection, sigmoid, (anchors*batch, 80) logits, class-index targets (80 = background)"),
    "cls_c10": dict(op="softmax", C=10, cpu=[65536, 262144, 1048576], gpu=[1 << 23, 1 << 25, 1 << 26],
                    quick=None, about="classification, softmax, (N, 10)"),
    "cls_c80": dict(op="softmax", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                    quick=(65536, 1 << 23), about="classification, softmax, (N, 80)"),
    "cls_c1000": dict(op="softmax", C=1000, cpu=[1024, 4096, 16384], gpu=[1 << 16, 1 << 18, 1 << 19],
                      quick=None, about="classification, softmax, (N, 1000)"),
    "cls_c32000": dict(op="softmax", C=32000, cpu=[32, 128, 512], gpu=[2048, 8192, 16384],
                       quick=(None, 16384), about="language-model vocabulary, softmax, (N, 32000)"),
    "seg": dict(op="softmax_spatial", C=19, cpu=[128, 256, 512], gpu=[512, 1024, 2048],
                quick=(None, 2048), about="segmentation, softmax, (B, 19, H, W), B = 2 on CPU, 8 on GPU"),
    "binary": dict(op="binary", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                   quick=None, about="multi-label on probabilities, (N, 80) after a sigmoid, dense targets"),
}
PROVIDERS = ["focal_cuda", "naive", "reference", "compiled"]
MODES = ["forward", "backward", "full"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}


def preset_shape(preset, size, device):
    if preset["op"] == "softmax_spatial":
        batch = 8 if device.type == "cuda" else 2
        return (batch, preset["C"], size, size)
    return (size, preset["C"])


def make_inputs(preset, size, dtype, device, seed=0):
    """Logits (or probabilities) and targets shaped like the workload the preset stands for."""
    generator = torch.Generator(device=device).manual_seed(seed)
    shape = preset_shape(preset, size, device)
    C = preset["C"]
    op = preset["op"]
    logits = (torch.randn(shape, device=device, generator=generator) * 2).to(dtype)
    if op == "sigmoid_dense":
        # about 1 positive class in 80 per anchor, as in dense detectors
        target = (torch.rand(shape, device=device, generator=generator) < 1.0 / C).to(dtype)
        return logits, target
    if op == "sigmoid_index":
        # most anchors are background (class C), the rest carry one positive class
        rows = shape[0]
        positive = torch.randint(0, C, (rows,), device=device, generator=generator)
        is_background = torch.rand(rows, device=device, generator=generator) < 0.9
        target = torch.where(is_background, torch.full_like(positive, C), positive)
        return logits, target
    if op == "softmax":
        return logits, torch.randint(0, C, (shape[0],), device=device, generator=generator)
    if op == "softmax_spatial":
        target_shape = (shape[0],) + shape[2:]
        return logits, torch.randint(0, C, target_shape, device=device, generator=generator)
    if op == "binary":
        prob = torch.sigmoid(logits.float()).clamp(1e-3, 1 - 1e-3).to(dtype)
        target = (torch.rand(shape, device=device, generator=generator) < 1.0 / C).to(dtype)
        return prob, target
    raise ValueError(f"preset op: expected one of sigmoid_dense, sigmoid_index, softmax, softmax_spatial, binary, given {op!r}")


def reference_function(op, reference):
    """The reference function for an op family and how to call it with (x, target, reduction)."""
    if op in ("sigmoid_dense", "sigmoid_index"):
        return lambda x, t, reduction: reference.sigmoid_focal_loss(x, t, ALPHA, GAMMA, reduction)
    if op in ("softmax", "softmax_spatial"):
        return lambda x, t, reduction: reference.softmax_focal_loss(x, t, None, GAMMA, reduction)
    return lambda x, t, reduction: reference.binary_focal_loss(x, t, ALPHA, GAMMA, reduction)


def make_provider(name, preset, reduction, focal_cuda, reference, compiled_functions):
    """A callable (x, target) -> loss for one provider on one preset."""
    op, C = preset["op"], preset["C"]
    if name == "focal_cuda":
        if op in ("sigmoid_dense", "sigmoid_index"):
            return lambda x, t: focal_cuda.sigmoid_focal_loss(x, t, ALPHA, GAMMA, reduction)
        if op in ("softmax", "softmax_spatial"):
            return lambda x, t: focal_cuda.softmax_focal_loss(x, t, None, GAMMA, reduction)
        return lambda x, t: focal_cuda.binary_focal_loss(x, t, ALPHA, GAMMA, reduction)
    if name == "naive":
        if op == "sigmoid_dense":
            return lambda x, t: naive.sigmoid_focal_loss(x, t, ALPHA, GAMMA, reduction)
        if op == "sigmoid_index":
            # what users do for index targets: build the one-hot (background = extra class, dropped)
            def sigmoid_index(x, t):
                dense = F.one_hot(t, C + 1)[..., :C].to(x.dtype)
                return naive.sigmoid_focal_loss(x, dense, ALPHA, GAMMA, reduction)

            return sigmoid_index
        if op == "softmax":
            module = naive.FocalLoss(C, gamma=GAMMA, size_average=(reduction == "mean"))
            return module
        if op == "softmax_spatial":
            # the classic class takes (N, C): users move channels last and flatten first
            module = naive.FocalLoss(C, gamma=GAMMA, size_average=(reduction == "mean"))
            return lambda x, t: module(x.permute(0, 2, 3, 1).reshape(-1, C), t.reshape(-1))
        module = naive.BCEFocalLoss(gamma=GAMMA, alpha=ALPHA, reduction=reduction)
        return module
    function = reference_function(op, reference)
    if name == "reference":
        return lambda x, t: function(x, t, reduction)
    if name == "compiled":
        # one torch.compile per op family and reduction; shapes/dtypes recompile under its guards
        key = (op, reduction)
        if key not in compiled_functions:
            # dynamic=False: a kernel specialised to each shape, torch.compile's best case
            compiled_functions[key] = torch.compile(lambda x, t: function(x, t, reduction), dynamic=False)
        return compiled_functions[key]
    raise ValueError(f"provider: expected one of {PROVIDERS}, given {name!r}")


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mode_steps(mode, fn, x, target):
    """(prepare, timed): prepare() runs untimed and returns state, timed(state) is the measured work."""
    if mode == "forward":
        def timed(_):
            with torch.no_grad():
                return fn(x, target)

        return (lambda: None), timed
    if mode == "full":
        def timed(_):
            loss = fn(x, target)
            return torch.autograd.grad(loss, x)

        return (lambda: None), timed
    if mode == "backward":
        def timed(loss):
            return torch.autograd.grad(loss, x)

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


def percentile(values, fraction):
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


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


def measure_copy_bandwidth(device, quick):
    """Bytes per second of dst.copy_(src) (read + write) for a tensor far larger than the caches."""
    numel = (256 << 20) if device.type == "cuda" else ((16 << 20) if quick else (32 << 20))
    src = torch.empty(numel, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    steps = {"copy": (lambda: None, lambda _: dst.copy_(src))}
    warm_up(*steps["copy"], device, warmup=3, target_seconds=1.0)
    times = measure_interleaved(steps, device, min_reps=10, max_reps=50, target_seconds=0.5 if quick else 1.0)
    return 2 * src.numel() * src.element_size() / (statistics.median(times["copy"]) * 1e-3)


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


def tensor_bytes(tensor):
    return tensor.numel() * tensor.element_size()


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


def device_label(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args):
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    focal_cuda, reference, missing = import_focal_cuda()
    providers = [p.strip() for p in args.providers.split(",")]
    if "focal_cuda" in providers and focal_cuda is None:
        sys.exit(
            "bench.py: provider focal_cuda: could not import the compiled package "
            f"({missing}). Build it first (pip install . or python setup.py build_ext --inplace), "
            "or leave it out with --providers naive,reference,compiled."
        )
    modes = [m.strip() for m in args.modes.split(",")]
    preset_names = list(PRESETS) if args.presets == "all" else [p.strip() for p in args.presets.split(",")]
    dtype_names = [d.strip() for d in args.dtypes.split(",")]
    for name, choices, given in (("providers", PROVIDERS, providers), ("modes", MODES, modes), ("presets", list(PRESETS), preset_names),
                                 ("dtypes", list(DTYPES), dtype_names)):
        unknown = [g for g in given if g not in choices]
        if unknown:
            sys.exit(f"bench.py: --{name}: expected a comma list from {choices}, given unknown {unknown}")
    quick_index = 1 if device.type == "cuda" else 0
    if args.quick and args.presets == "all":
        preset_names = [p for p in preset_names if (PRESETS[p]["quick"] or (None, None))[quick_index] is not None]

    # the reference validates class indices with a data-dependent check: torch.compile splits the graph
    # there (one line in the notes below, not a page of warnings)
    torch._logging.set_logs(dynamo=logging.ERROR)
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if hasattr(torch, "_dynamo"):
        # every (preset, size, dtype, mode) is its own graph; keep compiling rather than falling back to eager
        for limit_name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                           "accumulated_cache_size_limit"):
            if hasattr(torch._dynamo.config, limit_name):
                setattr(torch._dynamo.config, limit_name, 4096)

    started = time.perf_counter()
    copy_bandwidth = measure_copy_bandwidth(device, args.quick)
    threads = torch.get_num_threads()
    print(f"device: {device} ({device_label(device)}), torch {torch.__version__}, threads {threads}, "
          f"copy bandwidth {copy_bandwidth / 1e9:.1f} GB/s")

    warmup = 2 if args.quick else 5
    min_reps, max_reps = (5, 50) if args.quick else (10, 200)
    target_seconds = 0.25 if args.quick else 1.0
    compiled_functions = {}
    compile_failures = {}
    rows = []
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")

    for preset_name in preset_names:
        preset = PRESETS[preset_name]
        sizes = preset["gpu" if device.type == "cuda" else "cpu"]
        if args.quick:
            # a preset named explicitly but without a quick size runs at its smallest size
            sizes = [(preset["quick"] or (None, None))[quick_index] or sizes[0]]
        if args.sizes:
            sizes = args.sizes
        for size in sizes:
            for dtype_name in dtype_names:
                dtype = DTYPES[dtype_name]
                x, target = make_inputs(preset, size, dtype, device)
                x.requires_grad_(True)
                shape = "x".join(str(d) for d in x.shape)
                functions = {p: make_provider(p, preset, args.reduction, focal_cuda, reference, compiled_functions)
                             for p in providers}
                # one fwd+bwd per provider: checks values against focal_cuda (or reference) and warms compilers
                checks, notes, baseline = {}, {}, None
                for provider in [p for p in ("focal_cuda", "reference") if p in functions] + \
                        [p for p in functions if p not in ("focal_cuda", "reference")]:
                    failure_key = (preset["op"], dtype_name)
                    if provider == "compiled" and failure_key in compile_failures:
                        notes[provider] = compile_failures[failure_key]
                        continue
                    try:
                        began = time.perf_counter()
                        result = loss_and_grad(functions[provider], x, target)
                        synchronize(device)
                        if provider == "compiled":
                            notes[provider] = f"compile + first fwd+bwd {time.perf_counter() - began:.1f}s"
                    except Exception as error:  # a compiler failure or OOM is reported, the others keep running
                        notes[provider] = provider_failure(error, provider, f"{preset_name} {shape} {dtype_name}")
                        if notes[provider].startswith("compile failed"):
                            compile_failures[failure_key] = notes[provider]
                        continue
                    if baseline is None:
                        baseline = result
                        checks[provider] = "baseline"
                    else:
                        checks[provider] = compare(result, baseline, dtype)
                    del result
                del baseline

                for mode in modes:
                    minimal_bytes = tensor_bytes(x) + tensor_bytes(target)
                    if mode != "forward":
                        minimal_bytes += tensor_bytes(x)
                    rows_by_provider, steps = {}, {}
                    for provider in providers:
                        row = dict(device=device.type, device_name=device_label(device), torch=torch.__version__,
                                   threads=threads, date=date, preset=preset_name, op=preset["op"], shape=shape,
                                   elements=x.numel(), dtype=dtype_name, mode=mode, reduction=args.reduction,
                                   provider=provider, minimal_bytes=minimal_bytes,
                                   copy_gbps=round(copy_bandwidth / 1e9, 2), check=checks.get(provider, ""),
                                   note=notes.get(provider, ""))
                        rows_by_provider[provider] = row
                        if provider not in checks:
                            row["note"] = row["note"] or "skipped"
                            continue
                        prepare, timed = mode_steps(mode, functions[provider], x, target)
                        try:
                            # warm-up compiles the no-grad graph for forward mode; peak memory: one profiled call
                            warm_up(prepare, timed, device, warmup, target_seconds)
                            row["peak_mb"] = measure_peak_bytes(prepare, timed, device) / 2**20
                            steps[provider] = (prepare, timed)
                        except Exception as error:
                            row["note"] = provider_failure(error, provider, f"{preset_name} {shape} {dtype_name} {mode}")
                        del prepare, timed
                    try:
                        times = measure_interleaved(steps, device, min_reps, max_reps, target_seconds)
                    except torch.cuda.OutOfMemoryError:
                        # rare: each provider alone fitted; time them one at a time instead
                        torch.cuda.empty_cache()
                        times = {}
                        for provider, step in steps.items():
                            try:
                                times.update(measure_interleaved({provider: step}, device, min_reps, max_reps,
                                                                 target_seconds))
                            except torch.cuda.OutOfMemoryError:
                                rows_by_provider[provider]["note"] = "out of memory"
                                torch.cuda.empty_cache()
                    del steps
                    for provider, values in times.items():
                        median = statistics.median(values)
                        bandwidth = minimal_bytes / (median * 1e-3)
                        rows_by_provider[provider].update(
                            median_ms=median, p20_ms=percentile(values, 0.2), p80_ms=percentile(values, 0.8),
                            reps=len(values), gbps=bandwidth / 1e9, sol=bandwidth / copy_bandwidth)
                    case_rows = list(rows_by_provider.values())
                    by_provider = {r["provider"]: r for r in case_rows if "median_ms" in r}
                    for row in case_rows:
                        if "median_ms" not in row:
                            continue
                        for baseline_name in ("naive", "compiled"):
                            if baseline_name in by_provider:
                                row[f"speedup_vs_{baseline_name}"] = (
                                    by_provider[baseline_name]["median_ms"] / row["median_ms"])
                    rows.extend(case_rows)
                    print_rows(case_rows)
                del x, target, functions
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    elapsed = time.perf_counter() - started
    print(f"\ntotal time {elapsed:.1f}s")
    summarise_headline(rows)
    write_csv(rows, args.csv or os.path.join(HERE, "results", f"{device.type}.csv"))
    write_plot(rows, args.plot or os.path.join(HERE, "results", f"{device.type}.png"), device)
    return rows


COLUMNS = [("preset", "preset", "{}"), ("shape", "shape", "{}"), ("dtype", "dtype", "{}"), ("mode", "mode", "{}"),
           ("provider", "provider", "{}"), ("median_ms", "median ms", "{:.3f}"), ("p20_ms", "p20", "{:.3f}"),
           ("p80_ms", "p80", "{:.3f}"), ("gbps", "GB/s", "{:.1f}"), ("sol", "SoL", "{:.0%}"),
           ("peak_mb", "peak MB", "{:.1f}"), ("speedup_vs_naive", "x naive", "{:.2f}"),
           ("speedup_vs_compiled", "x compiled", "{:.2f}"), ("check", "check", "{}")]
WIDTHS = [10, 14, 5, 8, 10, 10, 9, 9, 7, 5, 9, 8, 10, 8]
_header_printed = False


def print_rows(rows):
    global _header_printed
    if not _header_printed:
        print(" ".join(title.rjust(w) if i >= 5 else title.ljust(w)
                       for i, ((_, title, _), w) in enumerate(zip(COLUMNS, WIDTHS))))
        _header_printed = True
    for row in rows:
        cells = []
        for i, ((key, _, fmt), width) in enumerate(zip(COLUMNS, WIDTHS)):
            value = row.get(key)
            text = "-" if value is None or value == "" else fmt.format(value)
            cells.append(text.rjust(width) if i >= 5 else text.ljust(width))
        line = " ".join(cells)
        if row.get("note"):
            line += "  " + row["note"]
        print(line)
    print()


def summarise_headline(rows):
    """The issue's CPU target case: fp32, full fwd+bwd, N = 65536, C = 80, softmax and sigmoid dense."""
    wanted = [r for r in rows if r["preset"] in ("cls_c80", "det_dense") and r["shape"] == "65536x80"
              and r["dtype"] == "fp32" and r["mode"] == "full" and r["provider"] == "focal_cuda"
              and "median_ms" in r]
    for row in wanted:
        naive_text = f"{row['speedup_vs_naive']:.1f}x" if "speedup_vs_naive" in row else "n/a"
        compiled_text = f"{row['speedup_vs_compiled']:.1f}x" if "speedup_vs_compiled" in row else "n/a"
        print(f"headline {row['preset']} 65536x80 fp32 full, {row['threads']} threads: focal_cuda "
              f"{row['median_ms']:.2f} ms, {naive_text} vs naive, {compiled_text} vs compiled")


CSV_FIELDS = ["device", "device_name", "torch", "threads", "date", "preset", "op", "shape", "elements", "dtype",
              "mode", "reduction", "provider", "median_ms", "p20_ms", "p80_ms", "reps", "minimal_bytes", "gbps",
              "copy_gbps", "sol", "peak_mb", "speedup_vs_naive", "speedup_vs_compiled", "check", "note"]


def write_csv(rows, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    print(f"csv: {path}")


def write_plot(rows, path, device):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install matplotlib)")
        return
    fused = [r for r in rows if r["provider"] == "focal_cuda" and "median_ms" in r]
    if not fused:
        print("plot skipped: no focal_cuda measurements")
        return
    presets = list(dict.fromkeys(r["preset"] for r in fused))
    modes = list(dict.fromkeys(r["mode"] for r in fused))
    mode = "full" if "full" in modes else modes[0]
    columns = min(4, len(presets))
    lines = math.ceil(len(presets) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.4 * lines), squeeze=False)
    colours = {"fp32": "tab:blue", "bf16": "tab:orange", "fp16": "tab:green", "fp64": "tab:purple"}
    for index, preset in enumerate(presets):
        ax = axes[index // columns][index % columns]
        for dtype in dict.fromkeys(r["dtype"] for r in fused):
            points = sorted((r for r in fused if r["preset"] == preset and r["dtype"] == dtype and r["mode"] == mode),
                            key=lambda r: r["elements"])
            for baseline, style in (("naive", "-o"), ("compiled", "--s")):
                xy = [(r["elements"], r[f"speedup_vs_{baseline}"]) for r in points if f"speedup_vs_{baseline}" in r]
                if xy:
                    ax.plot(*zip(*xy), style, color=colours.get(dtype), label=f"vs {baseline}, {dtype}")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        speedup_format = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}x")
        ax.yaxis.set_major_formatter(speedup_format)
        ax.yaxis.set_minor_formatter(speedup_format)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_title(f"{preset} ({mode})", fontsize=10)
        ax.set_xlabel("input elements")
        ax.set_ylabel("focal_cuda speed-up")
        ax.legend(fontsize=7)
    for index in range(len(presets), lines * columns):
        axes[index // columns][index % columns].axis("off")
    figure.suptitle(f"focal_cuda speed-up, {device_label(device)}, torch {torch.__version__}, "
                    f"{fused[0]['threads']} threads" if device.type == "cpu" else
                    f"focal_cuda speed-up, {device_label(device)}, torch {torch.__version__}", fontsize=10)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"plot: {path}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="one size per headline preset (det_dense, det_index, cls_c80; plus cls_c32000 and seg on GPU), "
                             "full mode, one dtype, fewer repetitions; under 2 minutes on a 2-core CPU")
    parser.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu or cuda")
    parser.add_argument("--presets", default="all", help=f"comma list from {list(PRESETS)} or 'all'")
    parser.add_argument("--providers", default=None,
                        help=f"comma list from {PROVIDERS} (default: all; --quick: focal_cuda,naive,compiled)")
    parser.add_argument("--modes", default=None, help=f"comma list from {MODES} (default: all; --quick: full)")
    parser.add_argument("--dtypes", default=None,
                        help="comma list from fp32,bf16,fp16,fp64 (default: fp32,bf16 on CPU, plus fp16 on GPU; "
                             "--quick: fp32 on CPU, bf16 on GPU)")
    parser.add_argument("--sizes", default=None,
                        type=lambda text: [int(v) for v in text.split(",")],
                        help="comma list of sizes replacing each preset's own: rows N for (N, C) presets, "
                             "H = W for seg")
    parser.add_argument("--reduction", default="mean", choices=["mean", "sum"])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's default)")
    parser.add_argument("--csv", default=None, help="CSV path (default: benchmarks/results/<device>.csv)")
    parser.add_argument("--plot", default=None, help="PNG path (default: benchmarks/results/<device>.png)")
    args = parser.parse_args(argv)
    on_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.dtypes is None:
        if args.quick:
            args.dtypes = "bf16" if on_gpu else "fp32"
        else:
            args.dtypes = "fp32,bf16,fp16" if on_gpu else "fp32,bf16"
    if args.providers is None:
        args.providers = "focal_cuda,naive,compiled" if args.quick else ",".join(PROVIDERS)
    if args.modes is None:
        args.modes = "full" if args.quick else ",".join(MODES)
    return args


if __name__ == "__main__":
    run(parse_args())
