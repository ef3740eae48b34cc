#!/usr/bin/env python
"""Benchmark focal_cuda's fused kernels against what users run today and against the floor.

Providers
  focal_cuda     the package's fused kernels (CUDA on a GPU, vectorised C++ on CPU)
  naive          the implementations people copy (benchmarks/naive.py), run eagerly
  compiled       torch.compile of the best plain-PyTorch formulation: softmax = log_softmax + gather
                 (naive.softmax_focal_loss_plain), sigmoid = torchvision's formula, binary = the classic class
  cross_entropy  PyTorch's own loss kernels, F.cross_entropy / F.binary_cross_entropy_with_logits (dense
                 targets built once, untimed) / F.binary_cross_entropy: less work than a focal loss
  roofline       one torch.exp over the input into a preallocated buffer: read the input once, write one
                 input-sized buffer, one transcendental per element; a fused focal loss cannot do less
  reference      focal_cuda.reference (plain, numerically careful PyTorch), run eagerly (not in --quick)

Modes
  forward     loss only, under torch.no_grad()
  backward    the backward pass alone (the forward that builds the graph runs untimed before it)
  full        forward + backward (loss and d loss / d input), what a training step pays

Every number is the median over >= 15 repetitions after warm-up, with the 20th/80th percentiles; the
providers of a case are timed interleaved (round robin), so each sees the same machine load.
"x P" columns are this provider's median time divided by provider P's (below 1: faster than P);
"x roofline" is how far from the floor a provider is.

Peak memory = the most memory allocated while running the mode once (for backward, the forward
that builds the graph plus the backward) above what was allocated before (inputs and targets).
On a GPU it comes from torch.cuda.max_memory_allocated; on CPU from the allocation/free events of
the PyTorch profiler (profile_memory=True), replayed in time order. --loss-scale S differentiates loss * S
(as under torch.amp.GradScaler): on CPU the backward of a plain reduced loss (grad_output 1) returns the
forward's gradient as it is, so S != 1 is what measures the backward's multiply there.

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

# name -> op family, class count, sizes (CPU, GPU), the size --quick uses (CPU, GPU; None: not in --quick),
# and optionally the one dtype the preset runs in. sizes are rows N for (N, C) presets, H = W for segmentation.
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
    "cls_c1000": dict(op="softmax", C=1000, cpu=[1024, 8192, 32768], gpu=[1 << 16, 1 << 18, 1 << 19],
                      quick=(8192, 1 << 18), about="classification, softmax, (N, 1000)"),
    "cls_c32000": dict(op="softmax", C=32000, cpu=[32, 256, 1024], gpu=[2048, 8192, 16384],
                       quick=(256, 16384), about="language-model vocabulary, softmax, (N, 32000)"),
    "seg": dict(op="softmax_spatial", C=19, cpu=[128, 256, 512], gpu=[512, 1024, 2048],
                quick=(256, 2048), about="segmentation, softmax, (8, 19, H, W)"),
    "seg_bf16": dict(op="softmax_spatial", C=19, cpu=[128, 256, 512], gpu=[512, 1024, 2048],
                     quick=(256, 2048), dtype="bf16", about="segmentation, softmax, (8, 19, H, W), bfloat16 logits"),
    "binary": dict(op="binary", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                   quick=None, about="multi-label on probabilities, (N, 80) after a sigmoid, dense targets"),
    "vfl_index": dict(op="varifocal_index", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                      quick=(65536, 1 << 22),
                      about="varifocal (VarifocalNet), (anchors, 80), class-index targets + IoU score per anchor"),
    "asl_c80": dict(op="asymmetric", C=80, cpu=[16384, 65536, 262144], gpu=[1 << 20, 1 << 22, 1 << 23],
                    quick=(65536, 1 << 22), about="asymmetric loss (ASL), multi-label (N, 80), dense 0/1 targets"),
}
# The focal family's presets: ASL's repository defaults (gamma_pos 1, gamma_neg 4, clip 0.05), mmdet's varifocal.
ASL = dict(gamma_pos=1.0, gamma_neg=4.0, clip=0.05)
VFL = dict(alpha=0.75, gamma=2.0)
PROVIDERS = ["focal_cuda", "naive", "compiled", "cross_entropy", "roofline", "reference"]
BASELINES = ["roofline", "cross_entropy", "compiled", "naive"]  # the "x P" columns
MODES = ["forward", "backward", "full"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}


def preset_shape(preset, size, device):
    if preset["op"] == "softmax_spatial":
        return (8, preset["C"], size, size)
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
    if op == "varifocal_index":
        # (labels, IoU score): most anchors background (C), positives scored by their box's IoU
        rows = shape[0]
        positive = torch.randint(0, C, (rows,), device=device, generator=generator)
        is_background = torch.rand(rows, device=device, generator=generator) < 0.9
        labels = torch.where(is_background, torch.full_like(positive, C), positive)
        return logits, (labels, torch.rand(rows, device=device, generator=generator).to(dtype))
    if op == "asymmetric":
        # multi-label: a few positive labels per sample, as in MS-COCO/NUS-WIDE
        return logits, (torch.rand(shape, device=device, generator=generator) < 3.0 / C).to(dtype)
    raise ValueError(f"preset op: expected one of sigmoid_dense, sigmoid_index, softmax, softmax_spatial, binary, varifocal_index, asymmetric, given {op!r}")


def reference_function(op, reference):
    """The reference function for an op family and how to call it with (x, target, reduction)."""
    if op in ("sigmoid_dense", "sigmoid_index"):
        return lambda x, t, reduction: reference.sigmoid_focal_loss(x, t, ALPHA, GAMMA, reduction)
    if op in ("softmax", "softmax_spatial"):
        return lambda x, t, reduction: reference.softmax_focal_loss(x, t, None, GAMMA, reduction)
    if op == "varifocal_index":
        return lambda x, t, reduction: reference.varifocal_loss(x, t[0], reduction=reduction, score=t[1], **VFL)
    if op == "asymmetric":
        return lambda x, t, reduction: reference.asymmetric_loss(x, t, reduction=reduction, **ASL)
    return lambda x, t, reduction: reference.binary_focal_loss(x, t, ALPHA, GAMMA, reduction)


def plain_function(op, C, reduction):
    """The best plain-PyTorch formulation of an op family as (x, target) -> loss: what torch.compile gets."""
    if op == "sigmoid_dense":
        return lambda x, t: naive.sigmoid_focal_loss(x, t, ALPHA, GAMMA, reduction)
    if op == "sigmoid_index":
        # index targets need a dense one-hot for torchvision's formula (background = extra class, dropped)
        return lambda x, t: naive.sigmoid_focal_loss(x, F.one_hot(t, C + 1)[..., :C].to(x.dtype), ALPHA, GAMMA,
                                                     reduction)
    if op in ("softmax", "softmax_spatial"):
        return lambda x, t: naive.softmax_focal_loss_plain(x, t, GAMMA, reduction)
    if op in ("varifocal_index", "asymmetric"):
        return family_naive(op, reduction)  # the original formula is already the plain one
    return naive.BCEFocalLoss(gamma=GAMMA, alpha=ALPHA, reduction=reduction)


def family_naive(op, reduction):
    """The focal family as written in its original repository (mmdet's varifocal, Alibaba-MIIL's ASL)."""
    if op == "varifocal_index":
        return lambda x, t: naive.varifocal_index_score(x, t[0], t[1], reduction=reduction, **VFL)
    return naive.AsymmetricLoss(gamma_neg=ASL["gamma_neg"], gamma_pos=ASL["gamma_pos"], clip=ASL["clip"],
                                reduction=reduction)


def make_provider(name, preset, reduction, focal_cuda, reference, compiled_functions, x, target):
    """A callable (x, target) -> loss for one provider on one preset (x, target: the case's tensors)."""
    op, C = preset["op"], preset["C"]
    if name == "focal_cuda":
        if op == "varifocal_index":
            return lambda x, t: focal_cuda.varifocal_loss(x, t[0], reduction=reduction, score=t[1], **VFL)
        if op == "asymmetric":
            return lambda x, t: focal_cuda.asymmetric_loss(x, t, reduction=reduction, **ASL)
        if op in ("sigmoid_dense", "sigmoid_index"):
            return lambda x, t: focal_cuda.sigmoid_focal_loss(x, t, ALPHA, GAMMA, reduction)
        if op in ("softmax", "softmax_spatial"):
            return lambda x, t: focal_cuda.softmax_focal_loss(x, t, None, GAMMA, reduction)
        return lambda x, t: focal_cuda.binary_focal_loss(x, t, ALPHA, GAMMA, reduction)
    if name == "naive":
        if op in ("varifocal_index", "asymmetric"):
            return family_naive(op, reduction)
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
    if name == "cross_entropy":
        if op in ("softmax", "softmax_spatial"):
            return lambda x, t: F.cross_entropy(x, t, reduction=reduction)
        if op == "binary":
            return lambda x, t: F.binary_cross_entropy(x, t, reduction=reduction)
        # dense targets made once, outside the timing: the baseline gets the favourable case
        if op == "varifocal_index":
            dense = F.one_hot(target[0], C + 1)[..., :C].to(x.dtype) * target[1].unsqueeze(-1)
        elif op in ("sigmoid_dense", "asymmetric"):
            dense = target
        else:
            dense = F.one_hot(target, C + 1)[..., :C].to(x.dtype)
        return lambda x, _: F.binary_cross_entropy_with_logits(x, dense, reduction=reduction)
    if name == "roofline":
        out = torch.empty_like(x, requires_grad=False)
        return lambda x, _: torch.exp(x.detach(), out=out)
    if name == "reference":
        function = reference_function(op, reference)
        return lambda x, t: function(x, t, reduction)
    if name == "compiled":
        # one torch.compile per op family and reduction; shapes/dtypes recompile under its guards
        key = (op, reduction)
        if key not in compiled_functions:
            # dynamic=False: a kernel specialised to each shape, torch.compile's best case
            compiled_functions[key] = torch.compile(plain_function(op, C, reduction), dynamic=False)
        return compiled_functions[key]
    raise ValueError(f"provider: expected one of {PROVIDERS}, given {name!r}")


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
    if isinstance(tensor, (tuple, list)):  # class indices + per-row score
        return sum(tensor_bytes(t) for t in tensor)
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
    threads = torch.get_num_threads()
    print(f"device: {device} ({device_label(device)}), torch {torch.__version__}, threads {threads}")

    warmup = 2 if args.quick else 5
    min_reps, max_reps = (15, 40) if args.quick else (25, 200)
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
            for dtype_name in [preset["dtype"]] if "dtype" in preset else dtype_names:
                dtype = DTYPES[dtype_name]
                x, target = make_inputs(preset, size, dtype, device)
                x.requires_grad_(True)
                shape = "x".join(str(d) for d in x.shape)
                functions = {p: make_provider(p, preset, args.reduction, focal_cuda, reference, compiled_functions,
                                              x, target) for p in providers}
                # one fwd+bwd per provider: checks values against focal_cuda (or reference) and warms compilers
                checks, notes, baseline = {}, {}, None
                for provider in [p for p in ("focal_cuda", "reference") if p in functions] + \
                        [p for p in functions if p not in ("focal_cuda", "reference")]:
                    failure_key = (preset["op"], dtype_name)
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
                                   loss_scale=args.loss_scale,
                                   provider=provider, minimal_bytes=minimal_bytes, check=checks.get(provider, ""),
                                   note=notes.get(provider, ""))
                        rows_by_provider[provider] = row
                        if provider not in checks:
                            row["note"] = row["note"] or "skipped"
                            continue
                        prepare, timed = mode_steps(mode, functions[provider], x, target, provider, args.loss_scale)
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
                            reps=len(values), gbps=bandwidth / 1e9)
                    case_rows = list(rows_by_provider.values())
                    by_provider = {r["provider"]: r for r in case_rows if "median_ms" in r}
                    for row in case_rows:
                        if "median_ms" not in row:
                            continue
                        for baseline_name in BASELINES:
                            if baseline_name in by_provider and baseline_name != row["provider"]:
                                row[f"x_{baseline_name}"] = row["median_ms"] / by_provider[baseline_name]["median_ms"]
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
           ("p80_ms", "p80", "{:.3f}"), ("gbps", "GB/s", "{:.1f}"), ("peak_mb", "peak MB", "{:.1f}"),
           ("x_roofline", "x roofline", "{:.2f}"), ("x_cross_entropy", "x CE", "{:.2f}"),
           ("x_compiled", "x compiled", "{:.2f}"), ("x_naive", "x naive", "{:.3f}"), ("check", "check", "{}")]
