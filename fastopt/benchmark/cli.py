"""`fastopt bench`: its options (add_arguments) and the run (run); fastopt.cli calls both."""
import argparse
import contextlib
import json
import math
import sys

import numpy as np

import fastopt

from .cpuload import busy_process
from .implementations import FASTOPT, LIMIT, NOCLIP, NUMPY, PEERS, load_peers
from .report import (CLIP_COLUMNS_NOTE, COLUMNS_NOTE as TABLE_COLUMNS_NOTE, Progress, blas_info,
                     machine_info, print_header, print_table, print_targets, print_unsupported,
                     write_plot)
from .targets import default_targets_file, evaluate_targets, load_targets
from .timing import (BATCH_SECONDS, BUSY_CASE_SHARE, RETRY_BUDGET_SECONDS, WARMUP_CALLS,
                     OthersCpuMeter, measure_case_retrying, others_warning)
from .training import (COLUMNS_NOTE, LOOP_WORKLOADS, MODE_NAMES, ROUND_SECONDS, measure_loop,
                       print_loop_table)
from .workloads import (CLIP_MAX_GRAD_NORM, CLIP_SUFFIX, DTYPES, FAMILY_PREFIX, WORKLOAD_KINDS,
                        family_names, format_count, optimizer_names, parse_optimizer, plan_cases)

