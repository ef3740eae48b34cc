#!/usr/bin/env bash
# Quiet in-place build of focal_cuda: one line per compiled unit, the full output in a log file.
#
#   scripts/build.sh                 pip install --no-build-isolation --no-deps -v -e .  (what `make` runs)
#   scripts/build.sh CMD ARGS...     any other build command, e.g. python setup.py build_ext --inplace
#
# Environment: PYTHON (default python), MAX_JOBS (parallel compiles, default 2), FOCAL_CUDA_EMULATE and the
# other setup.py switches, BUILD_LOG (default build/build.log). Prints a start line, "[k/n] csrc/..." as each
# unit finishes (ninja's count; each extension is its own ninja run), the links, and a finish line with the
# number of compiler warnings. On failure: the log's last 40 lines, its path, and the build's exit status.
set -u -o pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 2
PYTHON=${PYTHON:-python}
LOG=${BUILD_LOG:-build/build.log}
export MAX_JOBS=${MAX_JOBS:-2}
export PYTHONUNBUFFERED=1
if [ $# -eq 0 ]; then
  set -- "$PYTHON" -m pip install --no-build-isolation --no-deps -v -e .
fi
mkdir -p "$(dirname "$LOG")"
case $LOG in /*) LOG_PATH=$LOG ;; *) LOG_PATH=$REPO/$LOG ;; esac

elapsed() { printf '%d:%02d' $((SECONDS / 60)) $((SECONDS % 60)); }

# ninja -v prints "[k/n] <command line>" when unit k of n finishes; setuptools prints the link command lines.
summarise() {
  local line progress rest
  while IFS= read -r line; do
    if [[ $line =~ ^[[:space:]]*\[([0-9]+/[0-9]+)\]\ (.*)$ ]]; then
      progress=${BASH_REMATCH[1]}
      rest=${BASH_REMATCH[2]}
      if [[ $rest =~ [[:space:]]-c[[:space:]]+([^-[:space:]][^[:space:]]*) ]]; then  # torch's cflags end in -c too
        rest=${BASH_REMATCH[1]}
      elif [[ $rest =~ [[:space:]]-o[[:space:]]+([^[:space:]]+) ]]; then
        rest="link ${BASH_REMATCH[1]}"
      else
        rest=${rest:0:100}
      fi
      printf '  %6s [%s] %s\n' "$(elapsed)" "$progress" "${rest//$REPO\//}"
    elif [[ $line =~ [[:space:]]-shared[[:space:]] && $line =~ [[:space:]]-o[[:space:]]+([^[:space:]]+\.so) ]]; then
      rest=${BASH_REMATCH[1]}
      [[ $rest =~ build/lib[^/]*/(.+)$ ]] && rest=${BASH_REMATCH[1]}
      printf '  %6s link %s\n' "$(elapsed)" "${rest//$REPO\//}"
    elif [[ $line =~ ^[[:space:]]*(FAILED:\ |ninja:\ build\ stopped) ]]; then
      printf '  %6s %s\n' "$(elapsed)" "${line//$REPO\//}"
    fi
  done
}

echo "build: $* (MAX_JOBS=$MAX_JOBS, FOCAL_CUDA_EMULATE=${FOCAL_CUDA_EMULATE:-unset}); full log: $LOG"
echo "build: a first build compiles every unit (minutes on 2 cores); later builds only what changed"
SECONDS=0
"$@" 2>&1 | tee "$LOG" | summarise
status=${PIPESTATUS[0]}
lines=$(wc -l <"$LOG")
warnings=$(grep -c ': warning' "$LOG")
if [ "$status" -ne 0 ]; then
  echo "build: FAILED after $(elapsed) (exit $status); the last 40 of $lines lines of $LOG:"
  tail -n 40 "$LOG"
  if grep -qE '(: error|: fatal error|^FAILED: )' "$LOG"; then
    echo "build: the first compiler errors:"
    grep -m 20 -E '(: error|: fatal error|^FAILED: )' "$LOG"
  fi
  echo "build: FAILED (exit $status); full log: $LOG_PATH"
  exit "$status"
fi
echo "build: done in $(elapsed), $warnings compiler warning lines (grep -n ': warning' $LOG); $lines lines in $LOG"
