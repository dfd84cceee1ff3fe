"""Does run-time dispatch cost anything against a -march=native build?

    python bench/native_vs_portable.py [--size 100000] [--dtype float32] [--rounds 5]

Builds a second copy of fastopt from this source tree in a temporary folder with
CFLAGS=-march=native and no dispatch units (FASTOPT_SIMD_UNITS=""), then times every optimizer
at one size with that build and with the fastopt this Python imports (the portable build with
run-time dispatch), alternating between the two in separate processes, and prints the medians
and the ratio. The -march=native build exists only here, for this comparison: fastopt never
ships one.

Needs what building fastopt needs: a C compiler, Cython >= 3 and setuptools >= 77 (the bench
extra brings both: pip install ".[bench]"), and git (it copies the files git tracks).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a child process: median time of update() for every optimizer, as JSON.
MEASURE = """
import json, sys, time
import numpy as np
import fastopt
from fastopt.optimizers import OPTIMIZERS
size, dtype, calls = int(sys.argv[1]), np.dtype(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
result = {"simd": fastopt.get_simd(), "flags": fastopt.build_info()["flags"]}
for name, cls in OPTIMIZERS.items():
    params = {"w": rng.standard_normal(size).astype(dtype)}
    grads = {"w": (rng.standard_normal(size) * 1e-3).astype(dtype)}
    optimizer = cls()
    optimizer.update(params, grads)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        optimizer.update(params, grads)
        times.append(time.perf_counter() - start)
    result[name] = float(np.median(times))
print(json.dumps(result))
"""


def missing_build_requirements():
    """None, or a message naming what this script needs to build fastopt and how to get it."""
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for package, minimum in (("Cython", 3), ("setuptools", 77)):
        try:
            major = int(version(package).split(".")[0])
        except (PackageNotFoundError, ValueError):
            major = None
        if major is None or major < minimum:
            missing.append(f"'{package}>={minimum}'")
    message = []
    if missing:
        message.append(f"pip install {' '.join(missing)} (or pip install \".[bench]\" from "
                       f"the source checkout)")
    if not any(shutil.which(cc) for cc in (os.environ.get("CC") or "cc", "gcc", "clang")):
        message.append("a C compiler (cc, gcc or clang)")
    if not shutil.which("git"):
        message.append("git")
    return "this script builds fastopt and needs: " + "; ".join(message) if message else None


def build_native(folder):
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        os.makedirs(os.path.join(folder, os.path.dirname(name)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), os.path.join(folder, name))
    environment = dict(os.environ, CFLAGS="-march=native", FASTOPT_SIMD_UNITS="")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=folder,
                   env=environment, check=True, stdout=subprocess.DEVNULL)


def measure(pythonpath, size, dtype, calls):
    environment = dict(os.environ)
    if pythonpath:
        environment["PYTHONPATH"] = pythonpath
    else:
        environment.pop("PYTHONPATH", None)
    output = subprocess.run([sys.executable, "-c", MEASURE, str(size), dtype, str(calls)],
                            env=environment, capture_output=True, text=True, check=True,
                            cwd=tempfile.gettempdir()).stdout
    return json.loads(output)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    problem = missing_build_requirements()
    if problem:
        print(f"native_vs_portable.py: {problem}", file=sys.stderr)
        return 2

    # absolute: the measuring processes run in another folder
    portable_path = os.pathsep.join(os.path.abspath(entry) for entry in
                                    os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry)
    with tempfile.TemporaryDirectory() as folder:
        print("building the -march=native copy ...", flush=True)
        build_native(folder)
        portable, native = [], []
        for _ in range(args.rounds):
            portable.append(measure(portable_path, args.size, args.dtype, args.calls))
            native.append(measure(folder, args.size, args.dtype, args.calls))
    print(f"portable: simd {portable[0]['simd']}, flags {' '.join(portable[0]['flags'])}")
    print(f"native:   simd {native[0]['simd']}, flags {' '.join(native[0]['flags'])}")
    print(f"{args.size} {args.dtype} elements, median of {args.rounds} rounds x "
          f"{args.calls} calls")
    print(f"{'optimizer':9} {'portable':>10} {'native':>10} {'portable/native':>15}")
    for name in (key for key in portable[0] if key not in ("simd", "flags")):
        a = np.median([run[name] for run in portable])
        b = np.median([run[name] for run in native])
        print(f"{name:9} {a * 1e6:8.2f}us {b * 1e6:8.2f}us {a / b:15.3f}")


if __name__ == "__main__":
    sys.exit(main())
