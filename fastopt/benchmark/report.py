"""What `fastopt bench` prints and draws: the header (machine and build), the table, the targets,
the plot, and the progress display.
"""
import os
import platform
import sys

import numpy as np

import fastopt

from .implementations import IMPLEMENTATIONS
from .timing import load_warning
from .workloads import MULTI_ARRAY_WORKLOADS, format_count

def format_seconds(seconds):
    """A duration with 3 significant digits and a unit: "812 ns", "1.63 ms"."""
    if seconds is None:
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _format_ratio(ratio):
    return "-" if ratio is None else f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def _format_rate(rate):
    return "-" if rate is None else f"{rate:.3g}"


def machine_info(threads, peer_notes):
    """What the numbers were measured on: a dict for --json and the header."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastopt": fastopt.build_info(),
        "threads": threads,
        "blas": blas_info(),
        "peers": peer_notes,
    }


def blas_info():
    """NumPy's BLAS as threadpoolctl sees it (the matrix products of a training loop run there,
    on threads of their own): a list of {"library", "version", "threading", "threads"}, or None
    when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [{"library": pool.get("internal_api"), "version": pool.get("version"),
             "threading": pool.get("threading_layer"), "threads": pool.get("num_threads")}
            for pool in threadpool_info() if pool.get("user_api") == "blas"]


def _format_blas(pools):
    if pools is None:
        return "unknown (pip install threadpoolctl to see it)"
    if not pools:
        return "none found"
    return "; ".join(f"{pool['library']} {pool['version']} ({pool['threading']}), "
                     f"{pool['threads']} thread{'s' if pool['threads'] != 1 else ''}"
                     for pool in pools)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


COLUMNS_NOTE = (
    "columns: median time per update(); GB/s = bytes the optimizer must read and write / "
    "time; xNAME = NAME's time / fastopt's; limit = TrafficLimit kernel (same bytes, trivial "
    "math); %limit = fastopt's GB/s as a share of the limit's; others = share of the machine's "
    "CPU taken by other processes during the case")
CLIP_COLUMNS_NOTE = (
    "; in the cases of a clipping variant (optim.NAME+clip: update(..., max_grad_norm=1.0), "
    "gradients of global norm 10; torch: clip_grad_norm_ then the step): noclip = fastopt's "
    "same optimizer without clipping, interleaved; clip/no = fastopt's time / noclip's; its "
    "GB/s counts the gradients read once more for the norm")


def print_header(info, out, columns_note=COLUMNS_NOTE):
    """The machine, the build, NumPy's BLAS, the peers, a warning if the machine is busy, and
    what the columns of the table below mean (columns_note)."""
    build = info["fastopt"]
    print(f"fastopt {build['version']} bench: {info['cpu']}, {info['cores']} cores; "
          f"Python {info['python']}, NumPy {info['numpy']}", file=out)
    # Every key build_info() has, whatever they are (they change as the build does).
    print("build: " + "; ".join(f"{key} {_format_build_value(value)}"
                                for key, value in build.items() if key != "version"), file=out)
    print(f"blas: {_format_blas(info['blas'])}", file=out)
    for note in info["peers"]:
        print(f"peer {note}", file=out)
    load = info["load_average"]
    warning = None if load is None else load_warning(load[0], info["cores"])
    if warning:
        print(warning, file=out)
    print(columns_note, file=out)


def _format_build_value(value):
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


