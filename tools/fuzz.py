#!/usr/bin/env python3
"""Run fastopt's differential fuzzer (tests/test_fuzz.py) for long: many more examples than CI.

The properties and strategies are those of tests/test_fuzz.py (CI runs them with its short
profile); this command loads that file with the long profile (FASTOPT_FUZZ_PROFILE=long), runs
each property for --examples generated cases from --seed (random if not given, always printed,
so a run can be repeated), and prints how many cases ran, how fast, and what they covered.

A failing property prints Hypothesis' minimal falsifying case, and this command writes it to a
file (--failures, default fuzz-failures/) as a Python literal that --replay runs again alone,
without Hypothesis, with the full traceback:

  python tools/fuzz.py --examples 20000 [--seed N] [--property optimizer|overlap|global_norm]
  python tools/fuzz.py --replay fuzz-failures/optimizer-seed123.txt

It tests the fastopt that `import fastopt` finds: an installed one, or else this checkout built
in place (python setup.py build_ext --inplace). Exit status: 0 if every property held, 1 if one
failed, 2 on misuse.
"""
import argparse
import ast
import importlib.util
import os
import random
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests", "test_fuzz.py")
PROPERTIES = {"optimizer": "test_optimizer_matches_reference",
              "overlap": "test_overlapping_arrays_are_refused_and_change_nothing",
              "global_norm": "test_global_norm_matches_reference"}


def load_fuzz_module(examples):
    os.environ["FASTOPT_FUZZ_PROFILE"] = "long"
    os.environ["FASTOPT_FUZZ_EXAMPLES"] = str(examples)
    try:
        import fastopt  # noqa: F401  (an installed fastopt first)
    except ImportError:
        sys.path.insert(0, ROOT)  # this checkout, built in place
    spec = importlib.util.spec_from_file_location("fastopt_fuzz_properties", TESTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def replay(module, path):
    with open(path) as file:
        failure = ast.literal_eval(file.read().strip())
    print(f"replaying a case of the {failure['property']} property from {path}")
    module.RUNNERS[failure["property"]](failure["case"])
    print("passed: the case no longer fails")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20000,
                        help="generated cases per property (default 20000)")
    parser.add_argument("--seed", type=int, help="Hypothesis seed (default: a random one)")
    parser.add_argument("--property", choices=sorted(PROPERTIES), action="append",
                        help="run only this property (repeatable; default: all)")
    parser.add_argument("--failures", default="fuzz-failures",
                        help="folder for the cases of failing properties (default %(default)s)")
    parser.add_argument("--replay", metavar="FILE",
                        help="run the case saved in FILE (a failure file) and exit")
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error("--examples must be at least 1")

    module = load_fuzz_module(args.examples)
    import fastopt
    from hypothesis import seed as hypothesis_seed

    if args.replay:
        return replay(module, args.replay)

    seed = args.seed if args.seed is not None else random.randrange(2**32)
    info = fastopt.build_info()
    print(f"fastopt {info['version']} from {os.path.dirname(fastopt.__file__)}: SIMD paths "
          f"{', '.join(info['simd_available'])}, threads {info['threads']}")
    print(f"seed {seed}, {args.examples} examples per property "
          f"(repeat: python tools/fuzz.py --examples {args.examples} --seed {seed})")
    last_report = [time.perf_counter()]

    def report_progress(name):  # a line a minute, so a long run shows it is alive
        if time.perf_counter() - last_report[0] >= 60:
            last_report[0] = time.perf_counter()
            print(f"  {name}: {module.STATS[name]} cases so far", flush=True)

    module.ON_CASE = report_progress
    failed = []
    for name in args.property or list(PROPERTIES):
        test = hypothesis_seed(seed)(getattr(module, PROPERTIES[name]))
        before = module.STATS[name]
        start = time.perf_counter()
        try:
            test()
            outcome = "passed"
        except Exception as error:  # Hypothesis re-raises the minimal failing case's error
            outcome = "FAILED"
            failed.append(name)
            traceback.print_exception(error)
            for line in getattr(error, "__notes__", []):  # Python 3.10 prints no notes
                if line not in "".join(traceback.format_exception(error)):
                    print(line)
            case = module.FAILURES.get(name)
            if case is not None:
                os.makedirs(args.failures, exist_ok=True)
                path = os.path.join(args.failures, f"{name}-seed{seed}.txt")
                with open(path, "w") as file:
                    file.write(repr({"property": name, "case": case}) + "\n")
                print(f"\nthe minimal failing case is in {path}; run it alone with:\n"
                      f"  python tools/fuzz.py --replay {path}")
        seconds = time.perf_counter() - start
        cases = module.STATS[name] - before
        print(f"{name}: {outcome}, {cases} cases in {seconds:.1f} s "
              f"({cases / seconds:.0f} cases/s)", flush=True)
    covered = {k: v for k, v in sorted(module.STATS.items()) if k not in PROPERTIES}
    print("covered: " + ", ".join(f"{k}: {v}" for k, v in covered.items()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
