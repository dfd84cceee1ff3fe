#!/usr/bin/env bash
# Build fastopt with AddressSanitizer and UndefinedBehaviorSanitizer in a throw-away copy of the
# source tree and run the test suite, or the pytest arguments given, against that build.
#
#   tools/sanitize.sh [--quick] [--keep] [--workdir DIR] [--] [PYTEST ARGUMENTS...]
#
#   bash tools/sanitize.sh                          the whole suite
#   bash tools/sanitize.sh --quick                  the compiled core's tests only
#   bash tools/sanitize.sh tests/test_fuzz.py -x    any pytest arguments, passed through
#
# The first argument the script does not know, and everything after it (or after --), goes to
# pytest; test paths are resolved from the folder you run in, so tests/x.py::test_y works.
#
# --quick     only the tests of the compiled core: tests/test_optimizers.py,
#             test_all_or_nothing.py, test_reduction.py, test_validation.py (every optimizer,
#             dtype, shape family, SIMD path and thread split; the plan's checks; the reduction
#             pass); not the demo, CLI, benchmark and wheel-tool tests, which mostly run Python.
#             Further pytest arguments are added to these.
# --keep      keep the work dir (default: removed on success, kept on failure)
# --workdir   where to work (default: a new dir under ${TMPDIR:-/tmp})
#
# What it does:
#   copy     tracked files plus untracked ones git does not ignore (so uncommitted work and new
#            test files are included; no build/, *.so or generated _kernels.c) into WORKDIR/src.
#            Nothing is written to the source tree: an in-place build there stays as it was.
#   build    `setup.py build_ext --inplace` in the copy with CC="gcc -fsanitize=address,undefined,
#            float-cast-overflow -fno-sanitize-recover=all" (in CC so that setup.py's probes
#            link with it too) and CFLAGS = Python's plus -g -fno-omit-frame-pointer -fno-wrapv.
#            setup.py's own flags come last and stay: -O3 -ffp-contract=off -fno-math-errno, the
#            AVX2/AVX-512 target flags per unit; never -ffast-math or -march=native. -fno-wrapv
#            undoes Python's -fwrapv, under which signed overflow is defined and UBSan cannot
#            see it. The build must link libasan and libubsan and have worker threads.
#   test     pytest from the copy, so the sanitized extension is the one imported (also by the
#            tests' `python` subprocesses, which inherit the environment): LD_PRELOAD=libasan
#            (Python itself is not instrumented; libubsan and libstdc++ follow it),
#            PYTHONMALLOC=malloc (Python's small-object allocator would hide overruns of small
#            PyMem_Malloc blocks, such as a plan's), FASTOPT_NUM_THREADS=2, and
#            tools/sanitize_plugin.py sets 2 threads, parallel threshold 0 and no adaptive choice,
#            so every step of 32 elements or more is split between the caller and a worker. The
#            simd fixture runs every SIMD path this CPU has.
#   report   ASan and UBSan stop the process at the first finding (halt_on_error, abort) and
#            write their report to WORKDIR/logs/{asan,ubsan}.PID, for this process and every
#            Python subprocess (UBSan's file is set by tools/sanitize_sitecustomize.py: beside
#            ASan, GCC's UBSan ignores log_path, and pytest's capture would swallow its report);
#            tools/sanitize_report.py prints each report, then the script names the test that
#            was running and a command that reruns it. Exit status 1 on any finding or failed
#            test, even when the finding was in a subprocess whose failure a test expected.
#
# Leaks: LeakSanitizer checks the pytest process when it exits and writes the leaks to the log
# without changing the exit status. CPython and NumPy leave memory behind at exit, so only leak
# records with a frame in fastopt's compiled code count (tools/sanitize_report.py): memory that
# fastopt's C and Cython code allocates itself (a plan, the reduction's buffers) and never frees.
# Python objects leaked by a reference-count mistake are not caught: LeakSanitizer cannot see
# GC-tracked objects (the collector's lists reach them), and the allocation stacks of the others
# stop in CPython, built without frame pointers (a full unwind costs 10x the time). Subprocesses
# are not leak-checked, and a crash of LeakSanitizer itself at exit, which happens now and then
# (google/sanitizers#1353), is a warning, not a failure (see tools/sanitize_plugin.py).
#
# Not covered: GCC does not vectorise loops that ASan instruments, so the avx2/avx512 units run as
# scalar code compiled with their target flags: every memory access the C loops make (heads,
# main loops, tails, blocks, thread shares) is checked, the vector instructions of the shipped
# build are not (the bit-for-bit tests and tools/check_simd_isolation.py cover those). Data races
# are ThreadSanitizer's (not run).
#
# Environment: PYTHON (interpreter; default python3), CC (a GCC; default Python's); entries in
#   ASAN_OPTIONS, LSAN_OPTIONS, UBSAN_OPTIONS are appended to the script's and win (for example
#   ASAN_OPTIONS=detect_leaks=0 where ptrace is not allowed and LeakSanitizer cannot run).
# Needs: Linux, gcc with its sanitizer runtimes (Debian: libasan8 and libubsan1 for GCC 12,
#   installed with gcc), readelf (binutils), Cython, setuptools, NumPy and the test extras.
# Exit status: 0 when the tests passed with no finding, 1 otherwise, 2 on a usage or setup error.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CALLER_DIR=$PWD
QUICK=0
KEEP=0
WORK=""
PYTHON=${PYTHON:-python3}
QUICK_TESTS=(tests/test_optimizers.py tests/test_all_or_nothing.py tests/test_reduction.py
             tests/test_validation.py)
