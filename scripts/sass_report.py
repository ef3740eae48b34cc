#!/usr/bin/env python
"""Static report of the CUDA kernels' machine code (SASS), read from the built extension: per kernel
instantiation its registers, stack frame, theoretical resident blocks per SM at its block size, and for the
tracked cases the SASS instructions per element of the hot loop. Needs no GPU: cuobjdump ships in the triton
wheel (triton/backends/nvidia/bin) and in the CUDA toolkit.

  python scripts/sass_report.py                     # table of the tracked cases (+ --all: every kernel)
  python scripts/sass_report.py --check             # exit 1 on a regression against docs/sass_baseline.json
  python scripts/sass_report.py --write-baseline    # record the current figures as the baseline
  python scripts/sass_report.py --source csrc/cuda/softmax_kernels.cu   # compile one file to a cubin first

Hot loop: among the loops of a kernel (a backward branch and the code it jumps back over) that contain a
128-bit global load, the innermost one (or the outermost, per case). The most instructions one iteration can
execute (the longest path from its head to its backward branch, NOPs excluded; see longest_path) divided by
the elements one thread handles per iteration (fixed by the kernel's constants, in CASES) is the
"SASS / element" figure: static, an upper bound on the executed count, not a measurement.
"""
import argparse
import glob
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASELINE = os.path.join(ROOT, "docs", "sass_baseline.json")

# sm_90 (H100 / H200) limits per SM.
SM_REGISTERS = 65536
SM_MAX_THREADS = 2048
SM_MAX_BLOCKS = 32
SM_SHARED_BYTES = 228 * 1024
SHARED_RESERVED_PER_BLOCK = 1024
REGISTER_ALLOCATION_UNIT = 256  # registers, per warp

# Tracked cases: (name, regex over the demangled kernel name, elements per thread per hot-loop iteration,
# target SASS instructions per element from the issue or None, which loop: "innermost" or "outermost").
CASES = [
    ("sigmoid dense bf16 g2", r"elementwise_forward_kernel<c10::BFloat16, SigmoidPoint<2, false, float>, \(focal::cuda::Layout\)0>", 16, 30, "innermost"),
    ("sigmoid index bf16 g2", r"elementwise_forward_kernel<c10::BFloat16, SigmoidPoint<2, false, float>, \(focal::cuda::Layout\)3>", 16, 30, "innermost"),
    ("sigmoid index bf16 g2, C % 8 != 0", r"elementwise_forward_kernel<c10::BFloat16, SigmoidPoint<2, false, float>, \(focal::cuda::Layout\)2>", 16, None, "innermost"),
    ("sigmoid dense fp32 g2", r"elementwise_forward_kernel<float, SigmoidPoint<2, false, float>, \(focal::cuda::Layout\)0>", 8, None, "innermost"),
    ("sigmoid dense bf16 g=any", r"elementwise_forward_kernel<c10::BFloat16, SigmoidPoint<-1, false, float>, \(focal::cuda::Layout\)0>", 16, None, "innermost"),
    ("binary dense bf16 g2", r"elementwise_forward_kernel<c10::BFloat16, BinaryPoint<2, float>, \(focal::cuda::Layout\)0>", 16, 30, "innermost"),
    ("varifocal index bf16 g2", r"elementwise_forward_kernel<c10::BFloat16, VarifocalPoint<2, float>, \(focal::cuda::Layout\)3>", 16, 30, "innermost"),
    ("quality focal dense bf16 b2", r"elementwise_forward_kernel<c10::BFloat16, QualityFocalPoint<2, float>, \(focal::cuda::Layout\)0>", 16, 30, "innermost"),
    ("asymmetric dense bf16", r"elementwise_forward_kernel<c10::BFloat16, AsymmetricPoint<float>, \(focal::cuda::Layout\)0>", 16, None, "innermost"),
    ("softmax rows C=80 bf16 g2", r"softmax_rows_warp_kernel<2, false, 5, c10::BFloat16>", 40, 40, "outermost"),
    ("softmax rows C=80 fp32 g2", r"softmax_rows_warp_kernel<2, false, 5, float>", 20, None, "outermost"),
    ("softmax block bf16 g2", r"softmax_rows_block_kernel<2, false, c10::BFloat16>", 64, None, "innermost"),
    ("backward bf16", r"apply_grad_output_kernel<c10::BFloat16>", 8, None, "innermost"),
]


# ---- tools -------------------------------------------------------------------------------------------------

