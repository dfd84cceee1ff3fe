"""Build of fastopt's compiled core.

One extension, fastopt._kernels: the Cython wrapper, the C engine and the portable (baseline)
loops. On x86-64 the same loops are compiled again with AVX2 and AVX-512 target flags, each unit
on its own, and linked in; the engine picks one at run time by asking the CPU. The baseline
unit never gets a target flag, so the binary runs on any CPU of its platform.

Floating-point flags are part of the semantics: -ffp-contract=off (no fused multiply-add, which
would change results), never -ffast-math, never -march=native. -fno-math-errno only tells the
compiler that sqrt need not set errno, so it can use the sqrt instruction; values are unchanged.

Environment:
  FASTOPT_THREADS=0    build without worker threads (default: fastopt's own pool, on POSIX
                       threads or Windows threads; no OpenMP runtime is needed)
  FASTOPT_SIMD_UNITS   comma-separated subset of "avx2,avx512" to compile (default: all the
                       compiler accepts for an x86-64 target)
"""
import os
import platform
import shutil
import sys
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))

UNIX_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno"]
MSVC_FLAGS = ["/O2", "/fp:precise"]
SIMD_UNITS = {
    # name: (unix flags, msvc flags, a statement only a compiler targeting it accepts)
    "avx2": (["-mavx2"], ["/arch:AVX2"], "__m256d x = _mm256_setzero_pd(); (void)x;"),
    "avx512": (["-mavx512f"], ["/arch:AVX512"], "__m512d x = _mm512_setzero_pd(); (void)x;"),
}


def _try_compile(compiler, flags, body, headers=(), link_flags=None):
    """Does this compiler build (and, with link_flags, link) a tiny program with these flags?"""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            for header in headers:
                f.write(f"#include <{header}>\n")
            f.write(f"int main(void) {{ {body} return 0; }}\n")
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=flags)
            if link_flags is not None:
                compiler.link_executable(objects, os.path.join(tmp, "probe"), output_dir=tmp,
                                         extra_postargs=link_flags)
        except Exception:
            return False
    return True


def _is_x86_64_target():
    machine = platform.machine().lower()
    archflags = os.environ.get("ARCHFLAGS", "")  # macOS cross builds (cibuildwheel)
    if sys.platform == "darwin" and archflags:
        return "x86_64" in archflags and "arm64" not in archflags
    return machine in ("x86_64", "amd64", "x64")


class BuildExt(build_ext):
    def build_extension(self, ext):
        msvc = self.compiler.compiler_type == "msvc"
        base = list(MSVC_FLAGS if msvc else UNIX_FLAGS)
        if not msvc and sys.platform != "win32":
            base.append("-fvisibility=hidden")
        config = {"compiler": self._compiler_name(), "flags": list(base), "simd_units": [],
                  "threads": True}

        # Worker threads (csrc/pool.c): POSIX threads, or Windows threads; FASTOPT_THREADS=0
        # builds a serial extension.
        if os.environ.get("FASTOPT_THREADS", "1") == "0":
            ext.define_macros.append(("FASTOPT_THREADS", "0"))
            config["threads"] = False
        elif not msvc:
            base.append("-pthread")
            ext.extra_link_args = list(ext.extra_link_args or []) + ["-pthread"]

        requested = os.environ.get("FASTOPT_SIMD_UNITS")
        units = list(SIMD_UNITS) if requested is None else [
            u.strip() for u in requested.split(",") if u.strip()]
        extra_objects = []
        if _is_x86_64_target():
            for unit in units:
                if unit not in SIMD_UNITS:
                    raise RuntimeError(f"FASTOPT_SIMD_UNITS: unknown unit {unit!r}")
                unix_flags, msvc_flags, probe = SIMD_UNITS[unit]
                flags = base + (msvc_flags if msvc else unix_flags)
                if not _try_compile(self.compiler, flags, probe, headers=["immintrin.h"]):
                    print(f"fastopt: compiler does not target {unit}; building without it")
                    continue
                extra_objects += self.compiler.compile(
                    [os.path.join("csrc", f"loops_{unit}.c")], output_dir=self.build_temp,
                    include_dirs=["csrc"], extra_postargs=flags, depends=ext.depends)
                ext.define_macros.append((f"FASTOPT_HAVE_{unit.upper()}", "1"))
                config["simd_units"].append(unit)

        ext.extra_compile_args = list(ext.extra_compile_args or []) + base
        ext.extra_objects = list(ext.extra_objects or []) + extra_objects
        # CFLAGS from the environment come first on the command line; report them too.
        config["flags"] = os.environ.get("CFLAGS", "").split() + base
        self._write_build_config(config)
        super().build_extension(ext)

    def _compiler_name(self):
        if self.compiler.compiler_type == "msvc":
            return "msvc"
        cc = getattr(self.compiler, "compiler_so", None) or ["cc"]
        return os.path.basename(cc[0])

    def _write_build_config(self, config):
        """fastopt/_build_config.py: what build_info() reports about how this build was made."""
        os.makedirs(os.path.join(self.build_lib, "fastopt"), exist_ok=True)
        with open(os.path.join(self.build_lib, "fastopt", "_build_config.py"), "w") as f:
            f.write("# Written by setup.py at build time.\n")
            for key, value in config.items():
                f.write(f"{key} = {value!r}\n")

    def copy_extensions_to_source(self):
        """In-place and editable builds: the build configuration goes beside the extension."""
        super().copy_extensions_to_source()
        built = os.path.join(self.build_lib, "fastopt", "_build_config.py")
        if os.path.exists(built):
            shutil.copyfile(built, os.path.join(ROOT, "fastopt", "_build_config.py"))


extension = Extension(
    "fastopt._kernels",
    sources=["fastopt/_kernels.pyx", "csrc/engine.c", "csrc/pool.c", "csrc/loops_baseline.c"],
    include_dirs=["csrc", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    depends=["csrc/fastopt.h", "csrc/internal.h", "csrc/loops.h", "csrc/elementwise.h",
             "csrc/loops_avx2.c", "csrc/loops_avx512.c"],
)

setup(
    ext_modules=cythonize([extension], language_level=3),
    cmdclass={"build_ext": BuildExt},
)
