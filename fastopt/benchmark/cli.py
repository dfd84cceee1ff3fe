"""`fastopt bench`: its options (add_arguments) and the run (run); fastopt.cli calls both."""
import argparse
import json
import math
import sys

import numpy as np

import fastopt

from .implementations import FASTOPT, LIMIT, NUMPY, PEERS, load_peers
from .report import (Progress, machine_info, print_header, print_table, print_targets,
                     write_plot)
from .targets import default_targets_file, evaluate_targets, load_targets
from .timing import (BATCH_SECONDS, BUSY_CASE_SHARE, RETRY_BUDGET_SECONDS, WARMUP_CALLS,
                     OthersCpuMeter, measure_case_retrying, others_warning)
from .workloads import DTYPES, WORKLOAD_KINDS, format_count, optimizer_names, plan_cases

DEFAULT_SIZES = (1, 1_000, 100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (1, 1_000, 100_000, 1_000_000)
DEFAULT_MIN_TIME = 0.8  # seconds of measurement per case
QUICK_MIN_TIME = 0.15
DEFAULT_REPEAT = 5  # rounds per case at least (each implementation runs one batch per round)
QUICK_REPEAT = 3


DEFAULT_RETRIES = 2  # more measurements at most of a case disturbed by other processes


def _optimizer_list(text):
    registered = optimizer_names()
    by_lower = {name.lower(): name for name in registered}
    names = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item.lower() == "all":
            names += registered
        elif item.lower() in by_lower:
            names.append(by_lower[item.lower()])
        else:
            raise argparse.ArgumentTypeError(
                f"unknown optimizer {item!r} (choose from {', '.join(registered)}, or all)")
    if not names:
        raise argparse.ArgumentTypeError("give at least one optimizer")
    return tuple(dict.fromkeys(names))


def _size_list(text):
    sizes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not (value >= 1 and value == int(value)):
            raise argparse.ArgumentTypeError(
                f"{item!r} is not a whole number of elements >= 1 (write 1000 or 1e3)")
        sizes.append(int(value))
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size")
    return tuple(dict.fromkeys(sizes))


def _choice_list(choices, what):
    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if items == ["none"]:
            return ()
        if items == ["all"]:
            return tuple(choices)
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, unknown))} (choose from "
                f"{', '.join(choices)}, all or none)")
        return tuple(dict.fromkeys(items))

    return parse


def _positive(kind, allow_zero=False):
    """An argparse type: a number of the given kind, > 0 (or >= 0 with allow_zero)."""
    bound = ">= 0" if allow_zero else "> 0"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not (value >= 0 if allow_zero else value > 0):
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
        return value

    return parse


def add_arguments(parser):
    """The options of `fastopt bench`."""
    registered = optimizer_names()
    parser.add_argument("--optimizers", type=_optimizer_list, default=registered,
                        metavar="LIST", help="comma-separated names, case-insensitive "
                        f"(default: all, the optimizers fastopt.optimizers.OPTIMIZERS registers: "
                        f"{','.join(registered)})")
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="both",
                        help="dtype of the single-array cases (default: both); the "
                        "multi-array workloads keep their own (mlp, book-mlp: float64; "
                        "many-small: float32)")
    parser.add_argument("--sizes", type=_size_list, default=None, metavar="LIST",
                        help="elements of the single-array cases (default: "
                        f"{','.join(map(format_count, DEFAULT_SIZES))}; "
                        f"with --quick {','.join(map(format_count, QUICK_SIZES))})")
    parser.add_argument("--workloads", type=_choice_list(WORKLOAD_KINDS, "workload"),
                        default=WORKLOAD_KINDS, metavar="LIST",
                        help="single (one array per size), mlp (the textbook's 784-40-20-10 MLP, "
                        "6 arrays), book-mlp (784-100x5-10, 14 arrays), many-small (200 arrays "
                        "of 4096); comma-separated, all or none (default: all)")
    parser.add_argument("--peers", type=_choice_list(PEERS, "peer"), default=PEERS,
                        metavar="LIST", help="torch, deepspeed, all or none "
                        "(default: all; each runs only if importable)")
    parser.add_argument("--threads", type=_positive(int), default=None, metavar="N",
                        help="threads for fastopt and torch (default: fastopt's, "
                        f"now {fastopt.get_num_threads()})")
    parser.add_argument("--simd", default=None, metavar="PATH",
                        help=f"fastopt's SIMD path (this machine: "
                        f"{', '.join(fastopt.available_simd())}; default: {fastopt.get_simd()})")
    parser.add_argument("--repeat", type=_positive(int), default=None, metavar="N",
                        help=f"rounds per case at least (default {DEFAULT_REPEAT}, "
                        f"--quick {QUICK_REPEAT})")
    parser.add_argument("--min-time", type=_positive(float), default=None, metavar="SECONDS",
                        help=f"measuring time per case at least (default {DEFAULT_MIN_TIME}, "
                        f"--quick {QUICK_MIN_TIME})")
    parser.add_argument("--retries", type=_positive(int, allow_zero=True),
                        default=DEFAULT_RETRIES, metavar="N",
                        help="measure a case again, up to N more times, when other processes "
                        f"took more than {100 * BUSY_CASE_SHARE:.0f}%% of the CPU during it; "
                        f"keep the quietest (default {DEFAULT_RETRIES}; all retries together "
                        f"at most {RETRY_BUDGET_SECONDS:.0f} s)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes (no 1e7) and shorter timing: about a minute")
    found = default_targets_file()
    parser.add_argument("--targets", metavar="FILE", default=None,
                        help="check the performance targets in this JSON file after the table "
                        "(the format: see fastopt/benchmark/targets.py). Default: the project's "
                        "own, bench/targets.json beside the fastopt package's folder, when "
                        "fastopt runs from a source checkout ("
                        + ("here: " + str(found).replace("%", "%%") if found else
                           "none here, so no targets section") + ")")
    parser.add_argument("--json", metavar="PATH", help="write machine info, every timing "
                        "and the targets as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of GB/s against size")


