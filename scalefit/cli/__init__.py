"""Command line: thin subcommands over the library.

Subcommands live in groups (`fitting`, `training`, `decide`, `curves`); each is registered by one
`add_<name>(sub)` function that builds its parser and sets `func`. The work itself lives in the
library modules, imported lazily so `scalefit --help` is fast.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import threading

from scalefit.cli import curves, decide, fitting, training
from scalefit.cli.common import EXIT_BAD_INPUT, EXIT_BUG, EXIT_INTERRUPT, EXIT_OK, DefaultsFormatter

# Registration order is the order in `scalefit --help`.
_COMMANDS = [decide.add_quickstart, fitting.add_fit, fitting.add_laws, fitting.add_datasets, training.add_train,
             fitting.add_isoflop,
             decide.add_plan, training.add_sweep, training.add_runs,
             decide.add_forecast, fitting.add_predict, decide.add_report, decide.add_calc, curves.add_curves]

# Commands that only read and compute (no run store written): they run in a worker thread so that
# Ctrl-C stops them at once, even inside a long compiled JAX call that holds the main thread in C
# (Python runs signal handlers only between bytecodes of the main thread). The training commands stay
# in the main thread: their own KeyboardInterrupt handling finishes or abandons a checkpoint cleanly.
_STOP_AT_ONCE = {"fit", "laws", "datasets", "isoflop", "plan", "forecast", "predict", "report", "calc"}

EPILOG = f"""exit status:
  {EXIT_OK}    success
  {EXIT_BAD_INPUT}    bad input or an ordinary fault (a missing, unreadable or malformed file, a folder where a
       file is expected, a full disk, a read-only folder): one line on stderr names the file and what
       was expected
  3    a fit (fit, report, forecast, plan) that is degenerate or unidentifiable (--keep-degenerate: 0)
  {EXIT_INTERRUPT}  interrupted (Ctrl-C, SIGINT)
  {EXIT_BUG}    a bug in scalefit: the traceback is printed; please report it
A closed output pipe (`scalefit datasets list | head -1`) ends the command quietly."""


class Parser(argparse.ArgumentParser):
    """argparse with every option's default in its help (`DefaultsFormatter`), subcommands included."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
        # argparse takes "-1e22" for an option (its pattern knows only -1 and -1.5): a negative number in
        # any float notation is a value, so `plan --compute -1e22` says the budget must be > 0.
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="scalefit", description=__doc__.splitlines()[0], epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    for add in _COMMANDS:
        add(sub)
    return parser


def os_error_text(e: OSError) -> str:
    """One line for an ordinary fault of the file system, naming the path and what was expected."""
    path = e.filename if e.filename is not None else "?"
    if isinstance(e, IsADirectoryError):
        return f"{path} is a folder; expected a file"
    if isinstance(e, NotADirectoryError):
        return f"{path}: a part of this path is a file; expected a folder"
    if isinstance(e, PermissionError) or e.errno == errno.EROFS:
        return f"cannot write or read {path}: {e.strerror} (check the folder is writable, or choose another)"
    if e.errno == errno.ENOSPC:
        return f"no space left on the device writing {path}: free some space and run again"
    return f"{path}: {e.strerror or e}"


def _run(args) -> int:
    return int(args.func(args) or 0)


def _run_stoppable(args) -> int:
    """`_run` in a daemon thread; the main thread waits and so takes SIGINT at once."""
    out: dict = {}

    def work():
        try:
            out["rc"] = _run(args)
        except BaseException as e:  # re-raised in the main thread, where main() sorts it
            out["error"] = e

    t = threading.Thread(target=work, name=f"scalefit-{args.cmd}", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.1)
    if "error" in out:
        raise out["error"]
    return out["rc"]


def _quiet_stdout() -> None:
    # The reader went away: point stdout at /dev/null so the interpreter's final flush does not fail again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)
        return (_run_stoppable if args.cmd in _STOP_AT_ONCE else _run)(args)
    except KeyboardInterrupt:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            _quiet_stdout()
        print("scalefit: interrupted", file=sys.stderr)
        sys.stderr.flush()
        if args is not None and args.cmd in _STOP_AT_ONCE:  # the worker may be inside a compiled call: don't wait
            os._exit(EXIT_INTERRUPT)
        return EXIT_INTERRUPT
    except BrokenPipeError:
        # `scalefit laws | head`: stop quietly, as other Unix tools do.
        _quiet_stdout()
        return EXIT_OK
    except (ValueError, FileNotFoundError, KeyError) as e:
        # Bad input is the user's to fix: one clear line, no traceback.
        text = os_error_text(e) if isinstance(e, FileNotFoundError) and e.filename else e
        print(f"scalefit: error: {text}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"scalefit: error: {os_error_text(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