def find_tool(name):
    """cuobjdump / nvcc: the triton wheel's copy, else the CUDA toolkit's, else PATH."""
    candidates = []
    spec = importlib.util.find_spec("triton")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(os.path.join(location, "backends", "nvidia", "bin", name))
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidates.append(os.path.join(cuda_home, "bin", name))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return [re.sub(r"focal::cuda::\(anonymous namespace\)::", "", line) for line in out.splitlines()]


def default_binary():
    found = sorted(glob.glob(os.path.join(ROOT, "focal_cuda", "_C*.so")))
    return found[0] if found else None


def compile_cubin(source, out_dir):
    """One .cu file to an sm_90 cubin with the extension's nvcc flags (for quick iteration on one kernel)."""
    import sysconfig

    import torch.utils.cpp_extension as ext

    nvcc = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    includes = ext.include_paths() + [sysconfig.get_paths()["include"]]
    cubin = os.path.join(out_dir, os.path.basename(source) + ".cubin")
    cmd = [nvcc, *[f"-I{p}" for p in includes], "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
           "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", "-O3", "-lineinfo",
           "--expt-relaxed-constexpr", "-DFOCAL_CUDA_WITH_CUDA", "-std=c++20",
           "-gencode=arch=compute_90,code=sm_90", "-cubin", "-o", cubin, source]
    subprocess.run(cmd, check=True)
    return cubin


# ---- parsing -----------------------------------------------------------------------------------------------

def parse_resources(text):
    """mangled name -> {registers, stack, shared, local} from cuobjdump -res-usage."""
    out, name = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            name = m.group(1)
            continue
        if name and "REG:" in line:
            fields = dict(re.findall(r"(\w+):(\d+)", line))
            out[name] = {"registers": int(fields["REG"]), "stack": int(fields["STACK"]),
                         "shared": int(fields["SHARED"]), "local": int(fields["LOCAL"])}
            name = None
    return out


def parse_max_threads(text):
    """mangled name -> __launch_bounds__ threads (EIATTR_MAX_THREADS) from cuobjdump -elf."""
    out, name, want = {}, None, False
    for line in text.splitlines():
        m = re.match(r"^\.nv\.info\.(_Z\S+)", line)
        if m:
            name = m.group(1)
            continue
        if "EIATTR_MAX_THREADS" in line:
            want = True
        elif want and line.strip().startswith("Value:") and name:
            out[name] = int(line.split()[1], 16)
            want = False
    return out


INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def parse_sass(text):
    """mangled name -> [(address, instruction text)] from cuobjdump -sass."""
    out, name = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            name = m.group(1)
            out[name] = []
            continue
        m = INSTRUCTION.search(line)
        if m and name:
            out[name].append((int(m.group(1), 16), m.group(2)))
    return out


def opcode(text):
    words = text.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0] if words else ""


def loops(instructions):
    """(first index, last index) of every loop: a branch back to an address at or before itself."""
    index_of = {addr: i for i, (addr, _) in enumerate(instructions)}
    found = []
    for i, (addr, text) in enumerate(instructions):
        if opcode(text).startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)", text.split("BRA", 1)[1])
            if m:
                target = int(m.group(1), 16)
                if target <= addr and target in index_of:
                    found.append((index_of[target], i))
    return found


def is_wide_global_load(text):
    op = opcode(text)
    return op.startswith("LDG") and (".128" in op or ".ENL2" in op)


def branch_target(text):
    if not opcode(text).startswith("BRA"):
        return None
    m = re.search(r"0x([0-9a-f]+)", text.split("BRA", 1)[1])
    return int(m.group(1), 16) if m else None


def longest_path(instructions, first, last):
    """Most instructions (NOPs excluded) on one path from the loop head `first` to its backward branch `last`,
    forward edges only (an inner loop counts once): what one iteration executes at most. nvcc unswitches
    loops on uniform conditions (e.g. whether the loss is stored), leaving several copies of the body of
    which one iteration runs only one: a plain count of the body would add them all up."""
    index_of = {addr: i for i, (addr, _) in enumerate(instructions)}
    best = {first: 0}
    for i in range(first, last + 1):
        if i not in best:
            continue
        text = instructions[i][1]
        here = best[i] + (opcode(text) != "NOP")
        if i == last:
            return here
        op = opcode(text)
        conditional = text.split()[0].startswith("@")
        successors = []
        target = branch_target(text)
        if target is not None and target in index_of and index_of[target] > i:
            successors.append(index_of[target])
        # A failed device assert (its CALL to __assertfail) ends the kernel's useful work: not counted.
        ends = op.startswith("EXIT") or op.startswith("RET") or op.startswith("CALL.ABS.NOINC")
        if ends and op.startswith("CALL") and not conditional:
            continue
        if not ((target is not None or ends) and not conditional):
            successors.append(i + 1)
        for j in successors:
            if j <= last and best.get(j, -1) < here:
                best[j] = here
    return None