TABLE_COLUMNS = (  # (implementation it needs or None, heading, width, CaseResult -> text)
    (None, "optimizer", 9, lambda r: r.case.optimizer),
    (None, "dtype", 7, lambda r: r.case.workload.dtype.name),
    (None, "case", 14, lambda r: r.case.workload.label),
    (None, "elements", 8, lambda r: format_count(r.case.workload.elements)),
    ("fastopt", "fastopt", 9, lambda r: format_seconds(r.median("fastopt"))),
    ("fastopt", "GB/s", 6, lambda r: _format_rate(r.gigabytes_per_second("fastopt"))),
    ("numpy", "numpy", 9, lambda r: format_seconds(r.median("numpy"))),
    ("numpy", "xnumpy", 7, lambda r: _format_ratio(r.speedup("numpy"))),
    ("limit", "limit", 9, lambda r: format_seconds(r.median("limit"))),
    ("limit", "GB/s", 6, lambda r: _format_rate(r.gigabytes_per_second("limit"))),
    ("limit", "%limit", 6,
     lambda r: "-" if r.limit_ratio is None else f"{100 / r.limit_ratio:.0f}%"),
    ("torch", "torch", 9, lambda r: format_seconds(r.median("torch"))),
    ("torch", "xtorch", 7, lambda r: _format_ratio(r.speedup("torch"))),
    ("deepspeed", "deepspeed", 9, lambda r: format_seconds(r.median("deepspeed"))),
    ("deepspeed", "xds", 6, lambda r: _format_ratio(r.speedup("deepspeed"))),
    ("noclip", "noclip", 9, lambda r: format_seconds(r.median("noclip"))),
    ("noclip", "clip/no", 7, lambda r: _format_ratio(r.clip_ratio)),
    (None, "others", 6,
     lambda r: "-" if r.others_cpu_share is None else f"{100 * r.others_cpu_share:.0f}%"),
)
LABEL_COLUMNS = 3  # left-aligned; the rest are numbers, right-aligned


def print_table(results, out):
    """One line per case, optimizers separated by a blank line; a peer's columns only if it
    ran."""
    measured = {name for result in results for name in result.timings}
    columns = [column for column in TABLE_COLUMNS if column[0] is None or column[0] in measured]

    rows = [[cell(result) for _, _, _, cell in columns] for result in results]
    # A label column widens to its longest cell ("optim.AdamW+clip"), the others keep theirs.
    widths = [max([width] + [len(row[index]) for row in rows]) if index < LABEL_COLUMNS
              else width for index, (_, _, width, _) in enumerate(columns)]

    def line(cells):
        return "  ".join(cell.ljust(width) if index < LABEL_COLUMNS else cell.rjust(width)
                         for index, (cell, width) in enumerate(zip(cells, widths)))

    print(line([heading for _, heading, _, _ in columns]).rstrip(), file=out)
    previous = None
    for result, row in zip(results, rows):
        if previous is not None and result.case.optimizer != previous:
            print(file=out)
        previous = result.case.optimizer
        print(line(row).rstrip(), file=out)


def print_unsupported(results, out):
    """A line per implementation and reason that left cases unmeasured (torch for optim.Lion,
    the limit for a clipping variant, ...), naming their optimizers; nothing if none did."""
    reasons = {}  # (implementation, reason) -> optimizers, in table order
    for result in results:
        for name, reason in result.unsupported.items():
            reasons.setdefault((name, reason), {})[result.case.optimizer] = None
    for (name, reason), optimizers in reasons.items():
        print(f"not measured: {name} for {', '.join(optimizers)}: {reason}", file=out)


def print_targets(evaluated, source, out):
    """The targets section: how many were met, then each target's verdict and ratio. source:
    the targets file, named in the heading."""
    if not evaluated:
        print(f"targets: none of the targets' cases was run (targets from {source})", file=out)
        return
    met = sum(1 for _, _, ok in evaluated if ok)
    print(f"targets: {met} of {len(evaluated)} met (targets from {source})", file=out)
    for description, ratio, ok in evaluated:
        verdict = "not measured" if ok is None else "met" if ok else "NOT met"
        # Three decimals near 1, where bounds such as 1.02 sit: 1.024 is not met, "1.02x" hid it
        shown = f"{ratio:.3f}x" if ratio is not None and ratio < 2 else _format_ratio(ratio)
        print(f"  {verdict:>12}  {description}: {shown}", file=out)


