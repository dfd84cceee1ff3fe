"""`fastopt compare`: the textbook's network experiment.

A MultiLayerNet (fastopt.demo.network) is trained on mini-batches with each optimizer, from the
same initial weights and the same sequence of mini-batches, and with each backend: "fastopt"
(the compiled optimizers) and "numpy" (fastopt.reference, the textbook's code). The network, the
data and the batches are identical for both backends, so their losses agree bit for bit and
the difference is the time spent in opt.update, which is timed alone with time.perf_counter.

--family optim trains with fastopt.optim's classes instead (torch.optim's names: SGD, Adam,
AdamW, Adagrad, RMSprop, Adadelta, Adamax, NAdam, RAdam, and Lion), each built with lr= alone
(AdamW keeps its weight_decay 1e-2, and so on); the numpy backend is then their NumPy twins,
fastopt.reference.optim, which fastopt.optim matches bit for bit as well.

Output: a table (final train and test accuracy, final loss, mean optimizer-step time per
backend), a PNG of mini-batch loss and test accuracy against iteration, and optionally a JSON file
with every number (a loss that is NaN or infinite, as in a diverged run, is written as null).

BLAS runs on one thread while training (through threadpoolctl, which scikit-learn brings):
the matrices are far too small to gain from threads, and idle BLAS threads spinning after each
product take the CPU from the optimizer step that follows, which is what is being timed.

On a busy machine it warns as `fastopt bench` does (fastopt.benchmark.timing's load_warning
before training, others_warning after it): other processes' CPU use makes the step times noisy.
"""
import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time

import numpy as np

from fastopt.benchmark.timing import OthersCpuMeter, load_warning, others_warning

from .common import (BACKENDS, DEFAULT_FAMILY, FAMILY_MODULES, add_family_arguments,
                     check_output_paths, default_learning_rates, format_table, learning_rates,
                     optimizer_class, parse_non_negative_float, parse_positive_int,
                     require_demo_packages)
from .data import DatasetError, load_digits_dataset, load_mnist
from .network import ACTIVATIONS, MultiLayerNet

# Chosen on the digits with the default network (sigmoid, Xavier, hidden 40,20, batch 100,
# 1000 iterations), checked on seeds 0-3 with sigmoid and with relu. AdaGrad, RMSprop and Adam
# keep the textbook's rates. The textbook's SGD 0.01 reaches only 17 % test accuracy here, hence 0.5;
# the textbook's Momentum 0.3 (and Nesterov at 0.3) can diverge with relu, hence 0.1 for both,
# which is SGD 1.0's step size once the velocity has built up.
DEFAULT_LEARNING_RATES = default_learning_rates({"SGD": 0.5, "Momentum": 0.1, "Nesterov": 0.1,
                                                 "AdaGrad": 0.1, "RMSprop": 0.01, "Adam": 0.01})
# fastopt.optim's family, chosen the same way (seeds 0-3, sigmoid and relu, float64 and float32).
# torch's defaults are for large networks trained for long: in 1000 iterations here SGD at 1e-3
# stays at 11 % test accuracy (loss 2.31), Lion at 1e-4 reaches 62 %, Adam at 1e-3 91 %. Adam,
# AdamW, NAdam and RAdam take the textbook Adam's 0.01 (RAdam's rectification warms it up),
# Adamax twice that (as torch's defaults are 2e-3 and 1e-3), Adagrad the textbook AdaGrad's 0.1,
# SGD the textbook SGD's 0.5 (1.0 can fail with relu). RMSprop 0.003: at 0.01 (torch's default)
# the sigmoid network's final loss reaches 0.15 on some seeds, at most 0.06 at 0.003. Adadelta
# 10: torch's 1.0 trains to 95 %, 30 can fail with relu. Lion 0.003, about a third of Adam's,
# as its authors advise.
OPTIM_DEFAULT_LEARNING_RATES = default_learning_rates(
    {"SGD": 0.5, "Adam": 0.01, "AdamW": 0.01, "Adagrad": 0.1, "RMSprop": 0.003,
     "Adadelta": 10.0, "Adamax": 0.02, "NAdam": 0.01, "RAdam": 0.01, "Lion": 0.003},
    family="optim")
