"""Did a change to the engine change fastopt's speed? Two builds, one process, interleaved.

    python bench/compare_builds.py --old REV [--new REV | --new-tree] [--quick] [--rounds N]
                                   [--threads N] [--json PATH]

    python bench/compare_builds.py --old HEAD --quick      # smoke run: working tree vs HEAD
    python bench/compare_builds.py --old main --new HEAD   # two commits, the full set

What it does:
  1. Exports two versions of this repository into a temporary folder: OLD, a git revision
     (`git archive`), and NEW, another revision or, with --new-tree (the default), the working
     tree as it is: tracked files with their uncommitted edits plus untracked files .gitignore
     does not exclude. Builds both at once, in place (`python setup.py build_ext --inplace`:
     same Python, compiler and environment).
  2. Copies each built package COPIES times and imports every copy into one process under a
     name of its own, fastopt_old0..3 and fastopt_new0..3 (load_build: each copy's fastopt/ is
     imported under another top-level name, so its extension fastopt._kernels loads from its
     own file). Asserts that all those _kernels are different module objects from different
     files, each used by its own copy's optimizers (check_separate).
  3. Cases (plan_workloads): every case of `fastopt bench --quick`, read from the new tree's
     fastopt.benchmark (every optimizer x float32/float64 x 1, 1e3, 1e5, 1e6 elements, and the
     multi-array workloads: the seeds' MLP, the book's MLP, 200 arrays of 4096 float32), plus
     one array of 1e7 float32 and float64 for every optimizer, and Adam on 200 x 4096 float32.
  4. Each case (measure_case): allocation groups of two rounds, each group with fresh copies
     of the same arrays and a new optimizer per build; in a round both builds run the same
     number of update() calls, about 5 ms each, as 5 sub-batches interleaved with the other
     build's, the build that goes first alternating. A round's ratio is new time / old time,
     a build's time being its fastest sub-batch. The result is the median ratio over rounds,
     with a 95% confidence interval of that median, the range of the per-round ratios and
     each build's median time per update(). The rounds (at least --rounds, more for cheap
     cases, see --min-time) are shared among PROCESSES processes run one after the other,
     each loading both builds and interleaving them as above, and pooled.
  5. After the timed calls, each pair's parameters must be bit for bit identical (same start,
     same number of updates): checked in every case, a correctness test of the change too.
  6. Prints a table and a summary: how many cases are inside 0.97 <= new/old <= 1.03 ("ok";
     "slower?"/"faster?" when outside but the confidence interval reaches the band, i.e. not
     told apart from noise; "SLOWER"/"FASTER" when the whole interval is outside; "busy" when
     our threads waited for a CPU too long to tell), and the machine's load average before
     and after. --json writes every number, per round.

Exit status: 0 when every case is "ok" and bit-identical, 1 otherwise, 2 when a build or the
setup fails.

How long, on this 2-core machine: builds 6-25 s (both at once); the full run (78 cases, 80
rounds and 2 s per case at least, 4 processes) about 6 minutes; --quick (24 rounds, 0.6 s,
3 processes) about 1.5-2 minutes. Other processes' load stretches both.

What it needs: git, a C compiler, NumPy, Cython >= 3 and setuptools (as an in-place build of
fastopt does; no pip, no network), and about 1 GB of memory for the 1e7 float64 cases. It
imports nothing from an installed fastopt: both sides come from git. Linux is assumed for
/proc (others' CPU share, our threads' waits), the load average and glibc's mallopt; elsewhere
those parts are skipped.

Noise, and what the method does about it (each found with identical builds, HEAD vs HEAD):
  - interleaving, with the first build alternating, cancels drift (clock, neighbours);
  - the fastest of 5 sub-batches drops the ones another process interrupted;
  - the caches are evened out: one untimed call before each sub-batch, and one of the build
    going second before each round, so that no build's timed calls follow its own (the one
    that did ran up to 10-20% faster, from 1e5 elements to the size of the L3 cache);
  - layout: glibc's mmap threshold is fixed (same_heap_layout), each allocation group is
    preceded by random padding and the builds take turns allocating (otherwise identical
    builds measured 0.90 or 1.10 depending on which allocated first);
  - the engine's thread back-off is off in both builds (set_thread_backoff): with it, each
    build's plan sits at its own point of a serial/threaded cycle (0.73-1.29 between groups);
  - several copies of each build: identical bytes loaded from two files differ by up to 5% on
    200-ns calls, consistently, by file; and several processes: one process's layout can
    favour a build by 5-15% on calls under a microsecond, which another's does not.
  What remains on a quiet machine: medians within 0.6-1.2% rms of 1.0, single tiny cases up
  to 4-5% off now and then (flagged "?"). With other processes busy on this 2-core machine,
  threaded updates wait for time slices, both builds alike (the "wait" column; "busy" at 20%):
  --threads 1 then compares the same kernels steadily.

The pure helpers (summarise_rounds, verdict, ...) are tested by
bench/test_compare_builds_helpers.py.
"""
import argparse
import contextlib
import gc
import importlib
import importlib.abc
import importlib.util
import json
import math
import os
import pkgutil
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDES = ("old", "new")
PACKAGE = "fastopt"  # the folder name in both trees; imported as fastopt_old0, fastopt_new0, ...

BAND = (0.97, 1.03)  # new/old time inside this: "ok"
BATCH_SECONDS = 0.005  # each build's timed calls per round (at least BEST_OF calls)
BEST_OF = 5  # a round's batch is this many sub-batches per build, interleaved; the fastest counts
WARMUP_CALLS = 2  # untimed calls per build before timing (the first one creates the state)
CALIBRATION_CALLS = 5  # timed, not counted: the fastest of them chooses the sub-batch size
PRIMER_SECONDS = 0.005  # a call shorter than this: one untimed call before each sub-batch
DEFAULT_ROUNDS = 80  # paired rounds per case at least
QUICK_ROUNDS = 24
MIN_SECONDS = 2.0  # measuring time per case at least: cheap cases run more rounds
QUICK_MIN_SECONDS = 0.6
ROUNDS_PER_GROUP = 2  # rounds per allocation group (fresh arrays and optimizers): one each way
COPIES = 4  # copies of each build in a process; allocation group g uses copy g % COPIES
PROCESSES = 4  # measuring processes, one after the other, the rounds shared among them
QUICK_PROCESSES = 3
LARGE_SIZE = 10_000_000  # the single-array size added to the quick set
BUSY_SHARE = 0.10  # other processes' share of the CPU during a case that the table flags
BUSY_WAIT = 0.20  # threads waiting for a CPU this share of the time: verdict "busy" (threads > 1)
MMAP_THRESHOLD = 64 * 1024  # bytes; see same_heap_layout