def write_plot(results, path):
    """PNG: GB/s against elements per update(), a panel per optimizer (rows) and dtype (columns);
    a line per implementation for single arrays, markers for the multi-array workloads, the
    traffic-limit kernel (the ceiling) as a wide pale band underneath, fastopt on top."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    optimizers = list(dict.fromkeys(r.case.optimizer for r in results))
    dtypes = list(dict.fromkeys(r.case.workload.dtype.name for r in results))
    implementations = [name for name in IMPLEMENTATIONS if any(name in r.timings
                                                               for r in results)]
    colors = {"fastopt": "tab:red", "numpy": "tab:blue", "limit": "0.55",
              "torch": "tab:orange", "deepspeed": "tab:green", "noclip": "tab:purple"}
    markers = {"mlp": "s", "book-mlp": "^", "many-small": "D"}
    # fastopt often runs at the ceiling, where thin limit markers drawn over it hid it: the limit
    # is a wide pale band at the bottom, so fastopt's markers stay visible inside it, and fastopt
    # is drawn above every other implementation.
    line_styles = {name: {"color": color, "marker": "o", "markersize": 3, "zorder": 3}
                   for name, color in colors.items()}
    line_styles["limit"] = {"color": colors["limit"], "linewidth": 8, "alpha": 0.35,
                            "solid_capstyle": "round", "zorder": 1}
    line_styles["fastopt"]["zorder"] = 5
    marker_styles = {name: {"color": colors[name], "s": 30, "zorder": style["zorder"] + 1}
                     for name, style in line_styles.items()}
    marker_styles["limit"].update(s=150, alpha=0.35, zorder=1)
    figure, axes = pyplot.subplots(len(optimizers), len(dtypes), squeeze=False,
                                   figsize=(6 * len(dtypes), 3.2 * len(optimizers)),
                                   sharex=True, sharey=True)
    for row, optimizer in enumerate(optimizers):
        for column, dtype in enumerate(dtypes):
            panel = axes[row][column]
            cases = [r for r in results
                     if r.case.optimizer == optimizer and r.case.workload.dtype.name == dtype]
            singles = sorted((r for r in cases if r.case.workload.kind == "single"),
                             key=lambda r: r.case.workload.elements)
            for name in implementations:
                points = [(r.case.workload.elements, r.gigabytes_per_second(name))
                          for r in singles if name in r.timings]
                if points:
                    panel.plot(*zip(*points), label=_plot_label(name), **line_styles[name])
                for result in cases:
                    kind = result.case.workload.kind
                    if kind != "single" and name in result.timings:
                        panel.scatter(result.case.workload.elements,
                                      result.gigabytes_per_second(name), marker=markers[kind],
                                      **marker_styles[name])
            panel.set_xscale("log")
            panel.set_yscale("log")
            panel.grid(True, which="major", alpha=0.3)
            panel.set_title(f"{optimizer}, {dtype}", fontsize=10)
            if column == 0:
                panel.set_ylabel("effective GB/s")
            if row == len(optimizers) - 1:
                panel.set_xlabel("elements per update()")
    legend = {}  # label -> handle, from every panel (a peer may be in some panels only)
    for panel in axes.flat:
        for handle, label in zip(*panel.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    labels = [label for label in map(_plot_label, implementations) if label in legend]
    handles = [legend[label] for label in labels]
    for kind, marker in markers.items():
        if any(r.case.workload.kind == kind for r in results):
            handles.append(pyplot.Line2D([], [], color="gray", marker=marker, linestyle=""))
            labels.append(MULTI_ARRAY_WORKLOADS[kind].label)
    figure.legend(handles, labels, loc="upper center", ncol=min(len(labels), 8),
                  bbox_to_anchor=(0.5, 1.0), frameon=False)
    figure.suptitle("fastopt bench: effective memory throughput (higher is better)", y=1.03)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    pyplot.close(figure)


def _plot_label(implementation):
    return {"limit": "traffic limit (ceiling)",
            "noclip": "fastopt without clipping"}.get(implementation, implementation)


class Progress:
    """A progress display on stderr: tqdm if installed, else a line per case."""

    def __init__(self, total):
        self.total = total
        self.done = 0
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, file=sys.stderr, unit="case", leave=False,
                            dynamic_ncols=True)

    def start(self, title):
        if self.bar is not None:
            self.bar.set_description_str(title)
        else:
            end = "\r" if sys.stderr.isatty() else "\n"
            print(f"[{self.done + 1}/{self.total}] {title}".ljust(50), end=end,
                  file=sys.stderr, flush=True)

    def finish_case(self):
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif sys.stderr.isatty():
            print(" " * 50, end="\r", file=sys.stderr, flush=True)