DEFAULT_SIZES = (1, 1_000, 100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (1, 1_000, 100_000, 1_000_000)
DEFAULT_MIN_TIME = 0.8  # seconds of measurement per case
QUICK_MIN_TIME = 0.15
DEFAULT_REPEAT = 5  # rounds per case at least (each implementation runs one batch per round)
QUICK_REPEAT = 3


DEFAULT_RETRIES = 2  # more measurements at most of a case disturbed by other processes

# --training-loop: per workload (three of them), the three modes together
TRAINING_LOOP_OPTIMIZERS = ("Adam",)
LOOP_MIN_TIME = 30.0
LOOP_QUICK_MIN_TIME = 6.0
LOOP_REPEAT = 20  # rounds (each mode runs ~ROUND_SECONDS per round)
LOOP_QUICK_REPEAT = 5


def _optimizer_list(text):
    """The optimizer names of --optimizers, case-insensitive: the textbook's ("adam", "all"),
    fastopt.optim's ("optim.adamw"; "optim" or "optim.all": every class), and the clipping
    variants ("optim.adamw+clip")."""
    registered = optimizer_names()
    family = family_names()
    by_lower = {name.lower(): name for name in registered + family}
    names = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        lower = item.lower()
        clip = lower.endswith(CLIP_SUFFIX)
        base = lower[:-len(CLIP_SUFFIX)] if clip else lower
        if lower == "all":
            names += registered
        elif lower in ("optim", "optim.all"):
            names += family
        elif clip and base in by_lower and by_lower[base] in family:
            names.append(by_lower[base] + CLIP_SUFFIX)
        elif not clip and lower in by_lower:
            names.append(by_lower[lower])
        else:
            raise argparse.ArgumentTypeError(_unknown_optimizer(item, registered, family))
    if not names:
        raise argparse.ArgumentTypeError("give at least one optimizer")
    return tuple(dict.fromkeys(names))


def _unknown_optimizer(item, registered, family):
    """The message for an unknown --optimizers name: what there is to choose from, and the
    fastopt.optim name it may have meant ("adamw" -> optim.AdamW)."""
    lower = item.lower()
    clip = lower.endswith(CLIP_SUFFIX)
    stem = lower.removesuffix(CLIP_SUFFIX).removeprefix(FAMILY_PREFIX)
    guess = next((name for name in family if name[len(FAMILY_PREFIX):].lower() == stem), None)
    if guess is not None:
        hint = f"; did you mean {guess}{CLIP_SUFFIX if clip else ''}?"
    elif clip:
        hint = f"; {CLIP_SUFFIX} is for fastopt.optim's classes only"
    else:
        hint = ""
    return (f"unknown optimizer {item!r} (choose from {', '.join(registered)}, or all; "
            f"fastopt.optim's: {', '.join(family)}, or optim (all of them); "
            f"optim.NAME{CLIP_SUFFIX} for its clipping variant){hint}")


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
    parser.add_argument("--optimizers", "--optimizer", type=_optimizer_list, default=None,
                        metavar="LIST", help="comma-separated names, case-insensitive "
                        f"(default: all, the optimizers fastopt.optimizers.OPTIMIZERS registers: "
                        f"{','.join(registered)}; with --training-loop: "
                        f"{','.join(TRAINING_LOOP_OPTIMIZERS)}). fastopt.optim's classes, with "
                        f"their default (torch.optim's) arguments: "
                        f"{', '.join(family_names())}, or optim (all of them); numpy is their "
                        "twin in fastopt.reference.optim, torch the torch.optim class of the "
                        "same name with the same arguments (none for Lion). optim.NAME+clip, "
                        "e.g. optim.AdamW+clip, is the clipping variant: update(params, grads, "
                        f"max_grad_norm={CLIP_MAX_GRAD_NORM:g}) on gradients rescaled to a "
                        "global norm of 10 (so the clipping bites), torch: "
                        f"torch.nn.utils.clip_grad_norm_(params, {CLIP_MAX_GRAD_NORM:g}) then "
                        "the step; no limit (its norm pass reads the gradients once more: "
                        "its GB/s counts 4 + 2 x n_states arrays), but noclip, the same "
                        "optimizer without clipping, interleaved, and clip/no, fastopt's "
                        "time over noclip's")
    parser.add_argument("--training-loop", action="store_true",
                        help="instead of the table of single update() calls, time whole "
                        "training loops (NumPy forward and backward passes, then the step) in "
                        "three modes interleaved: fastopt at its thread count, fastopt at 1 "
                        "thread, the NumPy reference; workloads: the textbook's MLP "
                        "(784-40-20-10, float64, batch 100), a wide MLP (784-1024-1024-10, "
                        "float32, batch 256), 200 arrays of 4096 float32 with a 512x512 matrix "
                        f"product between steps. About {_loop_duration(False)} (--quick: "
                        f"{_loop_duration(True)}); see fastopt/benchmark/training.py")
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
    parser.add_argument("--blas-threads", type=_positive(int), default=None, metavar="N",
                        help="threads of NumPy's BLAS while measuring (default: as it is, now "
                        f"{_blas_threads_now()}); needs threadpoolctl")
    parser.add_argument("--simd", default=None, metavar="PATH",
                        help=f"fastopt's SIMD path (this machine: "
                        f"{', '.join(fastopt.available_simd())}; default: {fastopt.get_simd()})")
    parser.add_argument("--repeat", type=_positive(int), default=None, metavar="N",
                        help=f"rounds per case at least (default {DEFAULT_REPEAT}, "
                        f"--quick {QUICK_REPEAT}; with --training-loop, rounds per workload, "
                        f"default {LOOP_REPEAT}, --quick {LOOP_QUICK_REPEAT})")
    parser.add_argument("--min-time", type=_positive(float), default=None, metavar="SECONDS",
                        help=f"measuring time per case at least (default {DEFAULT_MIN_TIME}, "
                        f"--quick {QUICK_MIN_TIME}; with --training-loop, per workload, "
                        f"default {LOOP_MIN_TIME:g}, --quick {LOOP_QUICK_MIN_TIME:g})")
    parser.add_argument("--retries", type=_positive(int, allow_zero=True),
                        default=DEFAULT_RETRIES, metavar="N",
                        help="measure a case again, up to N more times, when other processes "
                        f"took more than {100 * BUSY_CASE_SHARE:.0f}%% of the CPU during it; "
                        f"keep the quietest (default {DEFAULT_RETRIES}; all retries together "
                        f"at most {RETRY_BUDGET_SECONDS:.0f} s; none with --load)")
    parser.add_argument("--load", action="store_true",
                        help="run one busy process (a Python loop spinning on one core) for the "
                        "whole measurement, to see the numbers under competition for the CPU; "
                        "it is stopped at the end, also on Ctrl-C or an error")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes (no 1e7) and shorter timing: about a minute "
                        f"(with --training-loop: {_loop_duration(True)})")
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
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of GB/s against size (not "
                        "with --training-loop)")