# ---- pure helpers (no build, no fastopt; tested in bench/test_compare_builds_helpers.py) ------

def verdict(ratio, ci=None, band=BAND, waited=None, threads=1):
    """What a new/old time ratio says: "ok" when band[0] <= ratio <= band[1]. Outside it,
    "slower" or "faster", with a "?" when the confidence interval ci = (low, high) of the
    ratio reaches into the band (the difference is not told apart from noise), in capitals when
    the whole interval is outside (or no interval is given). "busy" whatever the ratio when
    several threads waited for a CPU BUSY_WAIT or more of the time (waited, see RunQueueMeter):
    then threaded updates wait for time slices, alike in both builds, and a ratio near 1 says
    nothing about the kernels."""
    if ratio is None or math.isnan(ratio):
        return "-"
    if threads > 1 and waited is not None and waited >= BUSY_WAIT:
        return "busy"
    if band[0] <= ratio <= band[1]:
        return "ok"
    word = "slower" if ratio > band[1] else "faster"
    if ci is not None and ci[0] <= band[1] and ci[1] >= band[0]:
        return word + "?"
    return word.upper()


def median_ci_ranks(n, z=1.96):
    """0-based ranks (low, high) in a sorted sample of n whose values bound a ~95%
    distribution-free confidence interval of its median (the binomial order-statistic
    interval, normal approximation); for small n, the whole sample."""
    if n <= 0:
        raise ValueError("no samples")
    half_width = z * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half_width))
    high = min(n - 1, math.ceil(n / 2 + half_width) - 1)
    return low, max(low, high)


def summarise_rounds(old_seconds, new_seconds, band=BAND):
    """Paired per-round times per call of the two builds -> dict:

    ratio                  median over rounds of new/old: the case's result
    ratio_ci               (low, high): ~95% confidence interval of that median
    ratio_min, ratio_max   the range of the per-round ratios
    ratio_q1, ratio_q3     their quartiles
    old_median, new_median median seconds per call of each build
    rounds                 number of pairs
    verdict                verdict(ratio, ratio_ci, band)
    """
    if len(old_seconds) != len(new_seconds):
        raise ValueError(f"unpaired rounds: {len(old_seconds)} old, {len(new_seconds)} new")
    if not old_seconds:
        raise ValueError("no rounds")
    old = np.asarray(old_seconds, dtype=float)
    new = np.asarray(new_seconds, dtype=float)
    if not (np.all(old > 0) and np.all(new > 0)):
        raise ValueError("times must be > 0")
    ratios = np.sort(new / old)
    low, high = median_ci_ranks(len(ratios))
    ratio = float(np.median(ratios))
    ci = (float(ratios[low]), float(ratios[high]))
    return {
        "ratio": ratio,
        "ratio_ci": ci,
        "ratio_min": float(ratios[0]),
        "ratio_max": float(ratios[-1]),
        "ratio_q1": float(np.percentile(ratios, 25)),
        "ratio_q3": float(np.percentile(ratios, 75)),
        "old_median": float(np.median(old)),
        "new_median": float(np.median(new)),
        "rounds": int(len(ratios)),
        "verdict": verdict(ratio, ci, band),
    }


def calls_per_batch(one_call_seconds, batch_seconds):
    """Calls in a timed (sub-)batch: about batch_seconds of them, at least 1."""
    if one_call_seconds <= 0:
        return max(1, int(batch_seconds / 1e-9))
    return max(1, int(round(batch_seconds / one_call_seconds)))


def first_side(round_index, group=0):
    """Which build goes first in a round: "old" in even rounds, "new" in odd ones, counted
    from the start of the allocation group, the other way round in odd groups (so that the
    first round after each allocation is not always the same build's)."""
    return SIDES[(round_index + group) % 2]


def split_evenly(total, parts):
    """total (rounds) shared among min(parts, total) parts (processes) as evenly as possible,
    the first parts taking the remainder; e.g. (10, 4) -> [3, 3, 2, 2]."""
    if total < 1 or parts < 1:
        raise ValueError("total and parts must be >= 1")
    parts = min(parts, total)
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def load_order(copies, flip=False):
    """The order in which to import the copies, as (side, copy index): old first for even
    copies and new first for odd ones (old0 new0 new1 old1 old2 new2 ...), so that neither
    build is always the one loaded later; flip=True swaps old and new (new0 old0 old1 ...)."""
    order = []
    for index in range(copies):
        sides = SIDES if (index % 2 == 0) != flip else SIDES[::-1]
        order += [(side, index) for side in sides]
    return order


def rms_distance(ratios):
    """How far ratios typically are from 1: exp(root mean square of log(ratio)) - 1, e.g. 0.012
    for +-1.2%. With identical builds, the noise floor of the method."""
    logs = np.log(np.asarray(ratios, dtype=float))
    return float(math.exp(math.sqrt(float(np.mean(logs ** 2)))) - 1)


def band_count(summaries):
    """(inside, total): how many of the summaries' verdicts are "ok"."""
    return sum(1 for summary in summaries if summary["verdict"] == "ok"), len(summaries)


def format_seconds(seconds):
    """3 significant digits and a unit: "812 ns", "1.63 ms"."""
    if seconds is None:
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


# ---- getting the two source trees and building them -------------------------------------------

def git(*arguments, capture=True):
    result = subprocess.run(["git", *arguments], cwd=ROOT, capture_output=capture, check=True)
    return result.stdout


def describe_revision(revision):
    """(full sha, "shortsha subject") of a revision; CalledProcessError if git does not know it."""
    sha = git("rev-parse", "--verify", f"{revision}^{{commit}}").decode().strip()
    subject = git("log", "-1", "--format=%h %s", sha).decode().strip()
    return sha, subject


def export_revision(sha, destination):
    """The files of a commit into destination (git archive, unpacked here)."""
    os.makedirs(destination)
    with tempfile.TemporaryFile() as archive:
        subprocess.run(["git", "archive", "--format=tar", sha], cwd=ROOT, stdout=archive,
                       check=True)
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, filter="data")
            else:  # Python before 3.10.12/3.11.4
                tar.extractall(destination)


