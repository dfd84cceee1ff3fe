"""Fast tests of bench/compare_builds.py's pure helpers and its import machinery.

Nothing is built or timed here (the script itself takes minutes): the helpers that summarise
and judge the ratios, the round and load orders, and loading a package under another name,
on small pure-Python packages written to a temporary folder.

    pytest bench/test_compare_builds_helpers.py
    pytest bench/test_compare_builds_helpers.py --noconftest   # without a built fastopt

(bench/conftest.py imports fastopt.benchmark, so without --noconftest fastopt must import.)
"""
import importlib.util
import os
import sys
import textwrap

import numpy as np
import pytest


def _load_script():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare_builds.py")
    spec = importlib.util.spec_from_file_location("compare_builds", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cb = _load_script()


# ---- verdicts and summaries ------------------------------------------------------------------

@pytest.mark.parametrize("ratio, expected", [
    (1.0, "ok"), (0.97, "ok"), (1.03, "ok"), (0.9701, "ok"),
    (1.0301, "SLOWER"), (1.2, "SLOWER"), (0.9699, "FASTER"), (0.5, "FASTER"),
    (float("nan"), "-"), (None, "-"),
])
def test_verdict_without_interval(ratio, expected):
    assert cb.verdict(ratio) == expected


def test_verdict_with_interval():
    assert cb.verdict(1.05, (1.04, 1.06)) == "SLOWER"  # the whole interval above the band
    assert cb.verdict(1.05, (1.02, 1.08)) == "slower?"  # it reaches into the band
    assert cb.verdict(0.95, (0.90, 0.975)) == "faster?"
    assert cb.verdict(0.95, (0.93, 0.96)) == "FASTER"
    assert cb.verdict(1.01, (0.5, 2.0)) == "ok"  # inside the band: ok, however wide
    assert cb.verdict(1.05, (1.0, 1.1), band=(0.9, 1.1)) == "ok"


def test_verdict_busy():
    # Threads that waited for a CPU a fifth of the time or more: no evidence either way.
    assert cb.verdict(1.0, (0.99, 1.01), waited=0.3, threads=2) == "busy"
    assert cb.verdict(1.2, (1.1, 1.3), waited=0.2, threads=2) == "busy"
    assert cb.verdict(1.0, (0.99, 1.01), waited=0.19, threads=2) == "ok"
    # One thread: a stalled sub-batch is just slow, and the fastest of five drops it.
    assert cb.verdict(1.0, (0.99, 1.01), waited=0.5, threads=1) == "ok"
    assert cb.verdict(1.0, waited=None, threads=2) == "ok"


@pytest.mark.parametrize("n", [1, 2, 3, 10, 20, 24, 60, 80, 1000])
def test_median_ci_ranks(n):
    low, high = cb.median_ci_ranks(n)
    assert 0 <= low <= high <= n - 1
    assert low <= (n - 1) / 2 <= high  # the interval holds the median
    if n >= 20:
        assert 0 < low and high < n - 1  # narrower than the sample


def test_median_ci_ranks_matches_the_binomial_interval():
    # n = 100: the textbook order statistics are the 40th and 61st (1-based), about.
    low, high = cb.median_ci_ranks(100)
    assert 38 <= low <= 41 and 58 <= high <= 61
    with pytest.raises(ValueError):
        cb.median_ci_ranks(0)


def test_summarise_rounds_constant_ratio():
    old = [1e-6, 2e-6, 4e-6, 3e-6]
    summary = cb.summarise_rounds(old, [1.02 * t for t in old])
    assert summary["ratio"] == pytest.approx(1.02)
    assert summary["ratio_min"] == pytest.approx(1.02)
    assert summary["ratio_max"] == pytest.approx(1.02)
    assert summary["ratio_ci"] == pytest.approx((1.02, 1.02))
    assert summary["old_median"] == pytest.approx(2.5e-6)
    assert summary["new_median"] == pytest.approx(2.55e-6)
    assert summary["rounds"] == 4
    assert summary["verdict"] == "ok"


def test_summarise_rounds_takes_the_median_of_paired_ratios():
    # Round times drift, the ratio in each round is what counts: the median of per-round
    # ratios (1.0) is not the ratio of the medians (2/3 here).
    old = [1.0, 2.0, 3.0, 10.0, 10.0]
    new = [1.0, 2.0, 3.0, 2.0, 2.0]
    summary = cb.summarise_rounds(old, new)
    assert summary["ratio"] == pytest.approx(1.0)
    assert summary["new_median"] / summary["old_median"] == pytest.approx(2 / 3)
    assert summary["ratio_min"] == pytest.approx(0.2)
    assert summary["ratio_max"] == pytest.approx(1.0)


def test_summarise_rounds_outliers_do_not_move_the_median():
    rng = np.random.default_rng(1)
    old = list(1e-5 * (1 + 0.01 * rng.standard_normal(41)))
    new = [t * 1.001 for t in old]
    new[:5] = [t * 3 for t in old[:5]]  # five rounds disturbed by another process
    summary = cb.summarise_rounds(old, new)
    assert summary["ratio"] == pytest.approx(1.001)
    assert summary["ratio_max"] == pytest.approx(3.0)
    assert summary["verdict"] == "ok"


def test_summarise_rounds_verdicts():
    old = [1.0] * 30
    assert cb.summarise_rounds(old, [1.10] * 30)["verdict"] == "SLOWER"
    assert cb.summarise_rounds(old, [0.90] * 30)["verdict"] == "FASTER"
    noisy = [0.9, 1.2] * 10 + [1.05] * 10  # median 1.05, interval reaching the band
    assert cb.summarise_rounds(old, noisy)["verdict"] == "slower?"


def test_summarise_rounds_rejects_bad_input():
    with pytest.raises(ValueError):
        cb.summarise_rounds([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        cb.summarise_rounds([], [])
    with pytest.raises(ValueError):
        cb.summarise_rounds([1.0, 0.0], [1.0, 1.0])


def test_rms_distance_and_band_count():
    assert cb.rms_distance([1.0, 1.0]) == 0.0
    assert cb.rms_distance([1.02, 1 / 1.02]) == pytest.approx(0.02)
    summaries = [{"verdict": "ok"}, {"verdict": "slower?"}, {"verdict": "ok"},
                 {"verdict": "FASTER"}]
    assert cb.band_count(summaries) == (2, 4)


def test_pool_processes():
    def measured(old, new, identical=True, share=0.0, calls=7):
        return {"case": "Adam float32 1e3", "optimizer": "Adam", "dtype": "float32",
                "workload": "single", "label": "1e3", "elements": 1000, "arrays": 1,
                "sub_batches_per_round": 5, "calls_per_sub_batch": calls, "primer_call": True,
                "allocation_groups": 2, "bit_identical": identical, "others_cpu_share": share,
                "old_seconds_per_round": old, "new_seconds_per_round": new}

    first = measured([1.0, 1.0, 1.0], [1.1, 1.1, 1.1], share=0.1)
    second = measured([2.0, 2.0], [1.8, 1.8], share=0.3, calls=8)
    third = measured([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], identical=False, share=None)
    pooled = cb.pool_processes([first, second, third], threads=2)
    assert pooled["rounds"] == 8
    assert pooled["per_process_ratio"] == pytest.approx([1.1, 0.9, 1.0])
    assert pooled["ratio"] == pytest.approx(1.0)  # one process per side of 1 is outvoted
    assert pooled["process_of_round"] == [0, 0, 0, 1, 1, 2, 2, 2]
    assert pooled["allocation_groups"] == 6
    assert pooled["calls_per_sub_batch_by_process"] == [7, 8, 7]
    assert pooled["bit_identical"] is False
    assert pooled["others_cpu_share"] == pytest.approx(0.2)
    assert pooled["case"] == "Adam float32 1e3"
    assert pooled["verdict"] == "ok" and pooled["waited_share"] is None
    first["waited_share"], second["waited_share"] = 0.3, 0.2
    assert cb.pool_processes([first, second, third], threads=2)["verdict"] == "busy"
    assert cb.pool_processes([first, second, third], threads=1)["verdict"] == "ok"


# ---- rounds, batches and load order ------------------------------------------------------------

def test_calls_per_batch():
    assert cb.calls_per_batch(1e-6, 1e-3) == 1000
    assert cb.calls_per_batch(0.4e-3, 1e-3) == 2  # rounded
    assert cb.calls_per_batch(0.05, 1e-3) == 1  # at least one call
    assert cb.calls_per_batch(0.0, 1e-3) >= 1


def test_first_side_alternates():
    assert [cb.first_side(index) for index in range(4)] == ["old", "new", "old", "new"]
    assert [cb.first_side(index, group=1) for index in range(3)] == ["new", "old", "new"]
    assert [cb.first_side(0, group) for group in range(4)] == ["old", "new", "old", "new"]


@pytest.mark.parametrize("total, parts", [(10, 4), (80, 4), (24, 3), (3, 5), (1, 1), (7, 7)])
def test_split_evenly(total, parts):
    shares = cb.split_evenly(total, parts)
    assert sum(shares) == total
    assert len(shares) == min(total, parts)
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)
    assert cb.split_evenly(10, 4) == [3, 3, 2, 2]
    with pytest.raises(ValueError):
        cb.split_evenly(0, 1)


def test_load_order():
    order = cb.load_order(4)
    assert order == [("old", 0), ("new", 0), ("new", 1), ("old", 1),
                     ("old", 2), ("new", 2), ("new", 3), ("old", 3)]
    assert sorted(order) == sorted((side, index) for side in cb.SIDES for index in range(4))
    flipped = cb.load_order(4, flip=True)
    assert flipped[:2] == [("new", 0), ("old", 0)]
    # Over the two, each build is loaded first in each pair equally often.
    firsts = [order[i][0] for i in range(0, 8, 2)] + [flipped[i][0] for i in range(0, 8, 2)]
    assert firsts.count("old") == firsts.count("new")


@pytest.mark.parametrize("seconds, text", [(812e-9, "812 ns"), (1.634e-3, "1.63 ms"),
                                           (25e-6, "25 us"), (2.5, "2.5 s"), (None, "-")])
def test_format_seconds(seconds, text):
    assert cb.format_seconds(seconds) == text


# ---- workloads ---------------------------------------------------------------------------------

class _Workload:
    def __init__(self, kind, label, shapes, dtype):
        self.kind, self.label, self.shapes, self.dtype = kind, label, shapes, np.dtype(dtype)


class _Case:
    def __init__(self, optimizer, workload):
        self.optimizer, self.workload = optimizer, workload
        self.title = f"{optimizer} {workload.dtype.name} {workload.label}"


def _fake_definitions():
    multi = {"many-small": _Workload("many-small", "200 x 4096", ((4096,),) * 200, "float32")}

    def plan_cases(optimizers, dtypes, sizes, kinds):
        cases = []
        for optimizer in optimizers:
            cases += [_Case(optimizer, _Workload("single", str(size), ((size,),), dtype))
                      for dtype in dtypes for size in sizes]
            cases += [_Case(optimizer, multi[kind]) for kind in kinds if kind != "single"]
        return cases

    return {"Workload": _Workload, "plan_cases": plan_cases, "MULTI_ARRAY_WORKLOADS": multi,
            "QUICK_SIZES": (1, 1000), "OPTIMIZERS": ("SGD", "Adam")}


def test_plan_workloads_adds_the_large_cases_once():
    cases = cb.plan_workloads(_fake_definitions())
    titles = [case.title for case in cases]
    assert len(titles) == len(set(titles))  # many-small Adam is in the quick set already
    assert titles[:5] == ["SGD float32 1", "SGD float32 1000", "SGD float64 1",
                          "SGD float64 1000", "SGD float32 200 x 4096"]
    assert titles[-4:] == ["SGD float32 1e7", "SGD float64 1e7", "Adam float32 1e7",
                           "Adam float64 1e7"]
    assert "Adam float32 200 x 4096" in titles
    large = [case for case in cases if case.title.endswith("1e7")]
    assert all(case.elements == 10_000_000 for case in large)
    assert [case.title for case in cb.select_cases(cases, "adam FLOAT32, sgd float64 1e7")] == [
        "Adam float32 1", "Adam float32 1000", "Adam float32 200 x 4096", "SGD float64 1e7",
        "Adam float32 1e7"]


# ---- loading a package under another name ------------------------------------------------------

def _write_package(folder, files):
    for name, text in files.items():
        path = os.path.join(folder, "fastopt", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as stream:
            stream.write(textwrap.dedent(text))


@pytest.fixture
def forget_modules():
    """Remove the test's packages from sys.modules afterwards."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_two_copies_import_side_by_side(tmp_path, forget_modules):
    files = {
        "__init__.py": """
            from . import _kernels
            from .optimizers import SGD
            """,
        "_kernels.py": "WHERE = __file__\n",
        "optimizers.py": """
            from . import _kernels
            import fastopt  # absolute, as fastopt/benchmark.py does

            class SGD:
                kernels = _kernels
                package = fastopt
            """,
    }
    folders = {}
    for side in ("a", "b"):
        folders[side] = str(tmp_path / side)
        _write_package(folders[side], files)
    def installed():  # an installed fastopt, if the conftest imported one: left as it was
        return {name: module for name, module in sys.modules.items()
                if name == "fastopt" or name.startswith("fastopt.")}

    before = installed()
    a = cb.load_build(folders["a"], "fastopt_testa")
    b = cb.load_build(folders["b"], "fastopt_testb")
    assert a is not b and a._kernels is not b._kernels
    assert a._kernels.WHERE.startswith(folders["a"] + os.sep)
    assert b._kernels.WHERE.startswith(folders["b"] + os.sep)
    assert a.SGD.kernels is a._kernels and b.SGD.kernels is b._kernels
    assert a.SGD.package is a and b.SGD.package is b  # `import fastopt` meant its own copy
    assert sys.modules["fastopt_testa.optimizers"] is a.optimizers
    assert a.__spec__.name == "fastopt_testa"
    assert installed() == before


def test_absolute_imports_as_puts_back_an_installed_fastopt(tmp_path, forget_modules):
    _write_package(str(tmp_path / "c"), {"__init__.py": "import fastopt\nME = fastopt\n"})
    sentinel = type(sys)("fastopt")
    saved = sys.modules.get("fastopt")
    sys.modules["fastopt"] = sentinel
    try:
        copy = cb.load_build(str(tmp_path / "c"), "fastopt_testc")
        assert copy.ME is copy
        assert sys.modules["fastopt"] is sentinel
    finally:
        if saved is None:
            sys.modules.pop("fastopt", None)
        else:
            sys.modules["fastopt"] = saved


@pytest.mark.parametrize("layout", ["module", "package re-exporting", "package"])
def test_benchmark_definitions_tolerates_a_package(tmp_path, forget_modules, layout):
    names = """
        import fastopt
        OPTIMIZERS = ("SGD",)
        QUICK_SIZES = (1,)
        MULTI_ARRAY_WORKLOADS = {}
        class Workload: pass
        def plan_cases(*args): return []
        """
    if layout == "module":
        files = {"__init__.py": "", "benchmark.py": names}
    elif layout == "package re-exporting":
        files = {"__init__.py": "", "benchmark/__init__.py": "from .workloads import *\n",
                 "benchmark/workloads.py": names}
    else:
        files = {"__init__.py": "", "benchmark/__init__.py": "",
                 "benchmark/workloads.py": names, "benchmark/cli.py": "X = 1\n"}
    _write_package(str(tmp_path), files)
    name = "fastopt_test_" + layout.replace(" ", "_").replace("-", "_")
    package = cb.load_build(str(tmp_path), name)
    found = cb.benchmark_definitions(name)
    assert set(cb.BENCHMARK_NAMES) <= set(found)
    assert found["OPTIMIZERS"] == ("SGD",)
    module = sys.modules[found["plan_cases"].__module__]
    assert module.fastopt is package
    assert sys.modules.get("fastopt") is not package

