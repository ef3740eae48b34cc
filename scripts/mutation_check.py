#!/usr/bin/env python
"""Mutation check: plant small, plausible bugs one at a time and report which test files catch each.

    python scripts/mutation_check.py [--work DIR] [--only NAME ...] [--files tests/test_x.py ...] [--list]

For each mutation (file, exact old text, new text) the script edits a copy of the source tree (never the
checkout it runs from), builds the extension in place there, CPU-only with the emulated CUDA kernels
(FOCAL_CUDA_EMULATE=1 unless set otherwise; ninja rebuilds only what the edit
touches), runs every selected test file on its own with `-x` (the first failure is enough to count as caught)
and restores the file. Exit status 0 only when every mutation is caught by at least --min-catchers (2) files
and the unmutated tree passes every selected file.

Robust to later code changes: a mutation whose old text is not found exactly once in its file is an error
(the script stops before building anything), so an edit that moves the code fails loudly instead of silently
testing nothing; update the mutation's text then.

Test files: every tests/test_*.py except the slow integration files (DDP processes, torch.compile,
packaging into a fresh venv, > 2**31-element tensors, memory growth, CUDA-only and thread-count files), which
check integration rather than the math these mutations change and together take longer than the rest of the
suite; pass --files to choose others. Takes a few minutes per C++ mutation on 2 cores.
"""
import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLOW_OR_UNRELATED = {
    "test_integration_ddp.py", "test_integration_compile.py", "test_integration_packaging.py",
    "test_huge_tensors.py", "test_memory.py", "test_cuda_behaviour.py", "test_cuda_registration.py",
    "test_threads.py",
}


@dataclass
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str
    new: str
    why: str


