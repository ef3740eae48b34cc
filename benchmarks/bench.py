#!/usr/bin/env python
"""Benchmark focal_cuda's fused kernels against what users run today and against the floor, on any device.

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

Bandwidth (--hbm; on by default on CUDA): a device-to-device copy is timed first ("# ... device copy" line),
and focal_cuda's rows get "% HBM" = the fused kernels' compulsory traffic (forward: read logits and targets,
write the gradient; backward: read it, write the input gradient) over its time, against that copy.
On CPU, --hbm is a dry run of the same path against a memory copy.

Quick start:  python benchmarks/bench.py --quick
GPU bandwidth (scripts/gpu_check.sh):  python benchmarks/bench.py --quick --device cuda --dtypes bf16,fp16 \\
                  --providers focal_cuda,naive,cross_entropy,roofline --presets det_index,cls_c80,cls_c32000,vfl_index,seg
Its dry run here:  add --device cpu --hbm --scale 0.05
The code: benchmarks/harness/ (cases, providers, timing, memory, bandwidth, runner, report).
"""
import argparse
import datetime
import os
import sys
import time

import harness  # first: it settles Inductor's compile threads before torch is imported
import torch  # noqa: E402

from harness import bandwidth, providers as providers_module  # noqa: E402
from harness.cases import DTYPES, MODES, PRESETS, preset_sizes, quick_selection  # noqa: E402
from harness.providers import PROVIDERS, Providers  # noqa: E402
from harness.report import Table, device_label, summarise_headline, write_csv, write_plot  # noqa: E402
from harness.runner import Settings, run_case  # noqa: E402
from harness.timing import Budget  # noqa: E402


def run(args):
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    focal_cuda, reference, missing = providers_module.import_focal_cuda()
    provider_names, modes, preset_names, dtype_names = selection(args, device, focal_cuda, missing)
    providers_module.quiet_compiler()

    started = time.perf_counter()
    threads = torch.get_num_threads()
    print(f"device: {device} ({device_label(device)}), torch {torch.__version__}, threads {threads}")
    budget = Budget.for_run(args.quick)
    settings = Settings(modes, budget, args.loss_scale)
    hbm = args.hbm if args.hbm is not None else device.type == "cuda"
    if hbm:
        settings.copy_bandwidth = bandwidth.measure_copy_bandwidth(device, budget, args.scale)
        print(bandwidth.describe(device, device_label(device), settings.copy_bandwidth))
    table = Table(bandwidth.column_title(device) if hbm else None)
    context = dict(device=device.type, device_name=device_label(device), torch=torch.__version__, threads=threads,
                   date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), reduction=args.reduction,
                   loss_scale=args.loss_scale)
    providers = Providers(focal_cuda, reference, args.reduction)
    rows = []
    for preset_name in preset_names:
        preset = PRESETS[preset_name]
        for size in preset_sizes(preset, device, args.quick, args.sizes, args.scale):
            for dtype_name in [preset["dtype"]] if "dtype" in preset else dtype_names:
                rows += run_case(preset_name, size, dtype_name, device, provider_names, providers, settings,
                                 context, table)

    print(f"\ntotal time {time.perf_counter() - started:.1f}s")
    summarise_headline(rows)
    write_csv(rows, args.csv or os.path.join(harness.BENCHMARKS, "results", f"{device.type}.csv"))
    write_plot(rows, args.plot or os.path.join(harness.BENCHMARKS, "results", f"{device.type}.png"), device)
    return rows


def selection(args, device, focal_cuda, missing):
    """(providers, modes, presets, dtypes) the run covers, checked; exits with a message on a bad choice."""
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
    if args.quick and args.presets == "all":
        preset_names = quick_selection(preset_names, device)
    return providers, modes, preset_names, dtype_names


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
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every size (and the bandwidth copy) by SCALE, e.g. 0.05 for a dry run")
    parser.add_argument("--hbm", action=argparse.BooleanOptionalAction, default=None,
                        help="time a device copy first and add %% HBM (focal_cuda's compulsory traffic against it) "
                             "to the table and CSV (default: on for CUDA, off for CPU)")
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
