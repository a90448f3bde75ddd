"""What several subcommand groups share: KEY=VALUE arguments, the table options, the compile cache."""

from __future__ import annotations

import os
import sys

from scalefit.conventions import CKind, NKind

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
            "n_kind": args.n_kind or NKind.TOTAL, "c_kind": getattr(args, "c_kind", None),
            "where": getattr(args, "where", None), "by": getattr(args, "by", None) or (),
            "best_of": getattr(args, "best_of", None), "best_per": getattr(args, "best_per", "N,D"),
            "checkpoints": getattr(args, "checkpoints", "final")}
    return {**opts, **overrides}


def read_table(args, source=None, **overrides):
    """The runs the command names (a file, a dataset, a run store), read once with its table options."""
    from scalefit.fitting.sources import read_runs

    return read_runs(args.table if source is None else source, **table_options(args, **overrides))


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