def export_working_tree(destination):
    """The working tree as it is into destination: tracked files (with uncommitted edits) and
    untracked ones .gitignore does not exclude; no build products (they are ignored). Returns
    the number of files that differ from HEAD or are untracked (for the report)."""
    names = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split(b"\0")
    os.makedirs(destination)
    for name in filter(None, names):
        name = os.fsdecode(name)
        source = os.path.join(ROOT, name)
        if not os.path.isfile(source):  # deleted in the working tree, or a submodule
            continue
        target = os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)
    changed = git("status", "--porcelain", "--untracked-files=all").decode().splitlines()
    return len(changed)


def start_build(folder, log_path, without_pyproject=False):
    """Start `python setup.py build_ext --inplace` in folder; returns the Popen. With
    without_pyproject, pyproject.toml is set aside first (see build_both)."""
    if without_pyproject:
        os.replace(os.path.join(folder, "pyproject.toml"),
                   os.path.join(folder, "pyproject.toml.aside"))
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, "setup.py", "build_ext", "--inplace"],
                               cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    process.log = log
    return process


def build_both(folders, work):
    """Build both trees in place, concurrently. Returns (seconds, notes).

    Only setup.py is needed to build the extension. A setuptools older than the one
    pyproject.toml asks for (as here: setuptools 65 against ">=77") rejects pyproject.toml's
    [project] table before building anything; then the build is tried again with pyproject.toml
    set aside in that copy, which changes nothing in how the extension is compiled (the
    compiler flags are setup.py's), and the notes say so."""
    began = time.perf_counter()
    notes = []
    pending = {side: False for side in folders}  # side -> built without pyproject.toml
    for attempt in range(2):
        processes = {side: start_build(folders[side], os.path.join(work, f"build-{side}.log"),
                                       without_pyproject)
                     for side, without_pyproject in pending.items()}
        failed = {}
        for side, process in processes.items():
            process.wait()
            process.log.close()
            if process.returncode != 0:
                failed[side] = os.path.join(work, f"build-{side}.log")
        if not failed:
            return time.perf_counter() - began, notes
        retry = {}
        for side, log_path in failed.items():
            with open(log_path, errors="replace") as log:
                text = log.read()
            has_pyproject = os.path.exists(os.path.join(folders[side], "pyproject.toml"))
            if attempt == 0 and has_pyproject and "configuration error" in text:
                retry[side] = True
                notes.append(f"{side}: this setuptools rejects pyproject.toml; built with it "
                             "set aside (setup.py alone defines the extension and its flags)")
            else:
                tail = "\n".join(text.splitlines()[-25:])
                raise RuntimeError(f"building the {side} tree failed (log: {log_path}):\n{tail}")
        pending = retry
    raise RuntimeError("unreachable")


# ---- loading a build under another top-level name ---------------------------------------------

class _AliasLoader(importlib.abc.Loader):
    """Loads `fastopt.X` as the already importable `fastopt_side.X`: the same module object."""

    def __init__(self, real_name):
        self.real_name = real_name
        self.real_spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.real_name)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module):
        # The import system stamped the alias's spec on the module: give it its own back.
        module.__spec__ = self.real_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Resolves `fastopt` and `fastopt.*` to the modules of one copy (e.g. `fastopt_new.*`)."""

    def __init__(self, alias, real):
        self.alias, self.real = alias, real

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.alias and not fullname.startswith(self.alias + "."):
            return None
        real_name = self.real + fullname[len(self.alias):]
        real_spec = importlib.util.find_spec(real_name)
        if real_spec is None:
            return None
        return importlib.util.spec_from_loader(
            fullname, _AliasLoader(real_name),
            is_package=real_spec.submodule_search_locations is not None)


@contextlib.contextmanager
def absolute_imports_as(real):
    """While inside: `import fastopt...` (absolute, as fastopt/benchmark.py does) gives the
    modules of the copy imported as `real`, without loading anything a second time. Any
    `fastopt*` entries of sys.modules (an installed fastopt) are set aside meanwhile and put
    back after, and the alias entries are removed."""
    def ours(name):
        return name == PACKAGE or name.startswith(PACKAGE + ".")

    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    finder = _AliasFinder(PACKAGE, real)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(saved)


def make_copies(tree, destination, copies):
    """copies copies of tree/fastopt/ (built) as destination/0/fastopt/, destination/1/...:
    new files, each with pages of its own (hard links or a symlink would not do: the dynamic
    loader would hand out the one library already loaded for the same file). Returns the
    folders that hold each copy's fastopt/."""
    folders = []
    for index in range(copies):
        folder = os.path.join(destination, str(index))
        shutil.copytree(os.path.join(tree, PACKAGE), os.path.join(folder, PACKAGE),
                        ignore=shutil.ignore_patterns("__pycache__", "*.c"))
        folders.append(folder)
    return folders


def load_build(folder, name):
    """Import folder/fastopt/ (built) as the top-level package `name`.

    The package gets a spec of its own name whose submodule search path is that folder, so
    `from . import _kernels` and `from .optimizers import ...` inside it find `name._kernels`
    and `name.optimizers` in the same copy, and the extension's file there is initialised by
    PyInit__kernels (the init function depends on the last part of the name only). Absolute
    `import fastopt` while it is imported resolves to this copy too (absolute_imports_as)."""
    package = os.path.join(folder, PACKAGE)
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(package, "__init__.py"), submodule_search_locations=[package])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: its relative imports look it up here
    try:
        with absolute_imports_as(name):
            spec.loader.exec_module(module)
    except BaseException:
        for key in [key for key in sys.modules if key == name or key.startswith(name + ".")]:
            del sys.modules[key]
        raise
    return module


def load_copies(folders, flip=False):
    """Import every copy of both builds in load_order; returns a list of pairs, one per copy
    index: {"old": module, "new": module}."""
    pairs = [{} for _ in folders["old"]]
    for side, index in load_order(len(pairs), flip):
        pairs[index][side] = load_build(folders[side][index], f"fastopt_{side}{index}")
    return pairs