def run(args):
    """Run the benchmark; print the table and the targets (if any). Returns the exit code."""
    def fail(message):
        print(f"fastopt bench: error: {message}", file=sys.stderr)
        return 2

    if args.plot:
        try:
            import matplotlib  # noqa: F401  (fail before measuring, not after)
        except ImportError:
            return fail("--plot needs matplotlib (pip install matplotlib)")
    targets_file = args.targets or default_targets_file()
    try:
        targets = None if targets_file is None else load_targets(targets_file)
    except (OSError, ValueError) as error:
        return fail(f"cannot read the targets: {error}")
    try:
        if args.simd is not None:
            fastopt.set_simd(args.simd)
        if args.threads is not None:
            fastopt.set_num_threads(args.threads)
    except ValueError as error:
        return fail(str(error))
    threads = fastopt.get_num_threads()
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    min_time = args.min_time or (QUICK_MIN_TIME if args.quick else DEFAULT_MIN_TIME)
    repeat = args.repeat or (QUICK_REPEAT if args.quick else DEFAULT_REPEAT)
    dtypes = tuple(DTYPES) if args.dtype == "both" else (args.dtype,)
    cases = plan_cases(args.optimizers, dtypes, sizes, args.workloads)
    if not cases:
        return fail("nothing to run: --workloads none")

    need_deepspeed = any(case.optimizer == "Adam" and case.workload.dtype == np.float32
                         for case in cases)
    peers, peer_notes = load_peers(args.peers, threads, need_deepspeed)
    implementations = [FASTOPT, NUMPY, LIMIT] + peers
    info = machine_info(threads, [peer.describe() for peer in peers] + peer_notes)
    print_header(info, sys.stdout)
    sys.stdout.flush()

    progress = Progress(len(cases))
    run_meter = OthersCpuMeter()
    results = []
    retry_budget = RETRY_BUDGET_SECONDS
    try:
        for case in cases:
            progress.start(case.title)
            result, spent = measure_case_retrying(case, implementations, min_time, repeat,
                                                  args.retries, retry_budget)
            retry_budget -= spent
            results.append(result)
            progress.finish_case()
    finally:
        progress.close()
    info["others_cpu_share"] = run_meter.share()

    info["peers"] = [peer.describe() for peer in peers] + peer_notes  # now with torch's modes

    print(file=sys.stdout)
    print_table(results, sys.stdout)
    print(file=sys.stdout)
    for note in info["peers"]:
        print(f"peer {note}", file=sys.stdout)
    retried = sum(1 for result in results if result.tries > 1)
    if retried:
        print(f"{retried} cases measured again because other processes took over "
              f"{100 * BUSY_CASE_SHARE:.0f}% of the CPU during them (the quietest try is shown)",
              file=sys.stdout)
    warning = others_warning(info["others_cpu_share"],
                             "rows with a high 'others' share are unreliable")
    if warning:
        print(warning, file=sys.stdout)
    evaluated = []
    if targets is not None:
        evaluated = evaluate_targets(targets, results)
        print(file=sys.stdout)
        print_targets(evaluated, targets_file, sys.stdout)

    if args.json:
        document = {
            "machine": info,
            "settings": {"optimizers": list(args.optimizers), "dtypes": list(dtypes),
                         "sizes": list(sizes), "workloads": list(args.workloads),
                         "min_time": min_time, "repeat": repeat, "retries": args.retries,
                         "batch_seconds": BATCH_SECONDS, "warmup_calls": WARMUP_CALLS,
                         "targets_file": None if targets_file is None else str(targets_file)},
            "results": [result.to_json() for result in results],
            "targets": [{"description": description, "ratio": ratio, "met": met}
                        for description, ratio, met in evaluated],
        }
        with open(args.json, "w") as stream:
            json.dump(document, stream, indent=1)
        print(f"wrote {args.json}", file=sys.stdout)
    if args.plot:
        write_plot(results, args.plot)
        print(f"wrote {args.plot}", file=sys.stdout)
    return 0
