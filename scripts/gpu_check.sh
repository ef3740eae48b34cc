#!/usr/bin/env bash
# One-command check of focal_cuda on a GPU machine (no network; torch, nvcc, ninja, pytest installed).
#   scripts/gpu_check.sh OUTDIR
# Builds the extension in place for the GPU found (sm_90 by default), runs the whole test suite, a CUDA
# smoke/consistency script (CUDA vs the CPU kernels), compute-sanitizer memcheck and racecheck over that
# script when the tool works, and the benchmark when present. Logs, JUnit XML and CSVs go to OUTDIR;
# OUTDIR/summary.txt lists every step with its exit status and time. Budget: under 8 minutes.
set -u

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build, also for scripts run from OUTDIR
START=$(date +%s)
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}  # leaves margin under the 8-minute limit
SUMMARY="$OUT/summary.txt"
FAILED=0
: >"$SUMMARY"

elapsed() { echo $(($(date +%s) - START)); }
remaining() { echo $((BUDGET_S - $(elapsed))); }
# capped LIMIT: LIMIT, or what is left of the budget when that is less.
capped() { local left; left=$(remaining); echo $(($1 < left ? $1 : left)); }

# step NAME TIMEOUT_S CMD...: runs CMD with output in OUT/NAME.log, records status and duration.
step() {
  local name=$1 limit=$2
  shift 2
  local t0 rc
  t0=$(date +%s)
  echo "== $name (limit ${limit}s) ==" | tee -a "$OUT/console.log"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  tail -n 5 "$OUT/$name.log" | tee -a "$OUT/console.log"
  printf '%-22s rc=%-4s %4ss\n' "$name" "$rc" "$(($(date +%s) - t0))" | tee -a "$SUMMARY"
  [ "$rc" -ne 0 ] && FAILED=1
  return "$rc"
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --porcelain 2>/dev/null | wc -l) uncommitted paths"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())" 2>&1
  command -v nvcc && nvcc --version | tail -n 2
} >"$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

# ---- build ----------------------------------------------------------------------------------------------------
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export FOCAL_CUDA_FORCE_CUDA=1  # fail loudly instead of quietly building CPU-only
if ! step build 300 python setup.py build_ext --inplace; then
  echo "build failed: see $OUT/build.log" | tee -a "$SUMMARY"
  exit 1
fi
grep -n "warning" "$OUT/build.log" | grep -v "^.*UserWarning" >"$OUT/build_warnings.txt" || true
echo "build warnings: $(wc -l <"$OUT/build_warnings.txt") lines (build_warnings.txt)" | tee -a "$SUMMARY"

# ---- smoke / consistency script (also the sanitizer workload) -------------------------------------------------
SMOKE="$OUT/cuda_smoke.py"
cat >"$SMOKE" <<'PY'
"""Every CUDA kernel path on small shapes, compared with the CPU kernels on the same inputs and dtype."""
import os
import sys

import torch

import focal_cuda  # noqa: F401  (loads the ops)

ops = torch.ops.focal_cuda
dev = "cuda"
failures = []
torch.manual_seed(0)


