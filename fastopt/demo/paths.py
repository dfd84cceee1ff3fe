"""`fastopt paths`: the textbook's 2-D experiment.

Every optimizer starts at (x, y) = (-7, 2) on f(x, y) = x**2/20 + y**2, whose minimum is at
(0, 0), and takes 30 steps (by default) with the exact gradient (x/10, 2y). The command draws one
panel per optimizer (contour lines of f, the path, the minimum) into a PNG and prints where each
path ends.

Default learning rates: the textbook's SGD 0.95, Momentum 0.1, AdaGrad 1.5 and Adam 0.3. The textbook
gives none for Nesterov and RMSprop; Nesterov uses Momentum's 0.1 so the two panels compare the
update rules alone, and RMSprop uses 0.15, where its first step (about 10*lr per coordinate,
since h starts at 0.01*g**2) halves y and the path reaches the minimum's neighbourhood in 30
steps without diverging.
"""
import os
import sys

import numpy as np

from .common import (add_optimizer_arguments, check_output_paths, default_learning_rates,
                     format_table, learning_rates, optimizer_class, parse_positive_int,
                     require_demo_packages)

START = (-7.0, 2.0)
DEFAULT_STEPS = 30
DEFAULT_PLOT = "fastopt_paths.png"
DEFAULT_LEARNING_RATES = default_learning_rates({"SGD": 0.95, "Momentum": 0.1, "Nesterov": 0.1,
                                                 "AdaGrad": 1.5, "RMSprop": 0.15, "Adam": 0.3})


def objective(x, y):
    """f(x, y) = x**2/20 + y**2 (elementwise for arrays)."""
    return x**2 / 20.0 + y**2


def gradient(x, y):
    """The gradient of objective at (x, y): (x/10, 2y)."""
    return x / 10.0, 2.0 * y


def optimize_path(optimizer, steps=DEFAULT_STEPS, start=START):
    """Run optimizer for steps updates from start on objective; return the path as a float64
    array of shape (steps + 1, 2), the start point first. The parameters are 0-d float64
    arrays {"x", "y"}, updated in place by optimizer.update as in a training loop."""
    params = {"x": np.array(start[0]), "y": np.array(start[1])}
    path = np.empty((steps + 1, 2))
    path[0] = start
    for step in range(1, steps + 1):
        gradient_x, gradient_y = gradient(params["x"], params["y"])
        optimizer.update(params, {"x": np.asarray(gradient_x), "y": np.asarray(gradient_y)})
        path[step] = params["x"], params["y"]
    return path


def plot_paths(paths, rates, filename, pyplot):
    """Draw one panel per optimizer (paths: {name: path array}, rates: {name: lr}) with the
    contour lines of objective, the path and the minimum; save a PNG to filename."""
    columns = min(3, len(paths))
    rows = -(-len(paths) // columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows),
                                   squeeze=False, constrained_layout=True)
    grid_x, grid_y = np.meshgrid(np.linspace(-10, 10, 201), np.linspace(-5, 5, 101))
    levels = [0.1, 0.5, 1, 2, 4, 7, 11, 16, 22, 29]
    for axis, (name, path) in zip(axes.flat, paths.items()):
        axis.contour(grid_x, grid_y, objective(grid_x, grid_y), levels=levels,
                     colors="0.75", linewidths=0.8)
        axis.plot(path[:, 0], path[:, 1], "o-", color="tab:red", markersize=3, linewidth=1.2,
                  label="path")
        axis.plot(*path[0], "s", color="tab:blue", markersize=6, label="start")
        axis.plot(0, 0, "+", color="black", markersize=12, markeredgewidth=2, label="minimum")
        axis.set_title(f"{name} (lr={rates[name]:g}, {len(path) - 1} steps)")
        axis.set_xlim(-10, 10)
        axis.set_ylim(-5, 5)
        axis.set_xlabel("x")
        axis.set_ylabel("y")
    for axis in list(axes.flat)[len(paths):]:
        axis.set_visible(False)
    axes.flat[0].legend(loc="lower right", fontsize="small")
    figure.suptitle("f(x, y) = x²/20 + y² from (-7, 2)")
    figure.savefig(filename, dpi=100)
    pyplot.close(figure)


def add_arguments(parser):
    """The options of `fastopt paths`: --steps, --optimizers, --lr NAME=VALUE, --plot."""
    parser.add_argument("--steps", type=parse_positive_int, default=DEFAULT_STEPS,
                        help=f"updates per optimizer (default: {DEFAULT_STEPS})")
    add_optimizer_arguments(parser, DEFAULT_LEARNING_RATES)
    parser.add_argument("--plot", default=DEFAULT_PLOT, metavar="PATH",
                        help=f"where to write the PNG (default: ./{DEFAULT_PLOT})")


def run(args):
    """Run every chosen optimizer (fastopt's classes), print where each path ends, write the
    PNG. Returns the exit status: 0, 1 if the plot cannot be written where --plot says, or 2
    if the demo extra is missing."""
    if not require_demo_packages("matplotlib"):
        return 2
    problem = check_output_paths(plot=args.plot)
    if problem:
        print(f"fastopt paths: error: {problem}", file=sys.stderr)
        return 1
    import matplotlib.pyplot as pyplot

    rates = learning_rates(args, DEFAULT_LEARNING_RATES)
    paths = {name: optimize_path(optimizer_class(name)(lr=rate), args.steps)
             for name, rate in rates.items()}
    rows = [(name, f"{rates[name]:g}", f"{path[-1, 0]:.6g}", f"{path[-1, 1]:.6g}",
             f"{objective(*path[-1]):.6g}") for name, path in paths.items()]
    print(f"{args.steps} steps from (x, y) = {START} on f(x, y) = x**2/20 + y**2 "
          f"(minimum f(0, 0) = 0; f at the start = {objective(*START):g}):")
    print(format_table(("optimizer", "lr", "final x", "final y", "final f"), rows))
    plot_paths(paths, rates, args.plot, pyplot)
    print(f"plot written to {os.path.abspath(args.plot)}")
    return 0
