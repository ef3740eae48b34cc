#!/usr/bin/env bash
# One-command check of focal_cuda on a GPU machine (no network; torch, nvcc, ninja, pytest installed;
# hypothesis may be missing). A full verdict in at most GPU_CHECK_BUDGET_S (default 420 s = 7 minutes):
#   scripts/gpu_check.sh OUTDIR
# 1. build in place for sm_90 (MAX_JOBS = all cores);
# 2. scripts/cuda_smoke.py: every kernel path vs the CPU kernels (loss and grad * grad_scale; unaligned
#    cases sliced on the device);
# 3. compute-sanitizer memcheck (PYTORCH_NO_CUDA_MEMORY_CACHING=1, so overruns inside allocator blocks
#    show), racecheck and synccheck over the small smoke run;
# 4. the CUDA-parametrised tests only (the CPU half runs in CI), JUnit XML even when the time runs out
#    (SIGINT lets pytest write it);
# 5. benchmarks/bench.py on CUDA: bf16/fp16 quick presets, time and peak memory against the eager formulas and
#    PyTorch's own losses, focal_cuda's % of HBM against a device copy timed in the same run (no torch.compile).
# Each step's log is in OUTDIR; OUTDIR/summary.txt is the one-screen verdict.
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
BUDGET_S=${GPU_CHECK_BUDGET_S:-420}
SUMMARY="$OUT/summary.txt"
FAILED=0
: >"$SUMMARY"

elapsed() { echo $(($(date +%s) - START)); }
remaining() { echo $((BUDGET_S - $(elapsed))); }
# capped LIMIT: LIMIT, or what is left of the budget when that is less.
capped() { local left; left=$(remaining); echo $(($1 < left ? $1 : left)); }

# step NAME TIMEOUT_S CMD...: runs CMD with output in OUT/NAME.log, records status and duration. On timeout
# CMD gets SIGINT first (pytest then still writes its JUnit XML), SIGKILL 15 s later.
step() {
  local name=$1 limit=$2
  shift 2
  local t0 rc
  t0=$(date +%s)
  if [ "$limit" -lt 10 ]; then
    printf '%-22s skipped: out of time\n' "$name" | tee -a "$SUMMARY"
    FAILED=1
    return 1
  fi
  echo "== $name (limit ${limit}s) ==" | tee -a "$OUT/console.log"
  timeout --signal=INT --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
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
if ! step build "$(capped 200)" python setup.py build_ext --inplace; then
  echo "build failed: see $OUT/build.log" | tee -a "$SUMMARY"
  exit 1
fi
grep -n "warning" "$OUT/build.log" | grep -v "^.*UserWarning" >"$OUT/build_warnings.txt" || true
echo "build warnings: $(wc -l <"$OUT/build_warnings.txt") lines (build_warnings.txt)" | tee -a "$SUMMARY"

# ---- 2. every kernel path vs the CPU kernels -------------------------------------------------------------------
step cuda_smoke "$(capped 60)" python scripts/cuda_smoke.py
grep -E "cases|FAIL" "$OUT/cuda_smoke.log" | head -n 8 >>"$SUMMARY"

# ---- 3. compute-sanitizer over the small smoke run ------------------------------------------------------------
SANITIZER=$(command -v compute-sanitizer || true)
for candidate in "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [ -z "$SANITIZER" ] && [ -x "$candidate" ] && SANITIZER=$candidate
done
if [ -n "$SANITIZER" ]; then
  # No caching allocator under memcheck: an overrun inside a cached block would go unseen.
  step sanitizer_memcheck "$(capped 60)" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck \
    --error-exitcode 3 --target-processes all python scripts/cuda_smoke.py --small
  step sanitizer_racecheck "$(capped 45)" "$SANITIZER" --tool racecheck --error-exitcode 3 \
    --target-processes all python scripts/cuda_smoke.py --small
  step sanitizer_synccheck "$(capped 45)" "$SANITIZER" --tool synccheck --error-exitcode 3 \
    --target-processes all python scripts/cuda_smoke.py --small
else
  echo "compute-sanitizer: not found, skipped" | tee -a "$SUMMARY"
fi

# ---- 4. the CUDA-parametrised tests ----------------------------------------------------------------------------
step pytest_cuda "$(capped 150)" python -m pytest -q tests -k "cuda and not emulated" -p no:cacheprovider \
  --durations=10 --junitxml="$OUT/pytest_cuda.xml" -o junit_family=xunit2
tail -n 1 "$OUT/pytest_cuda.log" >>"$SUMMARY"

# ---- 5. bandwidth benchmark ------------------------------------------------------------------------------------
if step bench_hbm "$(capped 120)" python benchmarks/bench.py --quick --device cuda --hbm --dtypes bf16,fp16 \
  --providers focal_cuda,naive,cross_entropy,roofline --presets det_index,cls_c80,cls_c32000,vfl_index,seg \
  --csv "$OUT/bench_hbm.csv" --plot "$OUT/bench_hbm.png"; then :; fi
# the copy bandwidth line, the table's header and focal_cuda's rows (ms, % HBM, peak MB, x naive), any warnings
awk '/^#/ || /^warning/ || $1 == "preset" || $5 == "focal_cuda"' "$OUT/bench_hbm.log" >>"$SUMMARY"

echo "total $(elapsed)s of ${BUDGET_S}s: $( [ $FAILED -eq 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED')" |
  tee -a "$SUMMARY"
echo "==== summary ($SUMMARY) ===="
cat "$SUMMARY"
exit $FAILED