SANITIZERS="-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all"
EXTRA_CFLAGS="-g -fno-omit-frame-pointer -fno-wrapv"

say() { echo "[sanitize] $*"; }
die() { echo "[sanitize] error: $*" >&2; exit 2; }

PYTEST_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        --workdir) [ $# -ge 2 ] || die "--workdir needs a directory"; WORK=$2; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        *) PYTEST_ARGS=("$@"); break ;;
    esac
    shift
done

[ "$(uname -s)" = Linux ] || die "needs Linux (this is $(uname -s))"
if ! PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)' 2>/dev/null); then
    die "no Python interpreter ${PYTHON}"
fi
command -v readelf >/dev/null || die "readelf not found: apt-get install binutils"
# The build runs setup.py in this interpreter, without pip's isolated build environment: the
# build requirements of pyproject.toml (name>=version entries) must be installed here.
missing=$(cd "$REPO" && "$PYTHON" - <<'PY'
import re
from importlib.metadata import PackageNotFoundError, version
try:
    import tomllib
except ImportError:  # Python 3.10: no TOML reader in the standard library; setup.py will tell
    raise SystemExit
def numbers(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])
with open("pyproject.toml", "rb") as f:
    requires = tomllib.load(f)["build-system"]["requires"] + ["pytest"]
for requirement in requires:
    name, _, low = (part.strip() for part in requirement.partition(">="))
    try:
        if numbers(version(name)) < numbers(low):
            print(f"'{requirement}'", end=" ")
    except PackageNotFoundError:
        print(f"'{requirement}'", end=" ")
PY
)
[ -z "$missing" ] || die "install first: $PYTHON -m pip install $missing"