def hot_loop_size(instructions, which="innermost"):
    """Longest path through the innermost (or outermost: a grid-stride loop whose body holds per-row inner
    loops, each counted once) loop that holds a 128-bit global load, or None."""
    found = []
    for first, last in loops(instructions):
        if any(is_wide_global_load(t) for _, t in instructions[first:last + 1]):
            found.append((last - first, longest_path(instructions, first, last)))
    if not found:
        return None
    span, size = min(found) if which == "innermost" else max(found)
    return size


def wide_loads_in_hot_loop(instructions, which="innermost"):
    """128-bit global loads in the hot loop's body: what one thread can have in flight per iteration."""
    found = [(last - first, sum(is_wide_global_load(t) for _, t in instructions[first:last + 1]))
             for first, last in loops(instructions)
             if any(is_wide_global_load(t) for _, t in instructions[first:last + 1])]
    if not found:
        return 0
    return (min(found) if which == "innermost" else max(found))[1]


def blocks_per_sm(registers, threads, shared):
    warps = math.ceil(threads / 32)
    per_warp = math.ceil(max(registers, 1) * 32 / REGISTER_ALLOCATION_UNIT) * REGISTER_ALLOCATION_UNIT
    by_registers = (SM_REGISTERS // per_warp) // warps
    by_threads = SM_MAX_THREADS // threads
    by_shared = SM_SHARED_BYTES // (shared + SHARED_RESERVED_PER_BLOCK)
    return min(by_registers, by_threads, by_shared, SM_MAX_BLOCKS)


# ---- report ------------------------------------------------------------------------------------------------

def collect(binaries):
    cuobjdump = find_tool("cuobjdump")
    if cuobjdump is None:
        sys.exit("sass_report: cuobjdump not found (pip install triton, or set CUDA_HOME)")
    kernels = {}
    for binary in binaries:
        resources = parse_resources(run([cuobjdump, "-res-usage", binary]))
        threads = parse_max_threads(run([cuobjdump, "-elf", binary]))
        sass = parse_sass(run([cuobjdump, "-sass", binary]))
        mangled = sorted(resources)
        for name, pretty in zip(mangled, demangle(mangled)):
            r = resources[name]
            t = threads.get(name, 1024)
            kernels[pretty] = dict(r, threads=t, blocks_per_sm=blocks_per_sm(r["registers"], t, r["shared"]),
                                   instructions=sass.get(name, []),
                                   sass_lines=len(sass.get(name, [])))
    return kernels


def short(name, width=110):
    name = re.sub(r"\(([^()]|\([^()]*\))*\)$", "", name).replace("void ", "")
    return name if len(name) <= width else name[:width - 3] + "..."


def case_rows(kernels):
    rows = []
    for case, pattern, elements, target, which in CASES:
        matches = [k for k in kernels if re.search(pattern, k)]
        if not matches:
            rows.append({"case": case, "missing": True, "target": target})
            continue
        k = kernels[matches[0]]
        hot_loop = hot_loop_size(k["instructions"], which)
        per_element = None if hot_loop is None else hot_loop / elements
        wide_loads = wide_loads_in_hot_loop(k["instructions"], which)
        in_flight_kb = wide_loads * 16 * k["threads"] * k["blocks_per_sm"] / 1024
        rows.append({"case": case, "kernel": short(matches[0], 90), "registers": k["registers"], "stack": k["stack"],
                     "in_flight_kb": in_flight_kb,
                     "threads": k["threads"], "blocks_per_sm": k["blocks_per_sm"], "hot_loop": hot_loop,
                     "elements": elements, "per_element": per_element, "target": target})
    return rows


def fmt(v, spec="{}"):
    return "—" if v is None else spec.format(v)


def print_cases(rows):
    print("| case | regs | stack | threads | blocks/SM | KB in flight/SM | hot loop | elements | SASS / element | target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("missing"):
            print(f"| {r['case']} | kernel not found | | | | | | | | {fmt(r['target'])} |")
            continue
        print(f"| {r['case']} | {r['registers']} | {r['stack']} | {r['threads']} | {r['blocks_per_sm']} | "
              f"{r['in_flight_kb']:.0f} | "
              f"{fmt(r['hot_loop'])} | {r['elements']} | {fmt(r['per_element'], '{:.1f}')} | {fmt(r['target'])} |")


def print_all(kernels):
    print("| kernel | regs | stack | threads | blocks/SM | SASS lines | hot loop |")
    print("|---|---|---|---|---|---|---|")
    for name in sorted(kernels):
        k = kernels[name]
        print(f"| {short(name)} | {k['registers']} | {k['stack']} | {k['threads']} | {k['blocks_per_sm']} | "
              f"{k['sass_lines']} | {fmt(hot_loop_size(k['instructions']))} |")


def check(kernels, rows, baseline):
    """Regressions against the baseline: a tracked case that vanished or lost its hot loop, more SASS / element
    than its baseline (by > 3 %), fewer blocks per SM; a stack frame or local memory in any kernel, except the
    baseline's listed ones (which may not grow). The issue's targets are reported, not enforced."""
    problems = []
    for r in rows:
        base = baseline.get("cases", {}).get(r["case"])
        if r.get("missing"):
            problems.append(f"{r['case']}: kernel not found")
            continue
        if r["per_element"] is None:
            problems.append(f"{r['case']}: no hot loop with a 128-bit load found")
            continue
        if base is None:
            continue
        if r["per_element"] > base["per_element"] * 1.03:
            problems.append(f"{r['case']}: {r['per_element']:.1f} SASS / element, baseline {base['per_element']:.1f}")
        if r["blocks_per_sm"] < base["blocks_per_sm"]:
            problems.append(f"{r['case']}: {r['blocks_per_sm']} blocks / SM, baseline {base['blocks_per_sm']}")
    allowed = baseline.get("stack_allowed", {})
    for name, k in kernels.items():
        frame = k["stack"] + k["local"]
        if frame > allowed.get(short(name, 10**6), 0):
            problems.append(f"{short(name)}: stack frame {k['stack']} B, local {k['local']} B")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", action="append", help="built extension or cubin (default: focal_cuda/_C*.so)")
    parser.add_argument("--source", action="append", help="a .cu file to compile to an sm_90 cubin and report")
    parser.add_argument("--all", action="store_true", help="also list every kernel instantiation")
    parser.add_argument("--check", action="store_true", help="exit 1 on a regression against the baseline")
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--write-baseline", action="store_true")
    parser.add_argument("--json", help="write every kernel's figures here")
    args = parser.parse_args()

    binaries = list(args.binary or [])
    with tempfile.TemporaryDirectory() as tmp:
        for source in args.source or []:
            binaries.append(compile_cubin(source, tmp))
        if not binaries:
            binary = default_binary()
            if binary is None:
                sys.exit("sass_report: no focal_cuda/_C*.so: build the extension with CUDA first")
            binaries = [binary]
        kernels = collect(binaries)
    if not kernels:
        sys.exit(f"sass_report: no CUDA kernels in {binaries} (was it built without CUDA?)")
    rows = case_rows(kernels)
    print(f"SASS report (sm_90) of {', '.join(os.path.relpath(b, ROOT) if b.startswith(ROOT) else b for b in binaries)}:"
          f" {len(kernels)} kernels")
    print_cases(rows)
    if args.all:
        print()
        print_all(kernels)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({n: {key: v for key, v in k.items() if key != "instructions"} for n, k in kernels.items()},
                      f, indent=1, sort_keys=True)
    if args.write_baseline:
        os.makedirs(os.path.dirname(args.baseline), exist_ok=True)
        with open(args.baseline, "w") as f:
            cases = {r["case"]: {"per_element": round(r["per_element"], 2), "blocks_per_sm": r["blocks_per_sm"],
                                 "registers": r["registers"]}
                     for r in rows if not r.get("missing") and r["per_element"] is not None}
            # Kernels that have a stack frame today may keep it (not grow it); fix them, then drop them here.
            stack = {short(n, 10**6): k["stack"] + k["local"] for n, k in kernels.items() if k["stack"] + k["local"]}
            json.dump({"cases": cases, "stack_allowed": stack}, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"baseline written: {args.baseline}")
    if args.check:
        baseline = {}
        if os.path.exists(args.baseline):
            with open(args.baseline) as f:
                baseline = json.load(f)
        problems = check(kernels, rows, baseline)
        for p in problems:
            print(f"REGRESSION: {p}")
        if problems:
            sys.exit(1)
        print("sass_report: no regression against", os.path.relpath(args.baseline, ROOT))


if __name__ == "__main__":
    main()