WIDTHS = [10, 14, 5, 8, 13, 10, 9, 9, 7, 9, 10, 7, 10, 8, 8]
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
    """focal_cuda's time against the floor and PyTorch's own loss, per case (full mode)."""
    for row in rows:
        if row["provider"] != "focal_cuda" or row["mode"] != "full" or "median_ms" not in row:
            continue
        ratios = ", ".join(f"{row[f'x_{b}']:.2f}x {b}" for b in BASELINES if f"x_{b}" in row)
        print(f"headline {row['preset']} {row['shape']} {row['dtype']}, {row['threads']} threads: focal_cuda "
              f"{row['median_ms']:.2f} ms = {ratios}")


CSV_FIELDS = ["device", "device_name", "torch", "threads", "date", "preset", "op", "shape", "elements", "dtype",
              "mode", "reduction", "loss_scale", "provider", "median_ms", "p20_ms", "p80_ms", "reps", "minimal_bytes", "gbps",
              "peak_mb", "x_roofline", "x_cross_entropy", "x_compiled", "x_naive", "check", "note"]


def write_csv(rows, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    print(f"csv: {path}")


def write_plot(rows, path, device):
    """One group of bars per case (preset, shape, dtype; full mode when measured): median ms per provider."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install matplotlib)")
        return
    timed = [r for r in rows if "median_ms" in r]
    if not timed:
        print("plot skipped: no measurements")
        return
    mode = "full" if any(r["mode"] == "full" for r in timed) else timed[0]["mode"]
    timed = [r for r in timed if r["mode"] == mode]
    cases = list(dict.fromkeys((r["preset"], r["shape"], r["dtype"]) for r in timed))
    providers = [p for p in PROVIDERS if any(r["provider"] == p for r in timed)]
    colours = {"focal_cuda": "tab:blue", "naive": "tab:red", "compiled": "tab:orange", "cross_entropy": "tab:green",
               "roofline": "tab:grey", "reference": "tab:purple"}
    width = 0.8 / len(providers)
    figure, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(cases) + 2), 4.5))
    for index, provider in enumerate(providers):
        for case_index, case in enumerate(cases):
            match = [r for r in timed if (r["preset"], r["shape"], r["dtype"]) == case and r["provider"] == provider]
            if not match:
                continue
            xpos = case_index + (index - (len(providers) - 1) / 2) * width
            ax.bar(xpos, match[0]["median_ms"], width, color=colours.get(provider),
                   label=provider if case_index == 0 or not ax.get_legend_handles_labels()[1].count(provider) else None)
            ax.text(xpos, match[0]["median_ms"], f"{match[0]['median_ms']:.3g}", ha="center", va="bottom",
                    fontsize=6, rotation=90)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([f"{p}\n{s}\n{d}" for p, s, d in cases], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel(f"median ms ({mode}), log scale; lower is better")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, ncol=len(unique))
    threads = f", {timed[0]['threads']} threads" if device.type == "cpu" else ""
    ax.set_title(f"{device_label(device)}, torch {torch.__version__}{threads}", fontsize=9)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"plot: {path}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="one size per preset with a quick size (all but cls_c10 and binary), full mode, one dtype "
                             "(seg_bf16: bf16), no reference provider; a few minutes on a 2-core CPU")
    parser.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu or cuda")
    parser.add_argument("--presets", default="all", help=f"comma list from {list(PRESETS)} or 'all'")
    parser.add_argument("--providers", default=None,
                        help=f"comma list from {PROVIDERS} (default: all; --quick: all but reference)")
    parser.add_argument("--modes", default=None, help=f"comma list from {MODES} (default: all; --quick: full)")
    parser.add_argument("--dtypes", default=None,
                        help="comma list from fp32,bf16,fp16,fp64 (default: fp32,bf16 on CPU, plus fp16 on GPU; "
                             "--quick: fp32 on CPU, bf16 on GPU)")
    parser.add_argument("--sizes", default=None,
                        type=lambda text: [int(v) for v in text.split(",")],
                        help="comma list of sizes replacing each preset's own: rows N for (N, C) presets, "
                             "H = W for seg")
    parser.add_argument("--reduction", default="mean", choices=["mean", "sum"])
    parser.add_argument("--loss-scale", type=float, default=1.0,
                        help="backward and full modes differentiate loss * LOSS_SCALE, as under torch.amp.GradScaler "
                             "(default 1: loss.backward() of the plain loss)")
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
        args.providers = ",".join(p for p in PROVIDERS if p != "reference") if args.quick else ",".join(PROVIDERS)
    if args.modes is None:
        args.modes = "full" if args.quick else ",".join(MODES)
    return args


if __name__ == "__main__":
    run(parse_args())
