"""The fastopt command: `fastopt SUBCOMMAND ...` or `python -m fastopt SUBCOMMAND ...`.

With no subcommand it prints this help; `fastopt --version` prints the version.

Subcommands live in their own modules, each with add_arguments(parser) and run(args) -> int,
imported only when chosen, so the optional packages one needs are not imported by another.
"""
import argparse
import importlib
import sys

# name: (module, one-line help)
SUBCOMMANDS = {
    "bench": ("fastopt.benchmark.cli", "time every optimizer against NumPy, the peers and "
                                       "the machine's memory-traffic limit; with "
                                       "--training-loop, the step inside NumPy training "
                                       "loops"),
    "paths": ("fastopt.demo.paths", "the textbook's 2-D experiment: each optimizer's path on "
                                    "f(x, y) = x**2/20 + y**2, as a PNG"),
    "compare": ("fastopt.demo.compare", "the textbook's network experiment: train a multi-layer "
                                        "net on handwritten digits with each optimizer"),
    "info": ("fastopt.cli", "print how this fastopt was built (fastopt.build_info())"),
}


def add_arguments(parser):
    """`fastopt info` takes no arguments."""


def run(args):
    import fastopt

    info = fastopt.build_info()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:>{width}}: {value}")
    return 0


def main(argv=None):
    """Run the fastopt command with argv (default: sys.argv[1:]); return the exit status."""
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="fastopt", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fastopt {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    commands.required = True
    for name, (_, help_text) in SUBCOMMANDS.items():
        commands.add_parser(name, help=help_text, description=help_text)
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.print_help()
        return 0
    # Parse the subcommand first, then let its module add its own arguments.
    known, _ = parser.parse_known_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    module = importlib.import_module(SUBCOMMANDS[known.command][0])
    sub = argparse.ArgumentParser(prog=f"fastopt {known.command}",
                                  description=SUBCOMMANDS[known.command][1])
    module.add_arguments(sub)
    return module.run(sub.parse_args(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
