"""What `fastopt paths` and `fastopt compare` share: the optimizer families, names and classes,
the --optimizers and --lr options (and `fastopt compare`'s --family), the check for the demo
extra, and plain-text tables.

Two families of optimizers, each with a fastopt class and a NumPy twin per name:
- "textbook": fastopt.SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam (fastopt.OPTIMIZERS);
  the numpy backend is fastopt.reference, the textbook's code.
- "optim": fastopt.optim's SGD, Adam, AdamW, Adagrad, RMSprop, Adadelta, Adamax, NAdam, RAdam
  and Lion (fastopt.optim.OPTIMIZERS); the numpy backend is fastopt.reference.optim.
"""
import argparse
import importlib
import os
import sys

import fastopt.optim
import fastopt.reference.optim
from fastopt.optimizers import OPTIMIZERS

OPTIMIZER_NAMES = tuple(OPTIMIZERS)  # every registered textbook optimizer, in definition order
BACKENDS = ("fastopt", "numpy")
FAMILIES = ("textbook", "optim")
DEFAULT_FAMILY = "textbook"
# family -> the modules of its backends, as the command's help and output name them
FAMILY_MODULES = {"textbook": {"fastopt": "fastopt", "numpy": "fastopt.reference"},
                  "optim": {"fastopt": "fastopt.optim", "numpy": "fastopt.reference.optim"}}
DEMO_EXTRA_MESSAGE = ("install the demo extra: pip install 'fastopt[demo]' (from PyPI), or "
                      "pip install \".[demo]\" from a fastopt source checkout")


def _check_family(family):
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")


def optimizer_names(family=DEFAULT_FAMILY):
    """The names of a family's optimizers, in definition order: OPTIMIZER_NAMES for
    "textbook", fastopt.optim.OPTIMIZERS's for "optim"."""
    _check_family(family)
    return OPTIMIZER_NAMES if family == "textbook" else tuple(fastopt.optim.OPTIMIZERS)


def optimizer_class(name, backend="fastopt", family=DEFAULT_FAMILY):
    """The optimizer class called name (one of optimizer_names(family)). Family "textbook":
    from fastopt for backend "fastopt", from fastopt.reference (the textbook's NumPy code) for
    backend "numpy". Family "optim": from fastopt.optim, or its NumPy twin from
    fastopt.reference.optim."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    _check_family(family)
    if family == "optim":
        registry = (fastopt.optim.OPTIMIZERS if backend == "fastopt"
                    else fastopt.reference.optim.OPTIMIZERS)
        return registry[name]
    return getattr(importlib.import_module(FAMILY_MODULES[family][backend]), name)


def default_learning_rates(tuned, family=DEFAULT_FAMILY):
    """{name: lr} for every optimizer of family: the demo's tuned rate where tuned ({name: lr})
    has one, else the class's own default lr (so a newly registered optimizer runs with its
    default)."""
    return {name: tuned.get(name, optimizer_class(name, family=family)().lr)
            for name in optimizer_names(family)}


def canonical_optimizer_name(text, family=DEFAULT_FAMILY, suggest_family=False):
    """The name in optimizer_names(family) that text spells, ignoring case ("adam" -> "Adam").
    Raises argparse.ArgumentTypeError for anything else, listing the family's names; with
    suggest_family, a name of another family also gets the --family option that has it."""
    names = optimizer_names(family)
    by_lower = {name.lower(): name for name in names}
    try:
        return by_lower[text.strip().lower()]
    except KeyError:
        where = f" in --family {family}" if suggest_family and family != DEFAULT_FAMILY else ""
        message = f"unknown optimizer {text.strip()!r}{where}; choose from {', '.join(names)}"
        if suggest_family:
            for other in FAMILIES:
                spelled = {name.lower(): name for name in optimizer_names(other)}.get(
                    text.strip().lower())
                if other != family and spelled:
                    message += f"; {spelled} is in --family {other}"
        raise argparse.ArgumentTypeError(message) from None


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


def split_optimizer_list(text):
    """argparse type of --optimizers when the family is known only after parsing (see
    add_family_arguments): "sgd, Adam" -> ("sgd", "Adam"), the names as given."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one optimizer name")
    return names


def split_learning_rate(text):
    """argparse type of --lr when the family is known only after parsing: "adam=0.01" ->
    ("adam", 0.01), the rate checked (a finite number >= 0), the name as given."""
    name, separator, value = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. Adam=0.01), got {text!r}")
    return name.strip(), parse_non_negative_float(value)


def add_family_arguments(parser, rates_by_family, tuned_for):
    """Add --family, --optimizers (comma list, default: the whole family) and --lr NAME=VALUE
    (repeatable) to an argparse parser. rates_by_family ({family: {name: lr}}) is shown in the
    help as the defaults, which tuned_for (text) says what they were chosen for.

    --optimizers and --lr may come before --family, so their names are checked against the
    family once the whole command line is parsed: the parser's parse_args (and
    parse_known_args) gives args.optimizers as the family's names (ignoring case, duplicates
    dropped) and args.lr as [(name, lr)], or exits as argparse does on a bad value (usage and
    "argument --optimizers: unknown optimizer ...; choose from ..." on stderr, status 2)."""
    descriptions = {"textbook": "the textbook's classes", "optim": "torch.optim's names"}
    families = " or ".join(
        f"{family} ({', '.join(optimizer_names(family))}: {FAMILY_MODULES[family]['fastopt']}, "
        f"{descriptions.get(family, '')}; numpy backend {FAMILY_MODULES[family]['numpy']})"
        for family in FAMILIES)
    parser.add_argument("--family", choices=FAMILIES, default=DEFAULT_FAMILY,
                        help=f"the optimizers to train with: {families} "
                             f"(default: {DEFAULT_FAMILY})")
    parser.add_argument(
        "--optimizers", type=split_optimizer_list, default=None, metavar="LIST",
        help="comma-separated optimizers of the chosen --family, any case (default: all of "
             "them)")
    defaults = "; ".join(
        f"{family}: " + ", ".join(f"{name} {rate:g}" for name, rate in rates.items())
        for family, rates in rates_by_family.items())
    parser.add_argument(
        "--lr", type=split_learning_rate, action="append", default=[], metavar="NAME=VALUE",
        help=f"learning rate of one optimizer of the chosen --family, repeatable. The defaults "
             f"are this demo's, {tuned_for}, not the classes' own defaults ({defaults})")
    parse_known_args = parser.parse_known_args

    def parse_known_args_and_resolve(args=None, namespace=None):
        namespace, extras = parse_known_args(args, namespace)
        try:
            resolve_family_arguments(namespace)
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
        return namespace, extras

    parser.parse_known_args = parse_known_args_and_resolve


def resolve_family_arguments(args):
    """Check and spell args.optimizers and args.lr's names as args.family's names (see
    add_family_arguments); None for --optimizers means the whole family. Raises
    argparse.ArgumentTypeError("argument --OPTION: ...") for a name not in the family."""
    option = "--optimizers"
    try:
        if args.optimizers is None:
            args.optimizers = optimizer_names(args.family)
        else:
            args.optimizers = tuple(dict.fromkeys(
                canonical_optimizer_name(name, args.family, suggest_family=True)
                for name in args.optimizers))
        option = "--lr"
        args.lr = [(canonical_optimizer_name(name, args.family, suggest_family=True), rate)
                   for name, rate in args.lr]
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"argument {option}: {error}") from None


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