MUTATIONS = [
    Mutation("gamma3-derivative", "csrc/focal_math.h",
             "return T(3) * u * u * numer;", "return T(3) * u * numer;",
             "gamma = 3 fast path: d(u^3)/du written as 3 u instead of 3 u^2"),
    Mutation("log-softmax-cancellation", "csrc/focal_math.h",
             "return (x - row_max) - log_sum_exp;", "return x - (row_max + log_sum_exp);",
             "log-softmax as x - (max + lse): max + lse rounds away lse when |max| is large"),
    Mutation("sigmoid-label-smoothing-formula", "csrc/focal_math.h",
             "return t * (T(1) - smoothing) + T(0.5) * smoothing;",
             "return t * (T(1) - smoothing) + (T(1) - t) * smoothing;",
             "sigmoid label smoothing as t (1 - s) + (1 - t) s instead of t (1 - s) + s / 2"),
    Mutation("sigmoid-bce-cancelling-form", "csrc/focal_math.h",
             "const T ce = fm_abs(x) * c + fm_log1p_unit_at<P>(e, small);",
             "const T ce = fm_max(x, T(0)) - t * x + fm_log1p_unit_at<P>(e, small);",
             "BCE on logits as max(x, 0) - t x: cancels for soft t near 1 at large |x|"),
    Mutation("sigmoid-grad-sign-1-2t", "csrc/focal_math.h",
             "fm_fma(T(-2), c, one) * (kPoly",
             "fm_fma(T(2), c, -one) * (kPoly",
             "sign of the (1 - 2t) term of the sigmoid gradient"),
    Mutation("sigmoid-grad-without-alpha", "csrc/focal_math.h",
             "grad = fm_select(x_nonneg, -a, a) * inner;",
             "grad = fm_select(x_nonneg, -one, one) * inner;",
             "alpha dropped from the sigmoid gradient (kept in the loss)"),
    Mutation("fractional-gamma-unguarded", "csrc/focal_math.h",
             "return gamma * m * fm_select(u > zero, fm_div(numer, u), zero);",
             "return gamma * m * fm_div(numer, u);",
             "generic gamma derivative without the u > 0 guard: 0/0 where p_t rounds to 1"),
    Mutation("softmax-h-sign", "csrc/focal_math.h",
             "h = alpha_c * (m - modulating_derivative<G>(u, m, gamma, p * logp) +",
             "h = alpha_c * (m + modulating_derivative<G>(u, m, gamma, p * logp) +",
             "sign of the modulating-factor term in the softmax gradient"),
    Mutation("block-tail-off-by-one", "csrc/cpu/traversal.h",
             "const int64_t len = std::min(kBlock, n - begin);",
             "const int64_t len = std::min(kBlock - 1, n - begin);",
             "elementwise traversal: each full block drops its last element"),
    Mutation("vector-tail-padding-summed", "csrc/cpu/traversal.h",
             "loss_acc += Vec::set(Vec(0), l, cnt);  // padded lanes are not data",
             "loss_acc += l;",
             "elementwise traversal: the padded lanes of a partial vector are added to the sum"),
    Mutation("spatial-tail-off-by-one", "csrc/cpu/softmax_spatial.h",
             "const int64_t len = std::min(chunk, S - s_begin);",
             "const int64_t len = std::min(chunk, S - 1 - s_begin);",
             "spatial softmax: the last spatial position of each sample is skipped"),
    Mutation("ignore-index-not-in-count", "csrc/cpu/focal_cpu.cpp",
             "[&](int64_t v) { return v != ignore_index; }",
             "[&](int64_t v) { return v != -100; }",
             "the mean's count ignores the default -100 instead of ignore_index"),
    # Issue 17 (docs/design.md §2): accuracy at the edges, fp16 under a loss scale, one NaN rule.
    Mutation("device-log-near-one-approx", "csrc/approx_math.h",
             "const float d = x - 1.0f;  // exact for x in [0.5, 2]\n  if (d > -0.0625f && d < 0.0625f) {",
             "const float d = x - 1.0f;  // exact for x in [0.5, 2]\n  if (d > 1.0f) {",
             "device log near 1 from lg2.approx (2**-22 absolute): binary focal at p near 1 negative / 16 % off"),
    Mutation("asymmetric-log-of-rounded-sigmoid", "csrc/focal_math.h",
             "const T log_pos = fm_max(-(s.log1p_e + fm_max(-x, zero)), prm.log_eps);",
             "const T log_pos = fm_log(fm_max(s.p, prm.eps));",
             "ASL's log p as the log of the rounded sigmoid: 17 % off at x = 15"),
    Mutation("softmax-cpu-log-of-sum", "csrc/cpu/softmax_rows.h",
             "reduce_each(tie_partial, add_op));\n    const Vec log_sum = excess.log1p();",
             "reduce_each(tie_partial, add_op));\n    const Vec log_sum = (Vec(1) + excess).log();",
             "CPU softmax rows: log(sum) of a sum near 1 (confident rows lose their digits)"),
    Mutation("softmax-device-log-of-sum", "csrc/cuda/softmax_row.cuh",
             "const T log_sum = fm_max(fm_log1p_nonnegative_at<P>(total.excess), T(0));",
             "const T log_sum = fm_max(fm_log(T(1) + total.excess), T(0));",
             "CUDA softmax: log(sum) near 1 through lg2.approx (0.2 off at d = 14, 0 at d = 16)"),
    Mutation("varifocal-grad-from-rounded-p", "csrc/focal_math.h",
             "grad = w * s.p_minus_t;",
             "grad = w * (s.p - q);",
             "varifocal gradient from the rounded sigmoid: 0 instead of -(1 - p) at q = 1, x >= 17"),
    Mutation("gamma0-infinite-logit-nan", "csrc/focal_math.h",
             "const T dm_ce = G == 0 ? T(0) : ce * modulating_derivative<G>(u, m, gamma, pq);",
             "const T dm_ce = ce * modulating_derivative<G>(u, m, gamma, pq);",
             "gamma = 0: ce * 0 is NaN at infinite logits, where BCE's gradient is finite"),
    Mutation("fp16-gradient-not-prescaled", "csrc/grad_prescale.cpp",
             "  if (dtype != at::kHalf || !(gradient_bound < 1e30)) return 1.0;",
             "  return 1.0;",
             "fp16 gradients stored unscaled: flushed to 0 before a GradScaler's 2**15 arrives"),
    Mutation("cuda-zero-weight-masks-nan", "csrc/cuda/elementwise_kernels.cu",
             "const op_t xk = counted ? x[k] : op_t(0);",
             "const op_t xk = w != op_t(0) ? x[k] : op_t(0);",
             "CUDA: a NaN logit under a user weight of 0 made finite (CPU gives NaN: 0 * NaN)"),
    Mutation("cuda-aligned-ignored-row-logits-kept", "csrc/cuda/elementwise_kernels.cu",
             "to_opmath<W>(xs, x, !one_row_per_access(L) || first.counted);",
             "to_opmath<W>(xs, x);",
             "CUDA: an ignored row of the aligned class-index layouts reaches the math with its logits (0 * NaN)"),
    Mutation("cuda-16bit-binary-log-unclamped", "csrc/approx_math.h",
             "const float smaller = max_nan(fma(log2_ftz(m * 0x1p32f), kLn2, -32.0f * kLn2), -100.0f);",
             "const float smaller = fma(log2_ftz(m * 0x1p32f), kLn2, -32.0f * kLn2);",
             "CUDA fp16 / bf16 binary focal: log 0 not clamped at -100 (p = 0 or 1 gives inf / NaN)"),
    Mutation("cuda-two-row-access-ignored-row-logits-kept", "csrc/cuda/elementwise_kernels.cu",
             "(second.counted ? ~first_row_bits : 0u);",
             "(second.counted ? ~0u : 0u);",
             "CUDA: an access spanning an ignored row and a counted one feeds the ignored row's logits to the math"),
    Mutation("cuda-any-length-rows-ignored-logit-zero", "csrc/cuda/elementwise_kernels.cu",
             "constexpr float kIgnoredLogit = -0x1p100f;",
             "constexpr float kIgnoredLogit = 0.0f;",
             "CUDA, class-index rows of any length without row weights: an ignored row's elements on x = 0 (loss != 0)"),
    Mutation("cuda-varifocal-index-grad-from-rounded-p", "csrc/focal_math.h",
             "am) * fm_select(on, c - small, inner);",
             "am) * fm_select(on, fm_select(x_nonneg, p - t, t - p), inner);",
             "CUDA varifocal, class-index targets: the positive's p - q from the rounded sigmoid (0 at q = 1, x >= 17)"),
    Mutation("asymmetric-clip-p-neg-from-rounded-v", "csrc/focal_math.h",
             "log_neg = fm_max(fm_log1p_nonpositive_at<P>(-v, shifted), prm.log_eps);",
             "log_neg = fm_max(fm_log1p_nonpositive_at<P>(-v, one - v), prm.log_eps);",
             "ASL with a small clip: log p_neg of 1 - v, which lost q's digits (1 % off at x = 15, clip = 1e-9)"),
    Mutation("cpu-softmax-ignored-row-nan", "csrc/cpu/softmax_rows.h",
             "        if (lanes.valid[i] == op_t(0)) {  // ignored rows: 0 whatever their logits hold (NaN included)\n"
             "          std::fill_n(grad, C, scalar_t(0));\n          continue;\n        }\n",
             "",
             "CPU softmax: an ignored row's NaN logits reach its gradient (0 * NaN)"),
    Mutation("functional-label-smoothing-check-removed", "focal_cuda/_arguments.py",
             "    if not 0.0 <= label_smoothing <= 1.0:\n",
             "    if not 0.0 <= label_smoothing:\n",
             "functional.py: label_smoothing > 1 accepted"),
    Mutation("functional-num-classes-last-dim", "focal_cuda/_arguments.py",
             "return input.shape[1] if input.dim() >= 2 else",
             "return input.shape[-1] if input.dim() >= 2 else",
             "functional.py: a float softmax alpha is expanded over the last dim, not the class dim"),
    Mutation("cpu-expm1-series-coefficient", "csrc/cpu/vec_math.h",
             "1.0f / 24, 1.0f / 6, 0.5f, 1.0f}",
             "1.0f / 24, 1.0f / 5, 0.5f, 1.0f}",
             "CPU float expm1 (softmax p_t - 1 and 1 - p): a wrong series term, 4e-3 off at |x| = 0.35"),
    Mutation("cpu-log1p-series-coefficient", "csrc/cpu/vec_math.h",
             "1.0f / 3, -0.5f, 1.0f}",
             "1.0f / 3, -0.45f, 1.0f}",
             "CPU float log1p (softmax log-sum, log(1 - p)): a wrong series term, 3e-3 off at |x| = 1/16"),
    Mutation("cpu-log1p-correction-unguarded", "csrc/cpu/vec_math.h",
             "y.log() + fm_select(correction == correction, correction, Vec(0.0f));",
             "y.log() + correction;",
             "CPU float log1p(-1): the rounding correction's 0 / 0 turns -inf into NaN (binary at p = 1)"),
]