FAMILY_LEARNING_RATES = {"textbook": DEFAULT_LEARNING_RATES,
                         "optim": OPTIM_DEFAULT_LEARNING_RATES}
DEFAULT_ITERATIONS = 1000  # the textbook's iters_num
DEFAULT_BATCH_SIZE = 100  # the textbook's batch_size
DEFAULT_HIDDEN_SIZES = (40, 20)  # the textbook's hidden_size_list
DEFAULT_EVAL_INTERVAL = 10  # the textbook's plot_interval
DEFAULT_SEED = 0
DEFAULT_PLOT = "fastopt_compare.png"
EVALUATION_CHUNK = 10000  # images per forward pass when measuring accuracy on a whole split


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Everything that determines a run besides the optimizer and the data.

    hidden_sizes: units per hidden layer. activation: "sigmoid" or "relu". weight_init: "auto",
    "he", "xavier" or a standard deviation. use_batchnorm, weight_decay: see MultiLayerNet.
    iterations: optimizer steps. batch_size: images per mini-batch, drawn with replacement as
    in the textbook. eval_interval: test accuracy is measured every this many iterations.
    seed: of numpy.random.default_rng, for the initial weights and then the mini-batches.
    dtype: "float64" or "float32", of the parameters and all arithmetic.
    """

    hidden_sizes: tuple = DEFAULT_HIDDEN_SIZES
    activation: str = "sigmoid"
    weight_init: object = "auto"
    use_batchnorm: bool = False
    weight_decay: float = 0.0
    iterations: int = DEFAULT_ITERATIONS
    batch_size: int = DEFAULT_BATCH_SIZE
    eval_interval: int = DEFAULT_EVAL_INTERVAL
    seed: int = DEFAULT_SEED
    dtype: str = "float64"


@dataclasses.dataclass
class RunResult:
    """One optimizer trained with one backend.

    losses: the mini-batch loss of every iteration (training mode, before that iteration's
    update). eval_iterations, test_accuracies: test accuracy after those many iterations
    (0 = the initial network). final_loss: mean of the last eval_interval losses.
    update_seconds: total time spent in opt.update.
    """

    optimizer: str
    backend: str
    learning_rate: float
    losses: list
    eval_iterations: list
    test_accuracies: list
    final_train_accuracy: float
    final_test_accuracy: float
    final_loss: float
    update_seconds: float


def build_network(dataset, config, rng):
    """A fresh MultiLayerNet for dataset as config describes, its weights drawn from rng."""
    return MultiLayerNet(dataset.features, config.hidden_sizes, dataset.classes,
                         activation=config.activation, weight_init=config.weight_init,
                         use_batchnorm=config.use_batchnorm, weight_decay=config.weight_decay,
                         dtype=config.dtype, rng=rng)


def split_accuracy(network, dataset, images, labels, dtype):
    """The network's accuracy (inference mode) on all of images/labels, EVALUATION_CHUNK
    images at a time so that a large split is never scaled to floats at once."""
    correct = 0
    for start in range(0, len(labels), EVALUATION_CHUNK):
        chunk = slice(start, start + EVALUATION_CHUNK)
        scores = network.predict(dataset.scaled(images[chunk], dtype))
        correct += int(np.count_nonzero(scores.argmax(axis=1) == labels[chunk]))
    return correct / len(labels)


def train(dataset, optimizer_name, backend, learning_rate, config, on_iteration=None,
          family=DEFAULT_FAMILY):
    """Train a fresh network on dataset with one optimizer and return a RunResult.

    backend: "fastopt" or "numpy" (fastopt.reference, or fastopt.reference.optim for family
    "optim"). family: "textbook" (fastopt.SGD, ...) or "optim" (fastopt.optim's classes, built
    with lr= alone: their other arguments keep the classes' defaults). The initial weights and
    the mini-batch sequence depend on config.seed only, so every optimizer and backend sees
    the same ones. on_iteration: called with no arguments after every iteration (e.g. a
    progress bar's update).
    """
    rng = np.random.default_rng(config.seed)
    network = build_network(dataset, config, rng)
    optimizer = optimizer_class(optimizer_name, backend, family)(lr=learning_rate)
    dtype = np.dtype(config.dtype)
    test_images, test_labels = dataset.test_images, dataset.test_labels

    losses = []
    eval_iterations = [0]
    test_accuracies = [split_accuracy(network, dataset, test_images, test_labels, dtype)]
    update_seconds = 0.0
    for iteration in range(1, config.iterations + 1):
        batch = rng.choice(len(dataset.train_labels), config.batch_size)
        loss, grads = network.gradient(dataset.scaled(dataset.train_images[batch], dtype),
                                       dataset.train_labels[batch])
        started = time.perf_counter()
        optimizer.update(network.params, grads)
        update_seconds += time.perf_counter() - started
        losses.append(loss)
        if iteration % config.eval_interval == 0 or iteration == config.iterations:
            eval_iterations.append(iteration)
            test_accuracies.append(
                split_accuracy(network, dataset, test_images, test_labels, dtype))
        if on_iteration is not None:
            on_iteration()

    return RunResult(
        optimizer=optimizer_name, backend=backend, learning_rate=learning_rate, losses=losses,
        eval_iterations=eval_iterations, test_accuracies=test_accuracies,
        final_train_accuracy=split_accuracy(network, dataset, dataset.train_images,
                                            dataset.train_labels, dtype),
        final_test_accuracy=test_accuracies[-1],
        final_loss=float(np.mean(losses[-config.eval_interval:])),
        update_seconds=update_seconds)


def compare(dataset, rates, backends, config, on_iteration=None, on_run=None,
            family=DEFAULT_FAMILY):
    """train() every optimizer of rates ({name: lr}, names of family) with every backend;
    return the RunResults in that order (optimizer-major). on_run: called with (optimizer
    name, backend) before each run (e.g. to reset a progress bar)."""
    results = []
    for name, rate in rates.items():
        for backend in backends:
            if on_run is not None:
                on_run(name, backend)
            results.append(train(dataset, name, backend, rate, config, on_iteration,
                                 family=family))
    return results


def same_losses(first, second):
    """Are two loss sequences identical bit for bit, a NaN equal to a NaN in the same place?
    (A diverged run gives NaN losses, and NaN != NaN would call two identical runs
    different.)"""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.shape != second.shape:
        return False
    both_nan = np.isnan(first) & np.isnan(second)
    return bool(np.all((first.view(np.uint64) == second.view(np.uint64)) | both_nan))


def first_nonfinite_iteration(losses):
    """The iteration (1-based) of the first loss that is NaN or infinite, or None."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(losses, dtype=np.float64)))
    return int(bad[0]) + 1 if bad.size else None


def results_table(results):
    """The summary table as text: one row per optimizer with its final accuracies and loss
    (from the first backend) and the mean time of one opt.update of each backend, in
    microseconds; with two backends, the speed-up and whether their losses are identical
    (bit for bit, NaN equal to NaN)."""
    backends = list(dict.fromkeys(result.backend for result in results))
    by_optimizer = {}
    for result in results:
        by_optimizer.setdefault(result.optimizer, {})[result.backend] = result
    headers = ["optimizer", "lr", "train acc", "test acc", "final loss"]
    headers += [f"{backend} step (µs)" for backend in backends]
    if len(backends) == 2:
        headers += ["speed-up", "same losses"]
    rows = []
    for name, runs in by_optimizer.items():
        first = runs[backends[0]]
        row = [name, f"{first.learning_rate:g}", f"{first.final_train_accuracy:.4f}",
               f"{first.final_test_accuracy:.4f}", f"{first.final_loss:.4f}"]
        row += [f"{runs[backend].update_seconds / len(runs[backend].losses) * 1e6:.1f}"
                if runs[backend].losses else "-" for backend in backends]
        if len(backends) == 2:
            fast, slow = runs["fastopt"], runs["numpy"]
            row.append(f"{slow.update_seconds / fast.update_seconds:.1f}x"
                       if fast.update_seconds > 0 else "-")
            row.append("yes" if same_losses(fast.losses, slow.losses) else "NO")
        diverged = first_nonfinite_iteration(first.losses)
        if diverged is not None:
            row[4] += f" (diverged at {diverged})"
        rows.append(row)
    return format_table(headers, rows)


def block_means(values, block):
    """Means of consecutive blocks of block values (the last block may be shorter)."""
    return [float(np.mean(values[start:start + block])) for start in range(0, len(values), block)]


def plot_results(results, config, dataset_name, filename, pyplot, family=DEFAULT_FAMILY):
    """Save a PNG of two panels: mini-batch loss (mean over each eval_interval iterations, log
    scale) and test accuracy, against iteration; one colour per optimizer, one line style per
    backend (fastopt wide and pale underneath, numpy dashed on top: where they coincide, the
    dashes run inside the wide line). family: named in the optimizer legend's title unless it
    is the default, "textbook"."""
    from matplotlib.lines import Line2D

    figure, (loss_axis, accuracy_axis) = pyplot.subplots(1, 2, figsize=(13, 5),
                                                        constrained_layout=True)
    backend_styles = {"fastopt": dict(linestyle="-", linewidth=3.2, alpha=0.45, zorder=2),
                      "numpy": dict(linestyle=(0, (3, 2)), linewidth=1.3, zorder=3)}
    colours = {}
    diverged = {}  # optimizer name -> first iteration with a non-finite loss
    for result in results:
        colour = colours.setdefault(result.optimizer, f"C{len(colours)}")
        style = dict(color=colour, **backend_styles[result.backend])
        block_ends = list(range(config.eval_interval, len(result.losses), config.eval_interval))
        block_ends.append(len(result.losses))
        # A diverged run's blocks are NaN or inf from some point on: those are not drawn (an
        # inf would also wreck the log axis), and the legend says where it diverged.
        means = [mean if np.isfinite(mean) and mean > 0 else np.nan
                 for mean in block_means(result.losses, config.eval_interval)]
        loss_axis.plot(block_ends, means, **style)
        accuracy_axis.plot(result.eval_iterations, result.test_accuracies, **style)
        iteration = first_nonfinite_iteration(result.losses)
        if iteration is not None:
            diverged.setdefault(result.optimizer, iteration)
            if iteration > 1 and result.losses[iteration - 2] > 0:  # the last finite loss
                loss_axis.plot(iteration - 1, result.losses[iteration - 2], marker="X",
                               markersize=9, color=colour, zorder=4)
    loss_axis.set_yscale("log")
    loss_axis.set_xlim(0, config.iterations)
    if not loss_axis.has_data() or all(
            np.isnan(np.asarray(line.get_ydata(), dtype=float)).all()
            for line in loss_axis.get_lines()):
        loss_axis.set_ylim(1e-2, 1e1)
        loss_axis.text(0.5, 0.5, "no finite loss to draw: every run diverged",
                       transform=loss_axis.transAxes, ha="center", va="center")
    loss_axis.set_title(f"training loss (mean of every {config.eval_interval} mini-batches)")
    loss_axis.set_ylabel("cross-entropy + weight decay" if config.weight_decay
                         else "cross-entropy loss")
    accuracy_axis.set_title("test accuracy")
    accuracy_axis.set_ylabel("accuracy")
    accuracy_axis.set_ylim(0, 1)
    for axis in (loss_axis, accuracy_axis):
        axis.set_xlabel("iteration")
        axis.grid(True, alpha=0.3)
    rates = {result.optimizer: result.learning_rate for result in results}
    loss_axis.legend([Line2D([], [], color=colour, linewidth=2) for colour in colours.values()],
                     [f"{name} (lr={rates[name]:g})"
                      + (f", diverged at {diverged[name]}" if name in diverged else "")
                      for name in colours],
                     loc="lower left", fontsize="small",
                     title="optimizer" if family == DEFAULT_FAMILY
                     else f"optimizer ({FAMILY_MODULES[family]['fastopt']})")
    backends = list(dict.fromkeys(result.backend for result in results))
    accuracy_axis.legend([Line2D([], [], color="0.3", **backend_styles[backend])
                          for backend in backends], backends, loc="lower right",
                         fontsize="small", title="backend")
    hidden = ",".join(map(str, config.hidden_sizes)) or "none"
    figure.suptitle(f"{dataset_name}: hidden {hidden}, {config.activation}"
                    f"{', batchnorm' if config.use_batchnorm else ''}"
                    f"{f', weight decay {config.weight_decay:g}' if config.weight_decay else ''}"
                    f", batch {config.batch_size}, {config.dtype}, seed {config.seed}")
    figure.savefig(filename, dpi=100)
    pyplot.close(figure)


def results_document(results, config, dataset_name, family=DEFAULT_FAMILY):
    """Everything as JSON-ready data: {"dataset", "family", "config", "results": [RunResult as
    dict]}; family: "textbook" or "optim", whose optimizers the results' names are.
    A float that is NaN or infinite (the losses of a diverged run) becomes None, so the
    document is strict JSON (null there), which every parser accepts."""
    return _finite_or_none({"dataset": dataset_name, "family": family,
                            "config": dataclasses.asdict(config),
                            "results": [dataclasses.asdict(result) for result in results]})


def _finite_or_none(value):
    """value with every non-finite float inside lists, tuples and dicts replaced by None."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def single_threaded_blas():
    """A context manager that keeps BLAS (NumPy's matrix products) on one thread, or does
    nothing if threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# ---- the command ---------------------------------------------------------------------------

def parse_hidden_sizes(text):
    """argparse type of --hidden: "100,100" -> (100, 100); "" for no hidden layer."""
    return tuple(parse_positive_int(part) for part in text.split(",") if part.strip())


def parse_weight_init(text):
    """argparse type of --weight-init: auto, he, xavier or a standard deviation > 0."""
    if text in ("auto", "he", "xavier"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected auto, he, xavier or a standard deviation > 0, got {text!r}")
    return value


def add_arguments(parser):
    """The options of `fastopt compare` (see --help for defaults)."""
    add_family_arguments(parser, FAMILY_LEARNING_RATES,
                         tuned_for=f"chosen to train the digits network in "
                                   f"{DEFAULT_ITERATIONS} iterations")
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both",
                        help="fastopt's compiled optimizers, numpy (their NumPy twins: "
                             "fastopt.reference, the textbook's code, or fastopt.reference.optim "
                             "for --family optim), or both to compare losses and step time "
                             "(default: both)")
    parser.add_argument("--iters", type=parse_positive_int, default=DEFAULT_ITERATIONS,
                        help=f"training iterations (default: {DEFAULT_ITERATIONS})")
    parser.add_argument("--batch-size", type=parse_positive_int, default=DEFAULT_BATCH_SIZE,
                        help=f"images per mini-batch (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--hidden", type=parse_hidden_sizes, default=DEFAULT_HIDDEN_SIZES,
                        metavar="SIZES",
                        help=f"units per hidden layer, comma-separated (default: "
                             f"{','.join(map(str, DEFAULT_HIDDEN_SIZES))}, as in the textbook)")
    parser.add_argument("--activation", choices=ACTIVATIONS, default="sigmoid",
                        help="hidden-layer activation (default: sigmoid, as in the textbook)")
    parser.add_argument("--weight-init", type=parse_weight_init, default="auto", metavar="INIT",
                        help="initial weight scale: auto (He for relu, Xavier for sigmoid), "
                             "he, xavier, or a standard deviation such as the textbook's 0.01 "
                             "(default: auto)")
    parser.add_argument("--batchnorm", action="store_true",
                        help="batch normalisation after every hidden affine layer")
    parser.add_argument("--weight-decay", type=parse_non_negative_float, default=0.0,
                        metavar="LAMBDA", help="L2 weight decay: adds LAMBDA/2 * sum(W**2) to "
                                               "the loss, e.g. 0.001 (default: 0)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="dtype of the parameters and all arithmetic (default: float64, "
                             "as in the textbook)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the initial weights and the mini-batches (default: "
                             f"{DEFAULT_SEED}); the same seed gives the same results")
    parser.add_argument("--eval-interval", type=parse_positive_int, default=DEFAULT_EVAL_INTERVAL,
                        metavar="N", help=f"measure test accuracy every N iterations "
                                          f"(default: {DEFAULT_EVAL_INTERVAL})")
    parser.add_argument("--mnist", metavar="DIR",
                        help="train on MNIST from the four IDX files in DIR (train-images-"
                             "idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                             "t10k-labels-idx1-ubyte; raw or .gz) instead of scikit-learn's "
                             "digits; nothing is downloaded")
    parser.add_argument("--plot", default=DEFAULT_PLOT, metavar="PATH",
                        help=f"where to write the PNG (default: ./{DEFAULT_PLOT})")
    parser.add_argument("--json", metavar="PATH",
                        help="also write every number to PATH as strict JSON: a loss that is "
                             "NaN or infinite (a diverged run) is written as null")


def run(args):
    """Load the data, train every chosen optimizer with every chosen backend, print the table,
    write the PNG (and the JSON). Returns 0, 1 if the data set is missing or malformed, 2 if
    the demo extra is missing."""
    if not require_demo_packages("matplotlib", "tqdm", *(() if args.mnist else ("sklearn",))):
        return 2
    # Before any work: a run that trains for seconds must not die at the end on a bad path.
    problem = check_output_paths(plot=args.plot, json=args.json)
    if problem:
        print(f"fastopt compare: error: {problem}", file=sys.stderr)
        return 1
    import matplotlib.pyplot as pyplot
    from tqdm import tqdm

    try:
        dataset = load_mnist(args.mnist) if args.mnist else load_digits_dataset()
    except (DatasetError, FileNotFoundError) as error:
        print(f"fastopt compare: error: {error}", file=sys.stderr)
        return 1
    config = TrainingConfig(
        hidden_sizes=args.hidden, activation=args.activation, weight_init=args.weight_init,
        use_batchnorm=args.batchnorm, weight_decay=args.weight_decay, iterations=args.iters,
        batch_size=args.batch_size, eval_interval=args.eval_interval, seed=args.seed,
        dtype=args.dtype)
    rates = learning_rates(args, FAMILY_LEARNING_RATES[args.family])
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    print(f"{dataset.name}: {len(dataset.train_labels)} training and "
          f"{len(dataset.test_labels)} test images of {dataset.features} pixels")

    # The step times are measured: say so when other processes compete for the CPU, as
    # `fastopt bench` does (the same test and words: fastopt.benchmark.timing).
    warning = load_warning()
    if warning:
        print(warning)
    meter = OthersCpuMeter()
    runs = len(rates) * len(backends)
    with single_threaded_blas(), tqdm(total=config.iterations, unit="it",
                                      file=sys.stderr) as progress:
        started = []

        def on_run(name, backend):  # one bar per run: iterations of this optimizer
            started.append(name)
            progress.reset(total=config.iterations)
            progress.set_description(f"run {len(started)}/{runs}: {name} on {backend}")

        results = compare(dataset, rates, backends, config, on_iteration=progress.update,
                          on_run=on_run, family=args.family)

    if args.family != DEFAULT_FAMILY:
        modules = FAMILY_MODULES[args.family]
        print(f"optimizers: {modules['fastopt']} (backend fastopt), its NumPy twins "
              f"{modules['numpy']} (backend numpy)")
    print(f"after {config.iterations} iterations of batch {config.batch_size} "
          f"(step = mean time of one opt.update call, in microseconds):")
    print(results_table(results))
    warning = others_warning(meter.share(), "the step times are unreliable")
    if warning:
        print(warning)
    plot_results(results, config, dataset.name, args.plot, pyplot, family=args.family)
    print(f"plot written to {os.path.abspath(args.plot)}")
    if args.json:
        with open(args.json, "w") as json_file:
            json.dump(results_document(results, config, dataset.name, args.family), json_file,
                      indent=1, allow_nan=False)
        print(f"results written to {os.path.abspath(args.json)}")
    return 0
