"""Command line: thin subcommands over the library.

Subcommands live in groups (`fitting`, `training`, `decide`, `curves`); each is registered by one
`add_<name>(sub)` function that builds its parser and sets `func`. The work itself lives in the
library modules, imported lazily so `scalefit --help` is fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from scalefit.cli import curves, decide, fitting, training

# Registration order is the order in `scalefit --help`.
_COMMANDS = [decide.add_quickstart, fitting.add_fit, fitting.add_laws, fitting.add_datasets, training.add_train,
             fitting.add_isoflop,
             decide.add_plan, training.add_sweep, training.add_runs,
             decide.add_forecast, fitting.add_predict, decide.add_report, decide.add_calc, curves.add_curves]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scalefit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"scalefit: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`scalefit laws | head`): stop quietly, as other Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