def run(cmd, cwd, env=None, log=None):
    with open(log, "w") if log else open(os.devnull, "w") as out:
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode


def copy_tree(work):
    """The checkout's tracked and untracked-but-not-ignored files, into work/ (kept between runs)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src, dst = os.path.join(ROOT, rel), os.path.join(work, rel)
        if not os.path.isfile(src):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(src, "rb") as f:
            data = f.read()
        if not os.path.exists(dst) or open(dst, "rb").read() != data:
            with open(dst, "wb") as f:
                f.write(data)


def build(work, log):
    env = dict(os.environ, FOCAL_CUDA_CPU_ONLY="1", MAX_JOBS=os.environ.get("MAX_JOBS", "1"))
    env.setdefault("FOCAL_CUDA_EMULATE", "1")  # the mutations in csrc/cuda are caught by the emulated tests
    return run([sys.executable, "setup.py", "build_ext", "--inplace"], work, env, log) == 0


def build_outputs(work):
    """Object files and the extension: saved after the clean build, put back after each C++ mutation so the
    next build recompiles only what that mutation touches."""
    paths = []
    for base in [os.path.join(work, "build"), os.path.join(work, "focal_cuda")]:
        for dirpath, _, names in os.walk(base):
            paths += [os.path.join(dirpath, n) for n in names if n.endswith((".o", ".so"))]
    return paths


def test_files(selected):
    if selected:
        return selected
    names = sorted(n for n in os.listdir(os.path.join(ROOT, "tests")) if n.startswith("test_") and n.endswith(".py"))
    return [os.path.join("tests", n) for n in names if n not in SLOW_OR_UNRELATED]


def run_tests(work, files, logdir, tag):
    """{file: passed?} with each file run on its own, stopping at its first failure."""
    env = dict(os.environ, PYTHONPATH=work, HYPOTHESIS_PROFILE="mutation")  # ci examples, no shrinking
    result = {}
    for f in files:
        log = os.path.join(logdir, f"{tag}--{os.path.basename(f)}.log")
        code = run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f], work, env, log)
        result[f] = code == 0 or code == 5  # 5: nothing collected
        if code not in (0, 1, 5):
            print(f"    {f}: pytest exit {code} (see {log})", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join("/tmp", f"focal_mutation_{os.getuid()}"))
    parser.add_argument("--only", nargs="*", help="mutation names")
    parser.add_argument("--files", nargs="*", help="test files (default: all but the slow integration files)")
    parser.add_argument("--min-catchers", type=int, default=2)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--table", help="also write the markdown table to this file")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a killed run still restores the mutated file
    mutations = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:45s} {m.path:40s} {m.why}")
        return 0
    # Fail loudly, before any build, when a mutation no longer applies to the code.
    stale = []
    for m in mutations:
        count = open(os.path.join(ROOT, m.path)).read().count(m.old)
        if count != 1:
            stale.append(f"{m.name}: old text found {count} times in {m.path} (expected exactly once):\n  {m.old!r}")
    if stale:
        sys.exit("mutation_check: stale mutations, update their text:\n" + "\n".join(stale))

    work = os.path.abspath(args.work)
    logdir = os.path.join(work, "_mutation_logs")
    os.makedirs(logdir, exist_ok=True)
    copy_tree(work)
    files = test_files(args.files)
    print(f"tree copy: {work}; {len(files)} test files; logs in {logdir}", flush=True)

    started = time.time()
    if not build(work, os.path.join(logdir, "build-clean.log")):
        sys.exit(f"the unmutated tree does not build: {logdir}/build-clean.log")
    baseline_outputs = {p: open(p, "rb").read() for p in build_outputs(work)}
    clean = run_tests(work, files, logdir, "clean")
    failing = [f for f, ok in clean.items() if not ok]
    print(f"clean tree: {len(files) - len(failing)}/{len(files)} files pass ({time.time() - started:.0f} s)",
          flush=True)
    if failing:
        print("  failing without a mutation (excluded from the catchers): " + ", ".join(failing), flush=True)
    files = [f for f in files if clean[f]]

    rows, all_ok = [], not failing
    for m in mutations:
        t0 = time.time()
        path = os.path.join(work, m.path)
        original = open(path).read()
        assert original.count(m.old) == 1, m.name
        with open(path, "w") as f:
            f.write(original.replace(m.old, m.new))
        try:
            if not build(work, os.path.join(logdir, f"build-{m.name}.log")):
                catchers, note = ["(does not compile)"], "build failed"
            else:
                result = run_tests(work, files, logdir, m.name)
                catchers, note = [os.path.basename(f) for f, ok in result.items() if not ok], ""
        finally:
            with open(path, "w") as f:
                f.write(original)
            if not m.path.endswith(".py"):
                for p, data in baseline_outputs.items():  # written after the source: newer, so not rebuilt
                    with open(p, "wb") as f:
                        f.write(data)
        caught = len(catchers) >= args.min_catchers and note == ""
        all_ok &= caught
        rows.append((m, catchers, caught))
        print(f"{m.name}: caught by {len(catchers)} file(s) [{', '.join(catchers)}] "
              f"({time.time() - t0:.0f} s){'' if caught else '  <-- NOT CAUGHT TWICE'}", flush=True)

    table = ["| mutation | file | catching test files | ok |", "|---|---|---|---|"]
    for m, catchers, caught in rows:
        table.append(f"| {m.name} ({m.why}) | {m.path} | {len(catchers)}: {', '.join(catchers)} | "
                     f"{'yes' if caught else '**NO**'} |")
    print("\n" + "\n".join(table))
    print(f"\n{len(rows)} mutations, {sum(c for _, _, c in rows)} caught by >= {args.min_catchers} files; "
          f"{time.time() - started:.0f} s")
    if args.table:
        with open(args.table, "w") as f:
            f.write("\n".join(table) + "\n")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
