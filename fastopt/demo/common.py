"""What `fastopt paths` and `fastopt compare` share: the optimizer names and classes, the
--optimizers and --lr options, the check for the demo extra, and plain-text tables."""
import argparse
import importlib
import os
import sys

from fastopt.optimizers import OPTIMIZERS

OPTIMIZER_NAMES = tuple(OPTIMIZERS)  # every registered optimizer, in definition order
BACKENDS = ("fastopt", "numpy")
DEMO_EXTRA_MESSAGE = ("install the demo extra: pip install 'fastopt[demo]' (from PyPI), or "
                      "pip install \".[demo]\" from a fastopt source checkout")


def optimizer_class(name, backend="fastopt"):
    """The optimizer class called name (one of OPTIMIZER_NAMES): from fastopt for backend
    "fastopt", from fastopt.reference (the textbook's NumPy code) for backend "numpy"."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    module = importlib.import_module("fastopt" if backend == "fastopt" else "fastopt.reference")
    return getattr(module, name)


def default_learning_rates(tuned):
    """{name: lr} for every optimizer: the demo's tuned rate where tuned ({name: lr}) has one,
    else the class's own default lr (so a newly registered optimizer runs with its default)."""
    return {name: tuned.get(name, OPTIMIZERS[name]().lr) for name in OPTIMIZER_NAMES}


def canonical_optimizer_name(text):
    """The name in OPTIMIZER_NAMES that text spells, ignoring case ("adam" -> "Adam").
    Raises argparse.ArgumentTypeError for anything else."""
    by_lower = {name.lower(): name for name in OPTIMIZER_NAMES}
    try:
        return by_lower[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer {text.strip()!r}; choose from {', '.join(OPTIMIZER_NAMES)}"
        ) from None


def parse_optimizer_list(text):
    """argparse type of --optimizers: "sgd,Adam" -> ("SGD", "Adam"), duplicates dropped."""
    names = [canonical_optimizer_name(part) for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one optimizer name")
    return tuple(dict.fromkeys(names))


def parse_positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_non_negative_float(text):
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def parse_learning_rate(text):
    """argparse type of --lr: "adam=0.01" -> ("Adam", 0.01). The rate must be a finite
    number >= 0."""
    name, separator, value = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. Adam=0.01), got {text!r}")
    return canonical_optimizer_name(name), parse_non_negative_float(value)


def add_optimizer_arguments(parser, default_learning_rates):
    """Add --optimizers (comma list, default all six) and --lr NAME=VALUE (repeatable) to an
    argparse parser; default_learning_rates ({name: lr}) is shown in the help."""
    parser.add_argument(
        "--optimizers", type=parse_optimizer_list, default=OPTIMIZER_NAMES, metavar="LIST",
        help=f"comma-separated optimizers to run (default: {','.join(OPTIMIZER_NAMES)})")
    defaults = ", ".join(f"{name} {rate:g}" for name, rate in default_learning_rates.items())
    parser.add_argument(
        "--lr", type=parse_learning_rate, action="append", default=[], metavar="NAME=VALUE",
        help=f"learning rate of one optimizer, repeatable (defaults: {defaults})")


def learning_rates(args, default_learning_rates):
    """{name: lr} for the optimizers chosen by --optimizers: the defaults, overridden by
    --lr (the last --lr for a name wins)."""
    rates = dict(default_learning_rates)
    rates.update(args.lr)
    return {name: rates[name] for name in args.optimizers}


def require_demo_packages(*module_names):
    """Import the named optional modules (e.g. "matplotlib", "tqdm"), switching matplotlib to
    its Agg backend (files only, no display). Return True, or print DEMO_EXTRA_MESSAGE to
    stderr and return False if one is missing."""
    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            print(f"fastopt: {error.name or module_name} is not installed; {DEMO_EXTRA_MESSAGE}",
                  file=sys.stderr)
            return False
        if module_name == "matplotlib":
            module.use("Agg")
    return True


def check_output_paths(**paths):
    """Can each output file be written? paths: option name -> path or None (not asked for),
    e.g. check_output_paths(plot="out.png", json=None). Returns None, or a one-line message
    naming the first option whose path cannot be written (its folder is missing or not
    writeable, or the path is a folder). Nothing is created."""
    for option, path in paths.items():
        if path is None:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        flag = f"--{option.replace('_', '-')}"
        if os.path.isdir(path):
            return f"{flag} {path}: is a folder, not a file name"
        if not os.path.isdir(folder):
            return f"{flag} {path}: the folder {folder} does not exist"
        if not os.access(folder, os.W_OK | os.X_OK) or (
                os.path.exists(path) and not os.access(path, os.W_OK)):
            return f"{flag} {path}: not writeable"
    return None


def format_table(headers, rows):
    """A plain-text table: headers (strings) and rows (sequences of strings) in columns, the
    first column left-aligned and the others right-aligned, as one string."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells):
        return "  ".join(str(cell).ljust(width) if index == 0 else str(cell).rjust(width)
                         for index, (cell, width) in enumerate(zip(cells, widths)))

    return "\n".join([line(headers), "  ".join("-" * width for width in widths)]
                     + [line(row) for row in rows])
