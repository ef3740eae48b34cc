#!/usr/bin/env python
"""Static report of the CUDA kernels' machine code (SASS), read from the built extension: per kernel
instantiation its registers, stack frame, theoretical resident blocks per SM at its block size, and for the
tracked cases the SASS instructions per element of the hot loop. Needs no GPU: cuobjdump ships in the triton
wheel (triton/backends/nvidia/bin) and in the CUDA toolkit.

  python scripts/sass_report.py                     # table of the tracked cases (+ --all: every kernel)
  python scripts/sass_report.py --check             # exit 1 on a regression against docs/sass_baseline.json
  python scripts/sass_report.py --write-baseline    # record the current figures as the baseline
  python scripts/sass_report.py --source csrc/cuda/softmax_kernels.cu   # compile one file to a cubin first
  python scripts/sass_report.py --json OUT.json     # also save every kernel's figures (hot loops included)
  python scripts/sass_report.py --from-json OUT.json [--check]   # the report again from a saved JSON, no cuobjdump

Hot loop: among the loops of a kernel (a backward branch and the code it jumps back over) that contain a
128-bit global load, the innermost one (or the outermost, per case). The most instructions one iteration can
execute (the longest path from its head to its backward branch, NOPs excluded; see longest_path) divided by
the elements one thread handles per iteration (fixed by the kernel's constants, in sass_budget.CASES) is the
"SASS / element" figure: static, an upper bound on the executed count, not a measurement.

The tracked cases and the budget model (bytes per element, the issue's budget, and the ESTIMATED fraction of
HBM speed on H200 / H100 SXM / A100 / RTX 4090 from issue rate vs bandwidth) are in scripts/sass_budget.py,
whose docstring gives the formula: est. fraction = min(1, SMs * 128 * clock * bytes / (bandwidth * SASS)).
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
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import sass_budget  # noqa: E402
from sass_budget import case_rows, check, fmt, print_cases, short  # noqa: E402

ROOT = os.path.dirname(HERE)
BASELINE = os.path.join(ROOT, "docs", "sass_baseline.json")

# sm_90 (H100 / H200) limits per SM.
SM_REGISTERS = 65536
SM_MAX_THREADS = 2048
SM_MAX_BLOCKS = 32
SM_SHARED_BYTES = 228 * 1024
SHARED_RESERVED_PER_BLOCK = 1024
REGISTER_ALLOCATION_UNIT = 256  # registers, per warp

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


def hot_loop_figures(instructions):
    """Per loop choice ("innermost", or "outermost": a grid-stride loop whose body holds per-row inner loops,
    each counted once) among the loops that hold a 128-bit global load: the longest path through it and its
    128-bit global loads (what one thread can have in flight per iteration). None when no loop has one."""
    found = []
    for first, last in loops(instructions):
        body = instructions[first:last + 1]
        wide = sum(is_wide_global_load(t) for _, t in body)
        if wide:
            found.append((last - first, longest_path(instructions, first, last), wide))
    if not found:
        return None
    # min / max over (span, figure), as each figure's own choice of loop always was.
    return {which: {"size": pick((span, size) for span, size, _ in found)[1],
                    "wide_loads": pick((span, wide) for span, _, wide in found)[1]}
            for which, pick in (("innermost", min), ("outermost", max))}


def hot_loop_size(instructions, which="innermost"):
    """Longest path through the innermost (or outermost) loop that holds a 128-bit global load, or None."""
    figures = hot_loop_figures(instructions)
    return None if figures is None else figures[which]["size"]


def wide_loads_in_hot_loop(instructions, which="innermost"):
    """128-bit global loads in the hot loop's body: what one thread can have in flight per iteration."""
    figures = hot_loop_figures(instructions)
    return 0 if figures is None else figures[which]["wide_loads"]


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
            instructions = sass.get(name, [])
            kernels[pretty] = dict(r, threads=t, blocks_per_sm=blocks_per_sm(r["registers"], t, r["shared"]),
                                   instructions=instructions, sass_lines=len(instructions),
                                   hot_loops=hot_loop_figures(instructions))
    return kernels


def load_json(path):
    """Kernels as saved by --json, and whether they carry hot-loop figures (a JSON written before these were
    saved has none: its cases then have no SASS / element)."""
    with open(path) as f:
        kernels = json.load(f)
    has_hot_loops = any("hot_loops" in k for k in kernels.values())
    for k in kernels.values():
        k.setdefault("hot_loops", None)
    return kernels, has_hot_loops


def print_all(kernels):
    print("| kernel | regs | stack | threads | blocks/SM | SASS lines | hot loop |")
    print("|---|---|---|---|---|---|---|")
    for name in sorted(kernels):
        k = kernels[name]
        figures = k["hot_loops"]
        print(f"| {short(name)} | {k['registers']} | {k['stack']} | {k['threads']} | {k['blocks_per_sm']} | "
              f"{k['sass_lines']} | {fmt(figures and figures['innermost']['size'])} |")


def kernels_of(binary, source):
    """Kernels of the given binaries, of the .cu files compiled to cubins, or of the built extension."""
    binaries = list(binary or [])
    with tempfile.TemporaryDirectory() as tmp:
        for path in source or []:
            binaries.append(compile_cubin(path, tmp))
        if not binaries:
            found = default_binary()
            if found is None:
                sys.exit("sass_report: no focal_cuda/_C*.so: build the extension with CUDA first")
            binaries = [found]
        kernels = collect(binaries)
    if not kernels:
        sys.exit(f"sass_report: no CUDA kernels in {binaries} (was it built without CUDA?)")
    return kernels, binaries


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", action="append", help="built extension or cubin (default: focal_cuda/_C*.so)")
    parser.add_argument("--source", action="append", help="a .cu file to compile to an sm_90 cubin and report")
    parser.add_argument("--all", action="store_true", help="also list every kernel instantiation")
    parser.add_argument("--check", action="store_true", help="exit 1 on a regression against the baseline")
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--write-baseline", action="store_true")
    parser.add_argument("--json", help="write every kernel's figures here")
    parser.add_argument("--from-json", metavar="PATH", help="report from a JSON saved by --json (no cuobjdump)")
    args = parser.parse_args()

    has_hot_loops = True
    if args.from_json:
        if args.binary or args.source:
            sys.exit("sass_report: --from-json replaces --binary / --source")
        kernels, has_hot_loops = load_json(args.from_json)
        if not has_hot_loops and (args.check or args.write_baseline):
            sys.exit(f"sass_report: {args.from_json} has no hot-loop figures: no --check / --write-baseline from it")
        origin = f"the saved {args.from_json}"
    else:
        kernels, binaries = kernels_of(args.binary, args.source)
        origin = ", ".join(os.path.relpath(b, ROOT) if b.startswith(ROOT) else b for b in binaries)
    rows = case_rows(kernels, has_hot_loops)
    print(f"SASS report (sm_90) of {origin}: {len(kernels)} kernels")
    if not has_hot_loops:
        print("(this JSON predates saved hot-loop figures: no SASS / element; rerun with --json on the binary)")
    print_cases(rows)
    print()
    sass_budget.print_budget(rows)
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
        warnings = []
        problems = check(kernels, rows, baseline, warnings)
        for w in warnings:
            print(f"WARNING (new case, not in the baseline): {w}")
        for line in sass_budget.over_budget(rows):
            print(f"OVER BUDGET (reported, not a failure): {line}")
        for p in problems:
            print(f"REGRESSION: {p}")
        if problems:
            sys.exit(1)
        print("sass_report: no regression against", os.path.relpath(args.baseline, ROOT))


if __name__ == "__main__":
    main()
