"""The benchmark harness behind benchmarks/bench.py, one concern per module:

    cases.py      presets (workload shapes), their inputs, which sizes a run takes
    providers.py  the implementations timed against each other (focal_cuda, naive, compiled, ...)
    timing.py     modes (forward / backward / full), warm-up, interleaved round-robin timing
    memory.py     peak memory of one call (CUDA allocator stats, or the CPU profiler's memory events)
    bandwidth.py  the device-copy bandwidth reference and % HBM (the fused kernels' compulsory traffic)
    runner.py     one case: check every provider against the baseline, then time and measure each mode
    report.py     the printed table, the headline lines, the CSV and the plot

Importing the package (before torch) keeps Inductor's compile workers off small CPU machines.
"""
import os

# Inductor's worker pool costs more than it saves on a small CPU machine; the generated code is the same.
if (os.cpu_count() or 1) <= 4:
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # benchmarks/
REPO = os.path.dirname(BENCHMARKS)
