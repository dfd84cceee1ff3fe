"""`fastopt bench`: time every optimizer against NumPy, the peers and this machine's memory ceiling.

Run it as ``fastopt bench`` or ``python -m fastopt bench`` (``--help`` lists the options;
``--quick`` for a one-minute look). For each case (an optimizer, a dtype and a workload: one
array of n elements, or a model's dict of arrays) it measures, interleaved within the case:

- fastopt: ``fastopt.optimizers.OPTIMIZERS[name]().update(params, grads)``;
- numpy: the same class from ``fastopt.reference`` (the textbook's pure-NumPy code), the baseline;
- limit: ``fastopt.benchmark.TrafficLimit(n_states)`` through the same update() path, a kernel
  that reads and writes exactly the bytes the optimizer must move, with trivial math: the
  measured ceiling of this machine for that case;
- torch: ``torch.optim`` with ``fused=True`` where torch has a fused CPU kernel (``foreach=True``
  otherwise), at the same thread count, when torch is installed. Its formulas differ in details
  (Adam's eps placement, Momentum's lr), so it is a speed peer, not a numbers peer;
- deepspeed: ``deepspeed.ops.adam.DeepSpeedCPUAdam`` for Adam on float32, when importable.

The optimizers are those registered in ``fastopt.optimizers.OPTIMIZERS`` (a new one is measured
once registered there and in ``fastopt.reference``); n_states, an optimizer's number of state
arrays, is ``len(cls._state_names)`` of its class there.

``--optimizers optim.AdamW,optim.SGD`` (or ``optim``: every class) measures ``fastopt.optim``'s
classes instead, with their default arguments (torch.optim's): numpy is the twin in
``fastopt.reference.optim``, limit has ``len(opt._state_names())`` state arrays, torch is the
torch.optim class of the same name with the same arguments (Lion has none). ``optim.AdamW+clip``
is the clipping variant: ``update(params, grads, max_grad_norm=1.0)`` on gradients rescaled to a
global norm of 10, torch ``clip_grad_norm_`` then the step, no limit (the norm pass reads the
gradients once more: 4 + 2 x n_states arrays), and noclip, fastopt's same optimizer without
clipping, interleaved in the case, for the cost of clipping (column clip/no). The default list
stays the textbook's.

It prints a table of median time per update(), effective GB/s (the bytes the optimizer must read
and write: 3 + 2 x n_states arrays, i.e. 3 for SGD, 5 for one state array, 7 for Adam, times
itemsize times elements), the speedup over NumPy and over the peers, and the fraction of the
ceiling reached; then the performance targets, met or not, with the ratios. ``--json`` writes
every number, ``--plot`` draws GB/s against size with the ceiling.

Targets: the project's own speed targets are not part of the installed package; they live in
the source checkout, in bench/targets.json. ``--targets FILE`` checks the targets of FILE (the
format: fastopt.benchmark.targets); without it, ``fastopt bench`` run from a source checkout
(bench/targets.json exists beside the folder holding the fastopt package) checks that file, and
an installed fastopt prints no targets section.

Timing: time.perf_counter around batches of calls (a batch lasts about BATCH_SECONDS, or one call
when a call is longer), after warm-up calls; implementations take turns round by round, in a
rotating order (a fast one runs several batches per round while a slow one runs one), until the
case has run --repeat rounds and --min-time seconds; the median batch mean is reported. Each
implementation updates its own copies of the arrays; the gradients are the same every step (a
step does not change them). Large cases are measured on three sets of copies in turn, pooled,
since an array's speed there depends on where its pages land.

The pytest-benchmark suite in bench/ uses the same workloads and implementations (see
bench/README.md): ``pytest bench/``.

``fastopt bench --training-loop`` measures instead the optimizer step inside whole NumPy
training loops (the textbook's MLP, a wide MLP, 200 arrays with a matrix product between
steps), with fastopt at its thread count, at 1 thread, and the NumPy reference, interleaved:
the loop time per iteration, the step's share of it, and their ratios (see
fastopt.benchmark.training). ``--load`` runs one busy process beside either measurement.

The modules: workloads (the cases and the bytes they move), implementations (fastopt, NumPy,
the limit and the peers), traffic (TrafficLimit, the limit's kernel), timing (measuring a
case; the busy-machine warnings, which ``fastopt compare`` prints too), training (the training
loops: workloads, measurement, table), cpuload (the busy process of --load), targets, report
(the table, the header, the plot) and cli (the options and the run, for ``fastopt bench``).
This package re-exports what the bench/ suite and the tests use.
"""
# The registry itself (name -> class), for `from fastopt.benchmark import OPTIMIZERS`: iterating
# it gives the names measured, whatever is registered when it is iterated.
from fastopt.optimizers import OPTIMIZERS

from .implementations import (DictImplementation, FASTOPT, IMPLEMENTATIONS, LIMIT, NOCLIP,
                              NUMPY, PEERS, NotApplicable, Unsupported, load_peers)
from .report import format_seconds, machine_info, print_table, write_plot
from .targets import Target, default_targets_file, evaluate_targets, load_targets
from .cpuload import busy_process
from .timing import (CaseResult, OthersCpuMeter, Timing, load_warning, measure,
                     measure_case_retrying, others_warning, run_case)
from .traffic import TrafficLimit
from .training import (LOOP_WORKLOADS, MODES as LOOP_MODES, LoopResult, LoopWorkload,
                       measure_loop)
from .workloads import (CLIP_MAX_GRAD_NORM, DTYPES, MULTI_ARRAY_WORKLOADS, WORKLOAD_KINDS, Case,
                        Workload, family_names, format_count, optimizer_names, parse_optimizer,
                        plan_cases, single_array, state_arrays)

__all__ = ["DTYPES", "MULTI_ARRAY_WORKLOADS", "OPTIMIZERS", "WORKLOAD_KINDS", "Case", "Workload",
           "format_count", "optimizer_names", "plan_cases", "single_array", "state_arrays",
           "CLIP_MAX_GRAD_NORM", "family_names", "parse_optimizer",
           "DictImplementation", "FASTOPT", "IMPLEMENTATIONS", "LIMIT", "NOCLIP", "NUMPY", "PEERS",
           "NotApplicable", "Unsupported", "load_peers",
           "CaseResult", "OthersCpuMeter", "Timing", "measure", "measure_case_retrying", "run_case",
           "load_warning", "others_warning", "busy_process",
           "LOOP_WORKLOADS", "LOOP_MODES", "LoopResult", "LoopWorkload", "measure_loop",
           "Target", "default_targets_file", "evaluate_targets", "load_targets", "TrafficLimit",
           "format_seconds", "machine_info", "print_table", "write_plot"]