# The compiler: $CC or Python's, which must be a GCC whose ASan runtime is installed.
CC_BASE=${CC:-$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("CC") or "cc")')}
LIBASAN=$($CC_BASE -print-file-name=libasan.so 2>/dev/null)
case "$LIBASAN" in
    /*) [ -e "$LIBASAN" ] || die "$LIBASAN does not exist" ;;
    *) die "$CC_BASE has no libasan.so (Debian: apt-get install gcc, which brings libasan8 and \
libubsan1; clang is not supported: its ASan runtime is linked statically)" ;;
esac
LIBASAN=$(readlink -f "$LIBASAN")
LIBUBSAN=$($CC_BASE -print-file-name=libubsan.so 2>/dev/null)
case "$LIBUBSAN" in
    /*) [ -e "$LIBUBSAN" ] || die "$LIBUBSAN does not exist" ;;
    *) die "$CC_BASE has no libubsan.so (Debian: libubsan1, installed with gcc)" ;;
esac
LIBUBSAN=$(readlink -f "$LIBUBSAN")
$CC_BASE --version 2>/dev/null | head -1 | grep -qiE 'gcc|GNU' \
    || die "$CC_BASE is not GCC (this script relies on GCC's shared sanitizer runtimes)"

if [ -z "$WORK" ]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastopt_sanitize.XXXXXX")
else
    WORK=$(realpath -m "$WORK")
    case "$WORK/" in
        "$REPO"/*|"$CALLER_DIR"/) die "the work dir must be outside the source tree" ;;
    esac
    if [ -d "$WORK" ] && [ -n "$(ls -A "$WORK")" ] && [ ! -e "$WORK/.fastopt-sanitize" ]; then
        die "$WORK is not empty and not a previous work dir; not touching it"
    fi
    rm -rf "$WORK"
    mkdir -p "$WORK" || die "cannot create $WORK"
fi
touch "$WORK/.fastopt-sanitize"
SRC=$WORK/src
LOGS=$WORK/logs
mkdir -p "$SRC" "$LOGS" "$WORK/plugin"
finish() {  # finish STATUS: remove the work dir on success unless --keep; exit
    if [ "$1" -eq 0 ] && [ $KEEP = 0 ]; then
        rm -rf "$WORK"
    else
        say "work dir kept: $WORK"
    fi
    exit "$1"
}

# ---- copy ------------------------------------------------------------------------------------
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
        | xargs -0 cp --parents -t "$SRC") || die "copying the source tree failed"
    say "source: $REPO at $(git -C "$REPO" rev-parse --short HEAD)$(
        [ -z "$(git -C "$REPO" status --porcelain)" ] || echo ' plus uncommitted changes')"
else
    cp -r "$REPO/." "$SRC" || die "copying the source tree failed"
    rm -rf "$SRC/build" "$SRC/dist" "$SRC"/*.egg-info "$SRC/.git"
    find "$SRC" \( -name '*.so' -o -name __pycache__ -o -name _build_config.py \
        -o -name _kernels.c \) -prune -exec rm -rf {} +
fi
cp "$HERE/sanitize_plugin.py" "$WORK/plugin/sanitize_plugin.py"
cp "$HERE/sanitize_sitecustomize.py" "$WORK/plugin/sitecustomize.py"

# ---- build -----------------------------------------------------------------------------------
PY_CFLAGS=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS") or "")')
say "building with CC=\"$CC_BASE $SANITIZERS\", CFLAGS += $EXTRA_CFLAGS (log: $LOGS/build.log)"
start=$(date +%s)
if ! (cd "$SRC" && CC="$CC_BASE $SANITIZERS" CFLAGS="$PY_CFLAGS $EXTRA_CFLAGS" \
        "$PYTHON" setup.py build_ext --inplace) > "$LOGS/build.log" 2>&1; then
    tail -30 "$LOGS/build.log"
    say "FAIL: the sanitized build failed (log: $LOGS/build.log)"
    finish 1
fi
say "built in $(( $(date +%s) - start )) s"
built=("$SRC"/fastopt/_kernels*.so)
SO=${built[0]}
[ -f "$SO" ] || { say "FAIL: no fastopt/_kernels*.so in the copy after the build"; finish 1; }
needed=$(readelf -dW "$SO" | grep NEEDED)
for runtime in libasan libubsan; do
    if ! echo "$needed" | grep -q "\[$runtime\.so"; then
        say "FAIL: $SO does not link $runtime: the sanitizer flags missed the link"
        finish 1
    fi
done
config=$("$PYTHON" -c "import runpy; c = runpy.run_path('$SRC/fastopt/_build_config.py'); \
print('threads=%s units=baseline%s' % (c['threads'], ''.join(',' + u for u in c['simd_units'])))")
runtimes=$(echo "$needed" | grep -oE '\[lib(asan|ubsan)[^]]*\]' | tr -d '[]' | xargs)
say "build: $config; links $runtimes"
if [ "${FASTOPT_THREADS:-}" != 0 ] && ! echo "$config" | grep -q 'threads=True'; then
    say "FAIL: the sanitized build has no worker threads (see $LOGS/build.log)"
    finish 1
fi

# ---- test ------------------------------------------------------------------------------------
# Test paths as given (relative to where the script was started, or absolute inside the source
# tree) become the same paths inside the copy.
ARGS=()
have_path=0
for arg in "${PYTEST_ARGS[@]}"; do
    path=${arg%%::*}
    rest=${arg#"$path"}
    if [ "${arg#-}" = "$arg" ] && { [ -e "$CALLER_DIR/$path" ] || [ -e "$path" ]; }; then
        absolute=$(cd "$CALLER_DIR" && readlink -f "$path")
        case "$absolute/" in
            "$REPO"/*)
                relative=${absolute#"$REPO"}; relative=${relative#/}
                arg="$SRC${relative:+/$relative}$rest"; have_path=1 ;;
        esac
    fi
    ARGS+=("$arg")
done
if [ $QUICK = 1 ]; then
    ARGS=("${QUICK_TESTS[@]}" "${ARGS[@]}")
elif [ $have_path = 0 ] && [ ${#ARGS[@]} -eq 0 ]; then
    ARGS=(tests)
fi

# libasan first (it must come before every other library), then libubsan, so that every process
# has the one copy sanitize_sitecustomize.py sets the report path of. libstdc++ too when there is
# one: ASan looks up the real __cxa_throw when it starts, and if no C++ runtime is loaded by then,
# the first C++ exception of a C++ extension (such as matplotlib's ft2font) stops the process
# with "CHECK failed ... real___cxa_throw".
LIBSTDCXX=$($CC_BASE -print-file-name=libstdc++.so.6 2>/dev/null)
case "$LIBSTDCXX" in /*) LIBSTDCXX=$(readlink -f "$LIBSTDCXX") ;; *) LIBSTDCXX="" ;; esac
# Leaks: checked when each process exits, reported in the log (exit status unchanged, so tests
# of subprocesses are not disturbed); sanitize_report.py keeps the ones in fastopt's code.
RUN_ENV=(
    LD_PRELOAD="$LIBASAN $LIBUBSAN${LIBSTDCXX:+ $LIBSTDCXX}${LD_PRELOAD:+ $LD_PRELOAD}"
    ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1:\
log_path=$LOGS/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    LSAN_OPTIONS="exitcode=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1:\
log_path=$LOGS/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
    PYTHONMALLOC=malloc
    FASTOPT_NUM_THREADS=2
    PYTHONPATH="$WORK/plugin${PYTHONPATH:+:$PYTHONPATH}"
    FASTOPT_SANITIZE_SOURCE="$SRC"
    FASTOPT_SANITIZE_CURRENT="$LOGS/current-test"
    FASTOPT_SANITIZE_STATUS="$LOGS/pytest-status"
    FASTOPT_SANITIZE_LIBUBSAN="$LIBUBSAN"
    FASTOPT_SANITIZE_UBSAN_LOG="$LOGS/ubsan"
)
say "pytest ${ARGS[*]}"
for setting in "${RUN_ENV[@]:0:6}"; do say "  $setting"; done
start=$(date +%s)
(cd "$SRC" && env "${RUN_ENV[@]}" "$PYTHON" -m pytest -p no:cacheprovider -p sanitize_plugin \
    "${ARGS[@]}")
rc=$?
elapsed=$(( $(date +%s) - start ))

# ---- report ----------------------------------------------------------------------------------
report=$("$PYTHON" "$HERE/sanitize_report.py" "$LOGS")
report_rc=$?
if [ $report_rc -ne 0 ]; then
    echo
    say "==== SANITIZER FINDING ===="
    echo "$report"
    echo "----"
    current=$(cat "$LOGS/current-test" 2>/dev/null)
    if [ $report_rc -eq 3 ]; then
        say "leaks are found when a process exits: run test files or tests one by one (with"
        say "--keep, from $REPO: bash tools/sanitize.sh --keep tests/FILE.py) to find the test"
    elif [ -n "$current" ]; then
        say "the test running at the time: $current"
        say "rerun it (from $REPO): bash tools/sanitize.sh --keep '${current}'"
    fi
    say "FAIL: ASan/UBSan finding; pytest exit status $rc, ${elapsed} s"
    finish 1
fi
[ -z "$report" ] || echo "$report"
# Aborted (134) after the session had finished, with no finding: LeakSanitizer's tracer crashed
# at exit (the report warned); the tests' result is pytest's own.
status=$(cat "$LOGS/pytest-status" 2>/dev/null)
if [ "$rc" -eq 134 ] && [ -n "$status" ]; then
    say "pytest ended with status $status, then the process aborted at exit with no finding"
    rc=$status
fi
if [ "$rc" -ne 0 ]; then
    [ "$rc" -ne 5 ] || say "pytest ran no test (exit status 5): check the paths and -k"
    say "FAIL: pytest exit status $rc, no sanitizer report (${elapsed} s)"
    finish 1
fi
say "PASS: no ASan/UBSan finding, tests passed (${elapsed} s)"
finish 0