def check_separate(pairs, folders):
    """Assert that every loaded copy has its own _kernels module object from its own file
    inside its own folder, used by its own optimizers module, all mapped in this process, and
    that no `fastopt` alias was left in sys.modules. Returns {side: [file of each copy]}."""
    files = {side: [] for side in SIDES}
    modules = []
    for index, pair in enumerate(pairs):
        for side in SIDES:
            module = pair[side]
            path = os.path.realpath(module._kernels.__file__)
            assert path.startswith(os.path.realpath(folders[side][index]) + os.sep), \
                f"{module.__name__}._kernels is {path}, outside {folders[side][index]}"
            assert sys.modules[f"{module.__name__}._kernels"] is module._kernels
            assert module.optimizers._kernels is module._kernels, \
                f"{module.__name__}.optimizers uses another copy's _kernels"
            files[side].append(path)
            modules.append(module._kernels)
    assert len({id(module) for module in modules}) == len(modules), \
        "one _kernels module object serves two copies"
    paths = files["old"] + files["new"]
    assert len(set(paths)) == len(paths), "two copies load the same _kernels file"
    identities = {(os.stat(path).st_dev, os.stat(path).st_ino) for path in paths}
    assert len(identities) == len(paths), "two _kernels paths are the same file (a link)"
    assert all(sys.modules.get(PACKAGE) is not pair[side] for pair in pairs for side in SIDES), \
        "a `fastopt` alias was left in sys.modules"
    if os.path.exists("/proc/self/maps"):
        with open("/proc/self/maps") as stream:
            mapped = stream.read()
        for path in paths:
            assert path in mapped, f"{path} is not mapped into this process"
    return files


# ---- the workloads ----------------------------------------------------------------------------

BENCHMARK_NAMES = ("Workload", "plan_cases", "MULTI_ARRAY_WORKLOADS", "QUICK_SIZES",
                   "OPTIMIZERS")


def benchmark_definitions(package_name):
    """{name: object} for BENCHMARK_NAMES (and DTYPES, Case, single_array when present) from
    the build's fastopt.benchmark: a module today, maybe a package `fastopt/benchmark/` later;
    names the package does not re-export are looked up in its submodules."""
    with absolute_imports_as(package_name):
        benchmark = importlib.import_module(f"{package_name}.benchmark")
        wanted = BENCHMARK_NAMES + ("DTYPES", "Case", "single_array")
        found = {name: getattr(benchmark, name) for name in wanted if hasattr(benchmark, name)}
        if len(found) < len(wanted) and hasattr(benchmark, "__path__"):
            for info in pkgutil.iter_modules(benchmark.__path__):
                submodule = importlib.import_module(f"{benchmark.__name__}.{info.name}")
                for name in wanted:
                    if name not in found and hasattr(submodule, name):
                        found[name] = getattr(submodule, name)
    missing = [name for name in BENCHMARK_NAMES if name not in found]
    if missing:
        raise RuntimeError(f"{package_name}.benchmark lacks {', '.join(missing)}")
    return found


class Case:
    """One row: an optimizer on a workload (anything with .dtype, .label, .kind and
    make_arrays(seed) -> (params, grads), as fastopt.benchmark.Workload)."""

    def __init__(self, optimizer, workload, title=None):
        self.optimizer, self.workload = optimizer, workload
        self.title = title or f"{optimizer} {np.dtype(workload.dtype).name} {workload.label}"

    @property
    def elements(self):
        return sum(math.prod(shape) for shape in self.workload.shapes)


def plan_workloads(defs):
    """The cases, in this order:

    1. what `fastopt bench --quick` runs: plan_cases(OPTIMIZERS, float32 and float64,
       QUICK_SIZES, single + every multi-array workload);
    2. one array of 1e7 elements, float32 and float64, for every optimizer;
    3. Adam on 200 arrays of 4096 float32 ("many-small"), unless 1. has it already.
    """
    dtypes = tuple(defs.get("DTYPES", ("float32", "float64")))
    kinds = ("single",) + tuple(defs["MULTI_ARRAY_WORKLOADS"])
    quick = [Case(case.optimizer, case.workload, getattr(case, "title", None))
             for case in defs["plan_cases"](defs["OPTIMIZERS"], dtypes, defs["QUICK_SIZES"],
                                            kinds)]

    def large(dtype):
        if "single_array" in defs:
            return defs["single_array"](LARGE_SIZE, dtype)
        return defs["Workload"]("single", "1e7", ((LARGE_SIZE,),), np.dtype(dtype))

    extra = [Case(optimizer, large(dtype)) for optimizer in defs["OPTIMIZERS"]
             for dtype in dtypes]
    extra.append(Case("Adam", defs["Workload"]("many-small", "200 x 4096", ((4096,),) * 200,
                                               np.dtype(np.float32))))
    cases, titles = [], set()
    for case in quick + extra:
        if case.title not in titles:
            titles.add(case.title)
            cases.append(case)
    return cases


# ---- timing -----------------------------------------------------------------------------------

def _time_batch(update, params, grads, calls):
    """Seconds per call of `calls` back-to-back update(params, grads)."""
    loop = range(calls)
    start = time.perf_counter()
    for _ in loop:
        update(params, grads)
    return (time.perf_counter() - start) / calls


def _params_identical(a, b):
    """Same keys, dtypes, shapes and bytes."""
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if not np.array_equal(np.ascontiguousarray(x).view(np.uint8),
                              np.ascontiguousarray(y).view(np.uint8)):
            return False
    return True