def _loop_duration(quick):
    """The rough length of a --training-loop run, for the help."""
    seconds = len(LOOP_WORKLOADS) * (LOOP_QUICK_MIN_TIME if quick else LOOP_MIN_TIME) * 1.3
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} minutes"


def _blas_threads_now():
    pools = blas_info()
    if pools is None:
        return "unknown"
    return ", ".join(str(pool["threads"]) for pool in pools) or "no BLAS found"


def _blas_limits(threads):
    """A context manager holding NumPy's BLAS at `threads` threads (None: as it is)."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def run(args):
    """Run the benchmark; print the table and the targets (if any). Returns the exit code."""
    def fail(message):
        print(f"fastopt bench: error: {message}", file=sys.stderr)
        return 2

    if args.plot and args.training_loop:
        return fail("--plot draws the table of single update() calls, not --training-loop")
    if args.plot:
        try:
            import matplotlib  # noqa: F401  (fail before measuring, not after)
        except ImportError:
            return fail("--plot needs matplotlib (pip install matplotlib)")
    if args.blas_threads is not None and blas_info() is None:
        return fail("--blas-threads needs threadpoolctl (pip install threadpoolctl)")
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
    measure = _run_training_loop if args.training_loop else _run_update_table
    with _blas_limits(args.blas_threads):
        return measure(args, targets, targets_file, fail)


@contextlib.contextmanager
def _optional_load(wanted):
    """busy_process() if wanted (printing its pid), else nothing; yields the process or None."""
    if not wanted:
        yield None
        return
    with busy_process() as process:
        print(f"--load: a busy process (pid {process.pid}) spins on one core while measuring; "
              "the 'others' share includes it", file=sys.stdout, flush=True)
        yield process


def _run_update_table(args, targets, targets_file, fail):
    """The table of single update() calls (the default)."""
    threads = fastopt.get_num_threads()
    optimizers = args.optimizers or optimizer_names()
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    min_time = args.min_time or (QUICK_MIN_TIME if args.quick else DEFAULT_MIN_TIME)
    repeat = args.repeat or (QUICK_REPEAT if args.quick else DEFAULT_REPEAT)
    retries = 0 if args.load else args.retries  # the competition is wanted: no retry escapes it
    dtypes = tuple(DTYPES) if args.dtype == "both" else (args.dtype,)
    cases = plan_cases(optimizers, dtypes, sizes, args.workloads)
    if not cases:
        return fail("nothing to run: --workloads none")

    need_deepspeed = any(case.optimizer == "Adam" and case.workload.dtype == np.float32
                         for case in cases)
    peers, peer_notes = load_peers(args.peers, threads, need_deepspeed)
    clipping = any(parse_optimizer(case.optimizer).clip for case in cases)
    implementations = [FASTOPT, NUMPY, LIMIT] + peers + ([NOCLIP] if clipping else [])
    info = machine_info(threads, [peer.describe() for peer in peers] + peer_notes)
    print_header(info, sys.stdout, columns_note=TABLE_COLUMNS_NOTE
                 + (CLIP_COLUMNS_NOTE if clipping else ""))
    sys.stdout.flush()

    results = []
    retry_budget = RETRY_BUDGET_SECONDS
    with _optional_load(args.load):
        progress = Progress(len(cases))
        run_meter = OthersCpuMeter()
        try:
            for case in cases:
                progress.start(case.title)
                result, spent = measure_case_retrying(case, implementations, min_time, repeat,
                                                      retries, retry_budget)
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
    print_unsupported(results, sys.stdout)
    for note in info["peers"]:
        print(f"peer {note}", file=sys.stdout)
    retried = sum(1 for result in results if result.tries > 1)
    if retried:
        print(f"{retried} cases measured again because other processes took over "
              f"{100 * BUSY_CASE_SHARE:.0f}% of the CPU during them (the quietest try is shown)",
              file=sys.stdout)
    _print_others_warning(info["others_cpu_share"], args.load,
                          "rows with a high 'others' share are unreliable")
    evaluated = _print_targets(targets, targets_file, results)

    if args.json:
        _write_json(args.json, {
            "machine": info,
            "settings": {"optimizers": list(optimizers), "dtypes": list(dtypes),
                         "sizes": list(sizes), "workloads": list(args.workloads),
                         "min_time": min_time, "repeat": repeat, "retries": retries,
                         "batch_seconds": BATCH_SECONDS, "warmup_calls": WARMUP_CALLS,
                         "load": args.load, "blas_threads": args.blas_threads,
                         "targets_file": None if targets_file is None else str(targets_file)},
            "results": [result.to_json() for result in results],
            "targets": evaluated,
        })
    if args.plot:
        write_plot(results, args.plot)
        print(f"wrote {args.plot}", file=sys.stdout)
    return 0


def _run_training_loop(args, targets, targets_file, fail):
    """--training-loop: every training loop of fastopt.benchmark.training, in its three modes."""
    threads = fastopt.get_num_threads()
    optimizers = args.optimizers or TRAINING_LOOP_OPTIMIZERS
    min_time = args.min_time or (LOOP_QUICK_MIN_TIME if args.quick else LOOP_MIN_TIME)
    repeat = args.repeat or (LOOP_QUICK_REPEAT if args.quick else LOOP_REPEAT)
    info = machine_info(threads, [])
    print_header(info, sys.stdout, columns_note=COLUMNS_NOTE)
    family = any(parse_optimizer(optimizer).family for optimizer in optimizers)
    hyperparameters = "default" if family else "textbook's"
    print(f"training loop: {', '.join(optimizers)} with the {hyperparameters} hyperparameters; "
          f"modes {', '.join(MODE_NAMES)} in turn, {ROUND_SECONDS:g} s rounds, at least "
          f"{repeat} rounds and {min_time:g} s per workload", file=sys.stdout)
    sys.stdout.flush()

    results = []
    with _optional_load(args.load):
        jobs = [(optimizer, workload) for optimizer in optimizers
                for workload in LOOP_WORKLOADS.values()]
        progress = Progress(len(jobs))
        run_meter = OthersCpuMeter()
        try:
            for optimizer, workload in jobs:
                progress.start(f"{optimizer} {workload.label} loop")
                results.append(measure_loop(workload, optimizer, min_time, repeat))
                progress.finish_case()
        finally:
            progress.close()
        info["others_cpu_share"] = run_meter.share()

    print(file=sys.stdout)
    print_loop_table(results, sys.stdout)
    if not all(result.identical for result in results):
        print("warning: the modes' parameters differ at the end (same params: NO): they did "
              "not run the same computation", file=sys.stdout)
    _print_others_warning(info["others_cpu_share"], args.load,
                          "ratios of workloads with a high 'others' share are unreliable")
    evaluated = _print_targets(targets, targets_file, results)

    if args.json:
        _write_json(args.json, {
            "machine": info,
            "settings": {"training_loop": True, "optimizers": list(optimizers),
                         "workloads": list(LOOP_WORKLOADS), "modes": list(MODE_NAMES),
                         "min_time": min_time, "repeat": repeat, "round_seconds": ROUND_SECONDS,
                         "load": args.load, "blas_threads": args.blas_threads,
                         "targets_file": None if targets_file is None else str(targets_file)},
            "training_loop": [result.to_json() for result in results],
            "targets": evaluated,
        })
    return 0


def _print_others_warning(share, load, consequence):
    if load:
        print(f"other processes, the --load process among them, took "
              f"{'-' if share is None else f'{100 * share:.0f}%'} of this machine's CPU time "
              f"during the run", file=sys.stdout)
        return
    warning = others_warning(share, consequence)
    if warning:
        print(warning, file=sys.stdout)


def _print_targets(targets, targets_file, results):
    """Check and print the targets (if any); return them as JSON-ready dicts."""
    if targets is None:
        return []
    evaluated = evaluate_targets(targets, results)
    print(file=sys.stdout)
    print_targets(evaluated, targets_file, sys.stdout)
    return [{"description": description, "ratio": ratio, "met": met}
            for description, ratio, met in evaluated]


def _write_json(path, document):
    with open(path, "w") as stream:
        json.dump(document, stream, indent=1)
    print(f"wrote {path}", file=sys.stdout)
