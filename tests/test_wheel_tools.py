"""tools/check_simd_isolation.py, the disassembly check tools/check_wheel.sh runs on the wheel,
tried on small shared objects built here: it must pass a clean layout and catch AVX in the
baseline unit, fused multiply-adds, ifunc dispatch and a stripped binary.

Needs the source tree (tools/), Linux on x86-64, gcc and binutils; skipped otherwise (for example
when cibuildwheel runs tests/ against an installed wheel)."""
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
CHECKER = TOOLS / "check_simd_isolation.py"

pytestmark = [
    pytest.mark.skipif(not CHECKER.exists(), reason="needs the source tree's tools/"),
    pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                       reason="ELF x86-64 check"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("gcc", "objdump", "readelf")),
                       reason="needs gcc and binutils"),
]

# The shape of csrc/loops_*.c: static loops reached only through a table.
UNIT = """
typedef void (*loop_fn)(long n, float *p, const float *g, float lr);
static void sgd_loop(long n, float *restrict p, const float *restrict g, float lr)
{
    for (long i = 0; i < n; ++i)
        p[i] -= lr * g[i];
}
static void axpy_loop(long n, float *restrict p, const float *restrict g, float lr)
{
    for (long i = 0; i < n; ++i)
        p[i] = p[i] * lr + g[i];
}
const loop_fn TABLE[2] = {sgd_loop, axpy_loop};
"""
IFUNC = """
__attribute__((target_clones("avx2", "default")))
float scale_sum(const float *x, long n) { float s = 0; for (long i = 0; i < n; ++i) s += x[i]; return s; }
"""
CLEAN_FLAGS = {"baseline": [], "avx2": ["-mavx2"], "avx512": ["-mavx512f"]}


def build(tmp_path, flags=None, extra_baseline="", strip=False):
    """A shared object from loops_baseline.c, loops_avx2.c and loops_avx512.c."""
    flags = {**CLEAN_FLAGS, **(flags or {})}
    objects = []
    for unit, unit_flags in flags.items():
        source = tmp_path / f"loops_{unit}.c"
        text = UNIT.replace("TABLE", f"table_{unit}")
        source.write_text(text + (extra_baseline if unit == "baseline" else ""))
        obj = tmp_path / f"loops_{unit}.o"
        subprocess.run(["gcc", "-O3", "-fPIC", "-ffp-contract=off", *unit_flags, "-c",
                        str(source), "-o", str(obj)], check=True, cwd=tmp_path)
        objects.append(str(obj))
    library = tmp_path / "lib.so"
    subprocess.run(["gcc", "-shared", *(["-s"] if strip else []), "-o", str(library), *objects],
                   check=True)
    return library


def check(library):
    return subprocess.run([sys.executable, str(CHECKER), str(library)], capture_output=True,
                          text=True)


def test_clean_layout_passes(tmp_path):
    result = check(build(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: AVX/AVX-512 only in loops_avx2.c, loops_avx512.c" in result.stdout


def test_avx_in_the_baseline_unit_fails(tmp_path):
    result = check(build(tmp_path, {"baseline": ["-mavx2"]}))
    assert result.returncode == 1
    assert "(loops_baseline.c)" in result.stdout


def test_avx512_in_the_avx2_unit_fails(tmp_path):
    result = check(build(tmp_path, {"avx2": ["-mavx512f"]}))
    assert result.returncode == 1
    assert "AVX-512 in the avx2 unit" in result.stdout


def test_fused_multiply_add_fails(tmp_path):
    result = check(build(tmp_path, {"avx2": ["-mavx2", "-mfma", "-ffp-contract=fast"]}))
    assert result.returncode == 1
    assert "fused multiply-add" in result.stdout


def test_ifunc_dispatch_fails(tmp_path):
    result = check(build(tmp_path, extra_baseline=IFUNC))
    assert result.returncode == 1
    assert "IFUNC" in result.stdout


def test_empty_simd_unit_is_not_a_pass(tmp_path):
    result = check(build(tmp_path, {"avx512": []}))
    assert result.returncode == 1
    assert "vacuous" in result.stdout


def test_stripped_object_cannot_be_checked(tmp_path):
    result = check(build(tmp_path, strip=True))
    assert result.returncode == 2
    assert "stripped" in result.stderr


def test_check_wheel_script_parses_and_documents_itself():
    script = TOOLS / "check_wheel.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    result = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--quick" in result.stdout and "Westmere" in result.stdout