def _layout_padding(rng):
    """Memory of random sizes to allocate (and keep) just before a build's arrays and optimizer,
    so that where those land differs from one allocation group to the next: a block of pages of
    its own (never touched, so it costs no memory), a block on the heap, and small objects.
    Without it, each group of a case gets the same addresses as the one before, and the build
    that allocates first gets the same relative layout every time: identical builds measured
    0.90 in the groups where one allocated first and 1.10 where the other did (Adam float32
    1e6; Momentum float32 1e5 +-15%), and a median over such a mixture lands anywhere in
    between."""
    return (np.empty(int(rng.integers(0, 512)) * 4096 + MMAP_THRESHOLD, np.uint8),
            bytearray(int(rng.integers(0, MMAP_THRESHOLD // 64 - 1)) * 64),
            [bytes(int(rng.integers(1, 512))) for _ in range(int(rng.integers(0, 64)))])


def measure_case(case, pairs, rounds, min_seconds=0.0, batch_seconds=BATCH_SECONDS,
                 best_of=BEST_OF, seed=None, threads=1):
    """Paired, interleaved timing of one case; returns a dict for the table and the JSON.

    The case's arrays are made once. Then allocation groups of ROUNDS_PER_GROUP rounds, until
    there were `rounds` rounds and min_seconds have passed (so cheap cases get more groups,
    which matters: on calls under a microsecond, each allocation's layout can favour one build
    by 10%, and only many of them average that out). Group g runs copy pair g % len(pairs) (see
    COPIES): each build gets fresh copies of the arrays and a new optimizer (so fresh pages,
    plan and state), after random padding (_layout_padding; `seed` for the generator, None
    for fresh entropy: a fixed seed gives every run the same layouts), the two allocating and
    warming up in turn, old first in even groups and new first in odd ones.

    A round: the build that goes first alternates (first_side: in even groups old first in the
    group's first round, new in its second, and so on; in odd groups the other way round, as
    with the allocation order); the builds time `best_of`
    sub-batches each, interleaved (first, second, first, ...), of the same number of calls,
    about batch_seconds / best_of long; each build's time in the round is its fastest
    sub-batch, which drops the sub-batches another process interrupted; the round's ratio is
    new / old of those. Where a call is short (PRIMER_SECONDS), the caches are evened out: each
    sub-batch follows one untimed call of its own build (its arrays are in the caches as far as
    they fit), and each round begins with an untimed call of the build that goes second, so
    that no timed sub-batch ever follows its own build's previous one. Without the first, the
    build that follows itself across two rounds started warm and the other cold (up to 10% at
    1e5); without the second, that still held for cases the size of the last-level cache
    (Adam float64 1e6: the build going first 20% faster in the second round of each group).

    The sub-batch size is chosen once per case, from the fastest of CALIBRATION_CALLS timed
    calls of each build, averaged over the two. Both builds make the same calls from the same
    start, so their parameters must end bit-identical (checked after every group)."""
    seconds = {side: [] for side in SIDES}
    identical, calls, primer = True, None, None
    meter, waits = OthersCpuMeter(), RunQueueMeter(threads)
    rng = np.random.default_rng(seed)
    params, grads = case.workload.make_arrays(seed=0)
    began = time.perf_counter()
    group = 0
    while len(seconds["old"]) < rounds or time.perf_counter() - began < min_seconds:
        builds = pairs[group % len(pairs)]
        order = SIDES if group % 2 == 0 else SIDES[::-1]
        state, padding = {}, []
        for side in order:
            padding.append(_layout_padding(rng))
            state[side] = (getattr(builds[side], case.optimizer)().update,
                           {key: value.copy() for key, value in params.items()},
                           {key: value.copy() for key, value in grads.items()})
            _time_batch(*state[side], WARMUP_CALLS)
        if calls is None:
            fastest = {side: min(_time_batch(*state[side], 1) for _ in range(CALIBRATION_CALLS))
                       for side in order}
            one_call = sum(fastest.values()) / 2
            calls = calls_per_batch(one_call, batch_seconds / best_of)
            primer = one_call < PRIMER_SECONDS
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for round_in_group in range(ROUNDS_PER_GROUP):
                first = first_side(round_in_group, group)
                pair = (first, SIDES[1 - SIDES.index(first)])
                best = {side: math.inf for side in SIDES}
                if primer:  # so that `first` does not follow itself (see the docstring)
                    update, p, g = state[pair[1]]
                    update(p, g)
                for _ in range(best_of):
                    for side in pair:
                        update, p, g = state[side]
                        if primer:
                            update(p, g)
                        best[side] = min(best[side], _time_batch(update, p, g, calls))
                for side in SIDES:
                    seconds[side].append(best[side])
        finally:
            if gc_was_enabled:
                gc.enable()
        identical = identical and _params_identical(state["old"][1], state["new"][1])
        del state, padding
        group += 1
    del params, grads
    return {
        "case": case.title,
        "optimizer": case.optimizer,
        "dtype": np.dtype(case.workload.dtype).name,
        "workload": case.workload.kind,
        "label": case.workload.label,
        "elements": case.elements,
        "arrays": len(case.workload.shapes),
        "calls_per_sub_batch": calls,
        "sub_batches_per_round": best_of,
        "primer_call": primer,
        "allocation_groups": group,
        "bit_identical": identical,
        "others_cpu_share": meter.share(),
        "waited_share": waits.share(),
        "old_seconds_per_round": seconds["old"],
        "new_seconds_per_round": seconds["new"],
    }


def pool_processes(measured, threads=1):
    """One case's measurements from each process (measure_case's dicts) -> the case's result:
    every process's rounds pooled and summarised (summarise_rounds), with each process's own
    median ratio (per_process_ratio: a process whose layout favours one build stands out)."""
    first = measured[0]
    old = [seconds for m in measured for seconds in m["old_seconds_per_round"]]
    new = [seconds for m in measured for seconds in m["new_seconds_per_round"]]
    result = summarise_rounds(old, new)
    def mean(key):
        values = [m.get(key) for m in measured if m.get(key) is not None]
        return sum(values) / len(values) if values else None

    result.update({key: first[key] for key in ("case", "optimizer", "dtype", "workload",
                                               "label", "elements", "arrays",
                                               "sub_batches_per_round")})
    result.update({
        "calls_per_sub_batch": first["calls_per_sub_batch"],
        "calls_per_sub_batch_by_process": [m["calls_per_sub_batch"] for m in measured],
        "primer_call": [m["primer_call"] for m in measured],
        "allocation_groups": sum(m["allocation_groups"] for m in measured),
        "bit_identical": all(m["bit_identical"] for m in measured),
        "others_cpu_share": mean("others_cpu_share"),
        "waited_share": mean("waited_share"),
        "verdict": verdict(result["ratio"], result["ratio_ci"], waited=mean("waited_share"),
                           threads=threads),
        "per_process_ratio": [float(np.median(np.divide(m["new_seconds_per_round"],
                                                        m["old_seconds_per_round"])))
                              for m in measured],
        "old_seconds_per_round": old,
        "new_seconds_per_round": new,
        "process_of_round": [index for index, m in enumerate(measured)
                             for _ in m["old_seconds_per_round"]],
    })
    return result


class OthersCpuMeter:
    """Other processes' share of the machine's CPU since creation: busy time from /proc/stat
    minus this process's CPU time, over wall time x cores (None without /proc/stat)."""

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        try:
            with open("/proc/stat") as stat:
                fields = [int(value) for value in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        return time.perf_counter(), busy, sum(os.times()[:4])

    def share(self):
        end = self._snapshot()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return min(1.0, max(0.0, others / ((end[0] - self.start[0]) * (os.cpu_count() or 1))))


class RunQueueMeter:
    """How long this process's threads (the caller and fastopt's workers) were ready to run but
    waiting for a CPU since creation, as a share of wall time x `threads`: from
    /proc/self/task/*/schedstat (Linux; share() is None elsewhere). Unlike the others' CPU
    share, this says directly whether the timings were held up by the scheduler: with every
    core threaded and another process busy, a threaded update() waits for a time slice
    (milliseconds) and both builds then measure the scheduler, equally."""

    def __init__(self, threads):
        self.threads = threads
        self.start = (time.perf_counter(), self._waited())

    @staticmethod
    def _waited():
        total = 0
        try:
            tasks = os.listdir("/proc/self/task")
            for task in tasks:
                try:
                    with open(f"/proc/self/task/{task}/schedstat") as stat:
                        total += int(stat.read().split()[1])
                except FileNotFoundError:  # the thread ended meanwhile
                    continue
        except (OSError, IndexError, ValueError):
            return None
        return total / 1e9

    def share(self):
        end = (time.perf_counter(), self._waited())
        if self.start[1] is None or end[1] is None or end[0] <= self.start[0]:
            return None
        return max(0.0, (end[1] - self.start[1]) / ((end[0] - self.start[0]) * self.threads))


def set_thread_backoff(modules, enabled):
    """Switch the engine's thread back-off on or off in every copy, where all have
    _kernels.set_thread_backoff; returns a description for the report.

    With back-off on, a plan whose threaded step took longer than one thread would have runs
    on one thread for the next 1, 2, 4, ... 1024 steps. Memory-bound cases (float64 1e6 here)
    go back and forth even on a quiet machine, each build's plan at its own point of that
    cycle: identical builds then measured 0.73-1.29 between allocation groups. Off, every step
    above the parallel threshold runs threaded, alike in both builds."""
    setters = [getattr(getattr(module, "_kernels", None), "set_thread_backoff", None)
               for module in modules]
    if not all(callable(setter) for setter in setters):
        return "as built (a build has no _kernels.set_thread_backoff)"
    for setter in setters:
        setter(bool(enabled))
    return "on in both builds" if enabled else "off in both builds"


def same_heap_layout(threshold=MMAP_THRESHOLD):
    """glibc: from now on every allocation of `threshold` bytes or more gets pages of its own
    (mallopt M_MMAP_THRESHOLD, which also stops glibc from raising the threshold as large
    blocks are freed). Otherwise whether an array lands in a reused hole of the heap, at its
    top or in a mapping of its own depends on what was freed before, and the build that
    allocates second gets a systematically different layout (identical builds: Adam float32
    1e5 at 0.92-0.95). Returns True if set (False off glibc)."""
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_MMAP_THRESHOLD = -3
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


# ---- output -----------------------------------------------------------------------------------

def load_average():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _format_load(load):
    return "n/a" if load is None else " ".join(f"{value:.2f}" for value in load)


def _format_share(share):
    return "n/a" if share is None else f"{100 * share:.0f}%"


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


TABLE = (  # heading, width, result -> text
    ("case", 28, lambda r: r["case"]),
    ("old", 9, lambda r: format_seconds(r["old_median"])),
    ("new", 9, lambda r: format_seconds(r["new_median"])),
    ("new/old", 7, lambda r: f"{r['ratio']:.3f}"),
    ("95% CI", 11, lambda r: f"{r['ratio_ci'][0]:.3f}-{r['ratio_ci'][1]:.3f}"),
    ("per-round", 11, lambda r: f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}"),
    ("calls", 5, lambda r: str(r["calls_per_sub_batch"])),
    ("others", 6, lambda r: _format_share(r["others_cpu_share"])
     + ("!" if (r["others_cpu_share"] or 0) >= BUSY_SHARE else "")),
    ("wait", 5, lambda r: _format_share(r.get("waited_share"))),
    ("bits", 4, lambda r: "same" if r["bit_identical"] else "DIFF"),
    ("verdict", 7, lambda r: r["verdict"]),
)


def print_table(results, out=sys.stdout):
    def line(cells):
        return "  ".join(text.ljust(width) if index == 0 else text.rjust(width)
                         for index, (text, (_, width, _)) in enumerate(zip(cells, TABLE)))

    print(line([heading for heading, _, _ in TABLE]), file=out)
    for result in results:
        print(line([text(result) for _, _, text in TABLE]), file=out)


def print_header(info, out=sys.stdout):
    print(f"compare_builds: {info['cpu']}, {info['cores']} cores, {info['threads']} threads "
          f"for both; Python {info['python']}, NumPy {info['numpy']}", file=out)
    for side in SIDES:
        print(f"{side}: {info[side]}", file=out)
    for note in info["build_notes"]:
        print(f"note: {note}", file=out)
    print(f"{info['rounds']} paired rounds per case at least, and {info['min_seconds']:g} s, in "
          f"{info['processes']} processes one after the other, {ROUNDS_PER_GROUP} rounds per "
          f"allocation group, {info['copies']} copies of each build; per round and build "
          f"~{1e3 * info['batch_seconds']:g} ms of calls as the best of {info['best_of']} "
          "interleaved sub-batches; load average before: "
          f"{_format_load(info['load_average_before'])} on {info['cores']} cores", file=out)
    out.flush()


def print_builds(info, out=sys.stdout):
    for side in SIDES:
        build = info["build_info"][side]
        print(f"{side} build: " + "; ".join(
            f"{key} {' '.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
            for key, value in build.items()), file=out)
        print(f"  {len(info['kernels_files'][side])} copies per process, e.g. "
              f"{info['kernels_files'][side][0]}", file=out)
    simd = {side: info["build_info"][side].get("simd") for side in SIDES}
    if simd["old"] != simd["new"]:
        print(f"note: the builds run different SIMD paths: old {simd['old']}, new "
              f"{simd['new']}", file=out)
    print(f"thread back-off: {info['thread_backoff']}; malloc: "
          + (f"blocks from {info['mmap_threshold'] // 1024} KiB get pages of their own"
             if info["mmap_threshold"] else "as is"), file=out)
    print("columns: old, new = median time per update(); new/old = median over rounds of the "
          "per-round ratio; 95% CI = of that median; per-round = min-max of the per-round "
          "ratios; calls = per sub-batch; others = other processes' share of the CPU during "
          "the case; wait = share of the time our threads waited for a CPU; bits = parameters "
          "after the run, old vs new; verdict: ok = new/old in "
          f"{BAND[0]:.2f}-{BAND[1]:.2f}, '?' = outside but the CI reaches the band", file=out)


def print_summary(results, info, out=sys.stdout):
    inside, total = band_count(results)
    unsure = sum(1 for r in results if r["verdict"].endswith("?"))
    differ = [r["case"] for r in results if not r["bit_identical"]]
    ratios = np.array([r["ratio"] for r in results])
    spreads = np.array([r["ratio_q3"] - r["ratio_q1"] for r in results])
    print(f"summary: {inside} of {total} cases inside {BAND[0]:.2f}-{BAND[1]:.2f}"
          + (f" ({unsure} more outside but within noise of it)" if unsure else "")
          + f"; new/old medians from {ratios.min():.3f} to {ratios.max():.3f}, median "
          f"{np.median(ratios):.3f}, rms distance from 1: {rms_distance(ratios):.1%}; "
          f"per-round interquartile range {np.median(spreads):.3f} (median over cases)", file=out)
    print("  parameters bit-identical in every case" if not differ else
          f"  PARAMETERS DIFFER in {len(differ)} cases: {', '.join(differ)}", file=out)
    for word in ("SLOWER", "slower?", "FASTER", "faster?", "busy"):
        names = [f"{r['case']} ({r['ratio']:.3f})" for r in results if r["verdict"] == word]
        if names:
            print(f"  {word}: {', '.join(names)}", file=out)
    print(f"load average (1, 5, 15 min): {_format_load(info['load_average_before'])} before, "
          f"{_format_load(info['load_average_after'])} after, on {info['cores']} cores; "
          f"other processes took {_format_share(info['others_cpu_share'])} of the CPU while "
          f"measuring ({info['measure_seconds']:.0f} s)", file=out)
    busy = [r for r in results if (r["others_cpu_share"] or 0) >= BUSY_SHARE]
    if busy:
        print(f"  {len(busy)} cases ran while others took >= {100 * BUSY_SHARE:.0f}% of the "
              "CPU (marked !)", file=out)
    if any(r["verdict"] == "busy" for r in results):
        print(f"  'busy': our threads waited for a CPU >= {100 * BUSY_WAIT:.0f}% of the time, so "
              "threaded updates waited for time slices in both builds alike and the ratio says "
              "nothing: rerun on a quieter machine, or compare the kernels with --threads 1",
              file=out)


# ---- the command ------------------------------------------------------------------------------

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _machine_threads():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description="Build two versions of fastopt side by side and time them in one process, "
        "interleaved (the top of this file says more).")
    parser.add_argument("--old", required=True, metavar="REV",
                        help="the revision to compare against (HEAD, main, a sha, ...)")
    new = parser.add_mutually_exclusive_group()
    new.add_argument("--new", metavar="REV", help="the revision to measure")
    new.add_argument("--new-tree", action="store_true",
                     help="measure the working tree with its uncommitted changes (the default)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: {QUICK_ROUNDS} rounds per case at least and "
                        f"{QUICK_MIN_SECONDS:g} s, in {QUICK_PROCESSES} processes: about 1.5 "
                        "minutes")
    parser.add_argument("--rounds", type=_positive_int, metavar="N",
                        help="paired rounds per case at least (default "
                        f"{DEFAULT_ROUNDS}, --quick {QUICK_ROUNDS})")
    parser.add_argument("--min-time", type=_positive_float, metavar="SECONDS",
                        help="measuring time per case at least, over all processes: cheap cases "
                        f"run more rounds (default {MIN_SECONDS:g}, --quick "
                        f"{QUICK_MIN_SECONDS:g})")
    parser.add_argument("--copies", type=_positive_int, default=COPIES, metavar="N",
                        help=f"copies of each build loaded, used in turn (default {COPIES})")
    parser.add_argument("--processes", type=_positive_int, metavar="N",
                        help="measuring processes, one after the other, sharing the rounds "
                        f"(default {PROCESSES}, --quick {QUICK_PROCESSES})")
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="threads for both builds (default: this machine's cores, "
                        f"{_machine_threads()} here)")
    parser.add_argument("--cases", metavar="TEXT",
                        help="only the cases whose title contains one of these "
                        "comma-separated strings (case-insensitive), e.g. 'adam float32'")
    parser.add_argument("--batch-ms", type=_positive_float, default=1e3 * BATCH_SECONDS,
                        metavar="MS", help="each build's timed calls per round (default "
                        f"{1e3 * BATCH_SECONDS:g} ms; at least one call per sub-batch)")
    parser.add_argument("--best-of", type=_positive_int, default=BEST_OF, metavar="K",
                        help="sub-batches per build and round, interleaved; the fastest counts "
                        f"(default {BEST_OF}; 1: one plain batch per build and round)")
    parser.add_argument("--backoff", choices=("off", "on"), default="off",
                        help="the engine's thread back-off while measuring: off in both builds "
                        "(the default; needs _kernels.set_thread_backoff) or on, as users run "
                        "it, which makes each build's speed depend on its own history of "
                        "slow threaded steps (see set_thread_backoff)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (see same_heap_layout)")
    parser.add_argument("--json", metavar="PATH", help="write every number as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder with the builds (its path is printed)")
    return parser.parse_args(argv)


def select_cases(cases, text):
    wanted = [part.strip().lower() for part in text.split(",") if part.strip()]
    return [case for case in cases if any(part in case.title.lower() for part in wanted)]


def measure_in_this_process(settings):
    """The measuring half, in one process: load every copy of both builds (load_order, flipped
    in odd processes), check them (check_separate), read the cases from the new build, and
    measure each case. settings: what main passes (folders, threads, rounds, min_seconds...).
    Returns a JSON-able dict: what the builds say about themselves and each case's
    measure_case dict."""
    fixed_layout = False if settings["default_malloc"] else same_heap_layout()
    flip = settings["process_index"] % 2 == 1
    pairs = load_copies(settings["folders"], flip)
    files = check_separate(pairs, settings["folders"])
    defs = benchmark_definitions(pairs[0]["new"].__name__)
    modules = [pair[side] for pair in pairs for side in SIDES]
    for module in modules:
        module.set_num_threads(settings["threads"])
    backoff = set_thread_backoff(modules, settings["backoff"] == "on")
    cases = plan_workloads(defs)
    if settings["cases"]:
        cases = select_cases(cases, settings["cases"])
    label = (f"process {settings['process_index'] + 1}/{settings['processes']} "
             if settings["processes"] > 1 else "")
    measured = []
    for index, case in enumerate(cases):
        print(f"{label}[{index + 1}/{len(cases)}] {case.title}", file=sys.stderr, flush=True)
        measured.append(measure_case(case, pairs, settings["rounds"], settings["min_seconds"],
                                     settings["batch_seconds"], settings["best_of"],
                                     threads=settings["threads"]))
    return {
        "kernels_files": files,
        "load_order": [f"{side}{index}" for side, index in load_order(len(pairs), flip)],
        "build_info": {side: pairs[0][side].build_info() for side in SIDES},
        "thread_backoff": backoff,
        "mmap_threshold": MMAP_THRESHOLD if fixed_layout else None,
        "cases": measured,
    }


def run_processes(settings, processes, work):
    """measure_in_this_process in `processes` processes one after the other (this one when
    processes == 1), the rounds and the measuring time shared among them. Each process lays
    out its code and objects anew (address-space randomisation), so a layout that favours one
    build in one process is outvoted by the others. Returns their results, in order."""
    rounds = split_evenly(settings["rounds"], processes)
    results = []
    for index in range(len(rounds)):
        mine = dict(settings, process_index=index, processes=len(rounds),
                    rounds=rounds[index],
                    min_seconds=settings["min_seconds"] / len(rounds))
        if len(rounds) == 1:
            results.append(measure_in_this_process(mine))
            continue
        path = os.path.join(work, f"process-{index}.json")
        mine["output"] = path
        with open(path, "w") as stream:
            json.dump(mine, stream)
        subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", path],
                       check=True)
        with open(path) as stream:
            results.append(json.load(stream))
    return results


def worker(path):
    """`--worker SETTINGS.json`: measure_in_this_process with the settings in that file, its
    result written to settings["output"]."""
    with open(path) as stream:
        settings = json.load(stream)
    result = measure_in_this_process(settings)
    with open(settings["output"], "w") as stream:
        json.dump(result, stream)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"] and len(argv) == 2:
        return worker(argv[1])
    args = parse_arguments(argv)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    min_seconds = args.min_time if args.min_time is not None else (
        QUICK_MIN_SECONDS if args.quick else MIN_SECONDS)
    processes = min(rounds, args.processes or (QUICK_PROCESSES if args.quick else PROCESSES))
    threads = args.threads or _machine_threads()
    began = time.perf_counter()
    try:
        old_sha, old_subject = describe_revision(args.old)
        new_sha, new_subject = describe_revision(args.new) if args.new else (None, None)
    except subprocess.CalledProcessError as error:
        print(f"compare_builds: error: unknown revision ({error.stderr.decode().strip()})",
              file=sys.stderr)
        return 2

    work = tempfile.mkdtemp(prefix="fastopt-compare-")
    try:
        trees = {side: os.path.join(work, side) for side in SIDES}
        export_revision(old_sha, trees["old"])
        sources = {"old": f"{old_subject} ({old_sha})"}
        if args.new:
            export_revision(new_sha, trees["new"])
            sources["new"] = f"{new_subject} ({new_sha})"
        else:
            changed = export_working_tree(trees["new"])
            sources["new"] = (f"working tree of {ROOT} (HEAD {describe_revision('HEAD')[1]}; "
                              f"{changed} files changed or untracked)")
        print(f"building both in {work} ...", file=sys.stderr, flush=True)
        build_seconds, build_notes = build_both(trees, work)
        folders = {side: make_copies(trees[side], os.path.join(work, f"{side}-copies"),
                                     args.copies) for side in SIDES}
        settings = {
            "folders": folders, "threads": threads, "rounds": rounds,
            "min_seconds": min_seconds,
            "batch_seconds": args.batch_ms / 1e3, "best_of": args.best_of,
            "backoff": args.backoff, "default_malloc": args.default_malloc,
            "cases": args.cases,
        }
        info = {
            "repository": ROOT, "old": sources["old"], "new": sources["new"],
            "build_seconds": build_seconds, "build_notes": build_notes,
            "cpu": _cpu_model(), "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "numpy": np.__version__,
            "rounds": rounds, "min_seconds": min_seconds, "copies": args.copies,
            "processes": processes, "batch_seconds": args.batch_ms / 1e3,
            "best_of": args.best_of, "warmup_calls": WARMUP_CALLS, "band": BAND,
            "load_average_before": load_average(),
        }
        print_header(info)

        run_meter = OthersCpuMeter()
        measure_began = time.perf_counter()
        per_process = run_processes(settings, processes, work)
        info["measure_seconds"] = time.perf_counter() - measure_began
        info["others_cpu_share"] = run_meter.share()
        info["load_average_after"] = load_average()
        for key in ("kernels_files", "build_info", "thread_backoff", "mmap_threshold"):
            info[key] = per_process[0][key]
        info["load_orders"] = [result["load_order"] for result in per_process]
        if not per_process[0]["cases"]:
            print(f"compare_builds: error: no case matches {args.cases!r}", file=sys.stderr)
            return 2
        titles = [[case["case"] for case in result["cases"]] for result in per_process]
        assert all(t == titles[0] for t in titles), "the processes ran different cases"
        results = [pool_processes([result["cases"][index] for result in per_process], threads)
                   for index in range(len(titles[0]))]
        info["total_seconds"] = time.perf_counter() - began

        print()
        print_builds(info)
        print()
        print_table(results)
        print()
        print_summary(results, info)
        print(f"total {info['total_seconds']:.0f} s (builds {build_seconds:.0f} s)")
        if args.json:
            with open(args.json, "w") as stream:
                json.dump({"info": info, "results": results}, stream, indent=1)
            print(f"wrote {args.json}")
        inside, total = band_count(results)
        identical = all(r["bit_identical"] for r in results)
        return 0 if inside == total and identical else 1
    except (RuntimeError, subprocess.CalledProcessError) as error:
        print(f"compare_builds: error: {error}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