def compare(name, cuda_out, cpu_out, dtype):
    tol = {torch.float64: 1e-9, torch.float32: 2e-4, torch.float16: 3e-3, torch.bfloat16: 2e-2}[dtype]
    for what, a, b in zip(("loss", "grad", "grad_scale"), cuda_out, cpu_out):
        a = a.detach().double().cpu()
        b = b.detach().double().cpu()
        if a.shape != b.shape:
            failures.append(f"{name} {what}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
            continue
        if a.numel() == 0:
            continue
        same = (a == b) | (a.isnan() & b.isnan())  # equal infinities (fp16 overflow) and NaNs match
        err = torch.where(same, 0.0, (a - b).abs() / (b.abs() + 1)).max().item()
        if not err <= tol:
            failures.append(f"{name} {what}: max rel err {err:.3g} > {tol:g} (non-finite: cuda "
                            f"{(~a.isfinite()).sum().item()}, cpu {(~b.isfinite()).sum().item()})")


def run(name, op, args, dtype):
    cuda_args = [a.to(dev) if isinstance(a, torch.Tensor) else a for a in args]
    compare(name, op(*cuda_args), op(*args), dtype)


# FOCAL_SMOKE_SMALL=1 (under the sanitizers): fewer dtypes and gammas, every kernel path still runs.
small = os.environ.get("FOCAL_SMOKE_SMALL") == "1"
dtypes = [torch.float32, torch.float16] if small else [torch.float32, torch.float16, torch.bfloat16, torch.float64]
for dtype in dtypes:
    for reduction in (0, 1, 2):
        for gamma in ((2.0, 0.5) if small else (0.0, 2.0, 0.5)):
            tag = f"{dtype} red={reduction} gamma={gamma}"
            # sigmoid dense: aligned, odd length (tail), and unaligned (storage offset 1: scalar path)
            for shape in ((64, 80), (7, 13)):
                x = torch.randn(shape, dtype=dtype) * 4
                t = torch.rand(shape, dtype=dtype)
                run(f"sigmoid dense {shape} {tag}", ops.sigmoid_focal_fwd,
                    (x, t, 0.25, gamma, reduction, -100, 0.1, None, True), dtype)
            xb = (torch.randn(1 + 64 * 80, dtype=dtype) * 4)[1:].view(64, 80)
            tb = torch.rand(64, 80, dtype=dtype)
            run(f"sigmoid dense unaligned {tag}", ops.sigmoid_focal_fwd,
                (xb, tb, 0.25, gamma, reduction, -100, 0.0, None, True), dtype)
            # sigmoid class index: background (C) and ignored rows, C not a multiple of the vector width
            for C in (80, 3, 1):
                x = torch.randn(50, C, dtype=dtype) * 4
                t = torch.randint(0, C + 1, (50,))
                t[::7] = -100
                run(f"sigmoid index C={C} {tag}", ops.sigmoid_focal_fwd,
                    (x, t, 0.25, gamma, reduction, -100, 0.05, None, True), dtype)
            # binary on probabilities, including exact 0 and 1
            p = torch.rand(33, 17, dtype=dtype)
            p[0, :4] = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=dtype)
            tt = (torch.rand(33, 17) > 0.5).to(dtype)
            run(f"binary {tag}", ops.binary_focal_fwd, (p, tt, 0.25, gamma, reduction, True), dtype)
            # softmax rows (warp groups of 1..32 lanes, block per row), unbatched, spatial; alpha, smoothing
            for shape in ((37, 10), (16, 64), (9, 1), (5, 3000), (13,), (4, 5, 6, 7), (3, 2000, 3)):
                C = shape[0] if len(shape) == 1 else shape[1]
                x = torch.randn(shape, dtype=dtype) * 3
                tshape = () if len(shape) == 1 else (shape[0],) + shape[2:]
                t = torch.randint(0, C, tshape)
                if t.dim() > 0:
                    t.view(-1)[::5] = -100
                alpha = torch.rand(C, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
                for smoothing in (0.0, 0.1):
                    for a in (None, alpha):
                        run(f"softmax {shape} s={smoothing} alpha={a is not None} {tag}", ops.softmax_focal_fwd,
                            (x, t, a, gamma, reduction, -100, smoothing, None, True), dtype)
            # every row ignored: mean is 0 with a zero gradient
            x = torch.randn(6, 10, dtype=dtype)
            t = torch.full((6,), -100)
            run(f"softmax all ignored {tag}", ops.softmax_focal_fwd,
                (x, t, None, gamma, reduction, -100, 0.0, None, True), dtype)

# determinism: same inputs, bitwise identical outputs
x = torch.randn(4096, 80, device=dev)
t = torch.randint(0, 81, (4096,), device=dev)
first = ops.sigmoid_focal_fwd(x, t, 0.25, 2.0, 1, -100, 0.0, None, True)
for _ in range(3):
    again = ops.sigmoid_focal_fwd(x, t, 0.25, 2.0, 1, -100, 0.0, None, True)
    if not all(torch.equal(a, b) for a, b in zip(first, again)):
        failures.append("sigmoid index mean: not bitwise deterministic")
torch.cuda.synchronize()
print(f"{len(failures)} failures")
for f in failures:
    print("FAIL", f)
sys.exit(1 if failures else 0)
PY
step cuda_smoke "$(capped 120)" python "$SMOKE"

# ---- tests ----------------------------------------------------------------------------------------------------
limit=$(capped 270)
if [ "$limit" -ge 30 ]; then
  step pytest "$limit" python -m pytest -q tests -p no:cacheprovider --durations=15 \
    --junitxml="$OUT/pytest.xml" -o junit_family=xunit2
else
  echo "pytest: skipped, out of time" | tee -a "$SUMMARY"
  FAILED=1
fi

# ---- compute-sanitizer ----------------------------------------------------------------------------------------
SANITIZER=$(command -v compute-sanitizer || true)
if [ -z "$SANITIZER" ]; then
  for candidate in "${CUDA_HOME:-}/bin/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [ -x "$candidate" ] && SANITIZER=$candidate && break
  done
fi
if [ -n "$SANITIZER" ]; then
  for tool in memcheck racecheck; do
    limit=$(($(remaining) - 60))
    if [ "$limit" -lt 30 ]; then
      echo "sanitizer_$tool: skipped, out of time" | tee -a "$SUMMARY"
      continue
    fi
    [ "$limit" -gt 120 ] && limit=120
    step "sanitizer_$tool" "$limit" env FOCAL_SMOKE_SMALL=1 "$SANITIZER" --tool "$tool" --error-exitcode 3 \
      --target-processes all python "$SMOKE"
  done
else
  echo "compute-sanitizer: not found, skipped" | tee -a "$SUMMARY"
fi

# ---- benchmark ------------------------------------------------------------------------------------------------
if [ -f benchmarks/bench.py ]; then
  limit=$(($(remaining) - 10))
  if [ "$limit" -ge 30 ]; then
    step bench_quick $((limit > 150 ? 150 : limit)) \
      python benchmarks/bench.py --quick --device cuda --csv "$OUT/bench_quick.csv" --plot "$OUT/bench_quick.png"
  fi
  limit=$(($(remaining) - 10))
  if [ "$limit" -ge 60 ]; then
    step bench_full "$limit" python benchmarks/bench.py --device cuda --providers focal_cuda,naive,reference \
      --csv "$OUT/bench.csv" --plot "$OUT/bench.png"
  else
    echo "bench_full: skipped, out of time" | tee -a "$SUMMARY"
  fi
else
  echo "benchmarks/bench.py: not present, skipped" | tee -a "$SUMMARY"
fi

echo "total ${SECONDS}s, $( [ $FAILED -eq 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED')" | tee -a "$SUMMARY"
exit $FAILED
