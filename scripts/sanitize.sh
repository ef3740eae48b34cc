#!/usr/bin/env bash
# Builds the CPU extension and the emulated CUDA kernels (focal_cuda._emulated) with AddressSanitizer + UndefinedBehaviorSanitizer (FOCAL_CUDA_SANITIZE=1) in a
# separate copy of the working tree, so the in-place build of the checkout is never touched, and runs the
# kernel tests under it: for the CUDA kernels, ASan/UBSan over the emulator stand in for compute-sanitizer. Exits non-zero on a build failure, a test failure or any sanitizer report.
#
#   scripts/sanitize.sh [extra pytest args]
#
# Environment:
#   FOCAL_CUDA_SANITIZE_DIR  where the copy and its build live (default ${TMPDIR:-/tmp}/focal_cuda_sanitize);
#                            kept between runs so a rerun recompiles only what changed
#   MAX_JOBS                 parallel compile jobs (default 2)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DEST=${FOCAL_CUDA_SANITIZE_DIR:-${TMPDIR:-/tmp}/focal_cuda_sanitize}
SRC="$DEST/src"
PYTHON=${PYTHON:-python}
START=$(date +%s)

# ---- a copy of the working tree (tracked and untracked-but-not-ignored files) ---------------------------------
# Only files whose content changed are rewritten (with a fresh mtime), so ninja recompiles exactly those: a
# copy that kept the checkout's mtimes could look older than an object built from a previous copy.
STAGE="$DEST/stage"
rm -rf "$STAGE"
mkdir -p "$STAGE" "$SRC" "$DEST/build_temp"
cd "$REPO"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z -co --exclude-standard |
    while IFS= read -r -d '' path; do [ -f "$path" ] && printf '%s\0' "$path"; done |
    tar --null -T - -cf - | tar -xf - -C "$STAGE"
else
  tar -cf - setup.py pyproject.toml csrc focal_cuda tests | tar -xf - -C "$STAGE"
  rm -f "$STAGE"/focal_cuda/_C*.so "$STAGE"/focal_cuda/_emulated*.so
fi
(cd "$STAGE" && find . -type f -print0) | while IFS= read -r -d '' path; do
  if ! cmp -s "$STAGE/$path" "$SRC/$path"; then
    mkdir -p "$(dirname "$SRC/$path")"
    cp "$STAGE/$path" "$SRC/$path"
  fi
done
# files gone from the tree go from the copy too (build outputs and caches stay)
(cd "$SRC" && find . -type f -not -name '_C*.so' -not -name '_emulated*.so' -not -path '*/__pycache__/*' -not -path './build/*' \
  -not -path '*.egg-info/*' -print0) | while IFS= read -r -d '' path; do
  [ -f "$STAGE/$path" ] || rm -f "$SRC/$path"
done

# ---- the sanitized CPU-only build (object files in $DEST/build_temp are reused by the next run) --------------
cd "$SRC"
echo "== building the sanitized CPU extension and emulated CUDA kernels in $SRC"
FOCAL_CUDA_SANITIZE=1 FOCAL_CUDA_CPU_ONLY=1 FOCAL_CUDA_EMULATE=1 MAX_JOBS=${MAX_JOBS:-2} \
  "$PYTHON" setup.py build_ext --inplace --build-temp "$DEST/build_temp" >"$DEST/build.log" 2>&1 ||
  { tail -n 40 "$DEST/build.log"; echo "sanitize: build failed (log: $DEST/build.log)" >&2; exit 1; }
for SO in focal_cuda/_C*.so focal_cuda/_emulated*.so; do
  if ! ldd "$SO" | grep -q libasan || ! ldd "$SO" | grep -q libubsan; then
    echo "sanitize: $SO is not linked against libasan and libubsan: the sanitizer flags did not apply" >&2
    exit 1
  fi
done
echo "build: $(($(date +%s) - START))s"

# ---- the kernel tests under the sanitizers ----------------------------------------------------------------
# Not here: compile / DDP / packaging / autocast (integration, slow, rebuild or spawn processes), the huge
# tensors (slow) and test_memory.py (ASan's quarantine holds freed memory, so RSS grows by design).
TESTS=(
  tests/test_sigmoid_focal_loss.py tests/test_softmax_focal_loss.py tests/test_binary_focal_loss.py
  tests/test_numerics.py tests/test_independent_facts.py tests/test_modules.py tests/test_autograd_and_ops.py
  tests/test_bad_input.py tests/test_bad_input_table.py tests/test_fuzz.py tests/test_emulated_cuda.py
  tests/test_focal_family.py tests/test_grids.py tests/test_threads.py
)
EXISTING=()
for test in "${TESTS[@]}"; do [ -f "$test" ] && EXISTING+=("$test"); done

LIBASAN=$(gcc -print-file-name=libasan.so)
[ -f "$LIBASAN" ] || { echo "sanitize: libasan.so not found (gcc -print-file-name=libasan.so)" >&2; exit 1; }
# libstdc++ preloaded too: python is not C++, so otherwise ASan's __cxa_throw interceptor finds no real
# __cxa_throw and aborts on the first C++ exception thrown by an uninstrumented library (triton's import).
LIBSTDCXX=$(gcc -print-file-name=libstdc++.so)
LOG="$DEST/pytest.log"
echo "== pytest under ASan + UBSan (log: $LOG)"
set +e
# detect_leaks=0: CPython and torch keep allocations alive until exit by design (reports would be noise).
LD_PRELOAD="$LIBASAN $LIBSTDCXX" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:print_summary=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  HYPOTHESIS_PROFILE=ci \
  FOCAL_CUDA_REQUIRE_EMULATION=1 \
  PYTHONPATH="$SRC" \
  "$PYTHON" -m pytest -q -p no:cacheprovider -m "not slow" "${EXISTING[@]}" "$@" 2>&1 | tee "$LOG"
STATUS=${PIPESTATUS[0]}
set -e

# A report inside a subprocess or a caught exception does not always fail pytest: look for it as well.
if grep -qE "AddressSanitizer|UndefinedBehaviorSanitizer|runtime error:" "$LOG"; then
  echo "sanitize: sanitizer report found in $LOG" >&2
  if [ "$STATUS" -eq 0 ]; then STATUS=1; fi
fi
echo "sanitize: exit status $STATUS after $(($(date +%s) - START))s"
exit "$STATUS"
