"""What several subcommand groups share: exit codes, help with defaults, KEY=VALUE arguments, the table
options, the compile cache."""

from __future__ import annotations

import argparse
import os
import sys

from scalefit.conventions import CKind, NKind

EXIT_OK = 0  # success
EXIT_BUG = 1  # an uncaught exception: a bug in scalefit (Python's own status for a traceback)
EXIT_BAD_INPUT = 2  # bad input or an ordinary fault (argparse uses 2 for a bad command line too)
EXIT_INTERRUPT = 130  # SIGINT (128 + 2, the shell's convention)


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that states every option's default: "(default: X)" is appended to each option's help unless
    the help already says what the default is. Flags (no value) are off unless given."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or action.default is argparse.SUPPRESS or action.nargs == 0
                or "default" in text.lower() or "%(default)" in text):
            return text
        default = action.default
        shown = ("none" if default is None or default == [] else
                 getattr(default, "value", default))
        shown = str(shown).replace("%", "%%")  # the help is %-formatted by argparse
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 0 (a count such as --bootstrap)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {v}")
    return v


def level(text: str) -> float:
    """argparse type: an interval level strictly between 0 and 1 (e.g. 0.95)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a level between 0 and 1 such as 0.95, got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a level between 0 and 1 such as 0.95, got {v:g}")
    return v


CHECKPOINTS_HELP = ("for a curve table (rows sharing a run id, differing in D): final (default: each run's last "
                    "point), all, or after=FRACTION (the checkpoints past that share of each run's tokens); "
                    "all and after= weigh each run's checkpoints 1/k so a long curve does not outvote many runs")


def key_values(items, float_values: bool = True):
    """(key, value) pairs from repeated KEY=VALUE arguments (values as floats unless told)."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        yield key.strip(), float(value) if float_values else value.strip()


def add_column_options(p, *, weight: bool = True) -> None:
    """--n-col (also KIND=COL, repeatable), --d-col, --c-col, --loss-col, --run-col (--weight-col), --n-kind."""
    g = p.add_argument_group("columns (default: found by their usual names; see docs/fitting.md)")
    g.add_argument("--n-col", action="append", default=[], metavar="[KIND=]COL",
                   help="column holding N; or KIND=COL per kind of N (repeatable), e.g. --n-col total=N "
                        "--n-col non-embedding=N_ne, and --n-kind picks the one fitted")
    for field, what in (("d", "D (training tokens)"), ("c", "C (training FLOPs)"), ("loss", "the loss"),
                        ("run", "the run id"), *([("weight", "row weights")] if weight else [])):
        g.add_argument(f"--{field}-col", default=None, metavar="COL", help=f"column holding {what}")
    g.add_argument("--n-kind", default=None, choices=list(NKind), type=NKind.parse,
                   help="which parameters N counts (default: total; a column named for that kind, e.g. "
                        "N_non_embedding, is then preferred to a generic N)")
    g.add_argument("--loss-unit", default="nats", choices=["nats", "bits"],
                   help="unit of the loss column: nats per token (natural log), or bits per token, converted "
                        "to nats (x ln 2) on reading; every loss scalefit prints is in nats per token")


def add_table_options(p, *, by: bool = True) -> None:
    """The column options, --c-kind, and the row selections: --where, --by, --best-of, --checkpoints."""
    add_column_options(p)
    p.add_argument("--c-kind", default=None, choices=list(CKind), type=CKind.parse,
                   help="how C was counted (default: from the data; exact for a run store)")
    g = p.add_argument_group("rows (every row left out is counted with its reason)")
    g.add_argument("--where", default=None, metavar="EXPR",
                   help="row filter on the table's columns (and N, D, C, loss, run), a pandas expression, "
                        "e.g. \"N < 1e9 and dataset == 'c4'\"")
    if by:
        g.add_argument("--by", default=None, metavar="COL[,COL]",
                       help="one fit per value of these columns, e.g. --by dataset or --by train_set,eval_set")
    g.add_argument("--best-of", default=None, metavar="COL",
                   help="a column swept at each cell (e.g. lr): keep the run of lowest final loss per cell")
    g.add_argument("--best-per", default="N,D", metavar="COL[,COL]",
                   help="the cell of --best-of (default: N,D)")
    g.add_argument("--checkpoints", default="final", metavar="final|all|after=F", help=CHECKPOINTS_HELP)


def table_options(args, **overrides) -> dict:
    """`load_table` / `read_runs` keywords from the parsed table options."""
    from scalefit.fitting.columns import parse_n_cols

    opts = {"n_col": parse_n_cols(args.n_col), "d_col": args.d_col, "c_col": args.c_col,
            "loss_col": args.loss_col, "run_col": args.run_col, "weight_col": getattr(args, "weight_col", None),
            "n_kind": args.n_kind or NKind.TOTAL, "loss_unit": getattr(args, "loss_unit", "nats"),
            "c_kind": getattr(args, "c_kind", None),
            "where": getattr(args, "where", None), "by": getattr(args, "by", None) or (),
            "best_of": getattr(args, "best_of", None), "best_per": getattr(args, "best_per", "N,D"),
            "checkpoints": getattr(args, "checkpoints", "final")}
    return {**opts, **overrides}


def read_table(args, source=None, **overrides):
    """The runs the command names (a file, a dataset, a run store), read once with its table options."""
    from scalefit.fitting.sources import read_runs

    return read_runs(args.table if source is None else source, **table_options(args, **overrides))


def check_writable(path) -> None:
    """OSError naming `path` when a file cannot be written there (checked before the work, not after)."""
    import errno
    from pathlib import Path

    folder = Path(path).resolve().parent
    probe = folder
    while not probe.exists():  # the atomic writer makes missing folders: check the first that exists
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(probe))
    if not os.access(probe, os.W_OK):
        raise PermissionError(errno.EACCES, "the folder is not writable (read-only or not yours)", str(path))


def print_warnings(table) -> None:
    """What reading the table found that the user must know, on stderr (it also goes into the fit)."""
    for w in table.warnings:
        print(f"warning: {w}", file=sys.stderr)


def compile_cache() -> None:
    """JAX's persistent compilation cache in the user's cache folder (`$SCALEFIT_CACHE/jax`, else
    ~/.cache/scalefit/jax), unless one is configured: a second `scalefit fit` loads the solver's
    compiled code instead of compiling it again. Set before JAX is imported (through its environment
    variables), so a command that never fits never imports JAX for it."""
    if "jax" in sys.modules:
        import jax

        if jax.config.jax_compilation_cache_dir:
            return  # configured already (by the user, or a test session)
    from scalefit.training.corpus import default_cache_dir

    folder = str(default_cache_dir() / "jax")
    if "jax" in sys.modules:
        import jax

        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        return
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", folder)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
