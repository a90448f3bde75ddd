"""Subcommands that read tables of runs: fit, datasets, isoflop.

Each `add_<name>(sub)` builds a parser and sets `func`; the work lives in the library modules,
imported inside the functions so `scalefit --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from scalefit.cli.common import (add_column_options, add_table_options, check_writable, compile_cache, key_values,
                                 level, positive_int, print_warnings, read_table)
from scalefit.conventions import NKind

EXIT_DEGENERATE = 3  # exit status of a fit that is degenerate or unidentifiable (2: bad input)


def add_fit(sub) -> None:
    p = sub.add_parser("fit", help="fit a scaling law to a table of runs (one fit per group with --by)",
                       description="Fit a scaling law to TABLE: a CSV/Parquet/JSONL file (a W&B runs export "
                                   "too), a reference dataset name (scalefit datasets list) or a run-store folder.")
    p.add_argument("table", help="CSV, Parquet or JSONL file, reference dataset name, or run-store folder")
    p.add_argument("--law", default="chinchilla",
                   help="law to fit (`scalefit laws` lists them); NAME[KEY=VALUE] holds a parameter fixed; "
                        "auto: choose by leave-future-out cross-validation on these runs, intervals calibrated")
    p.add_argument("--fix", action="append", default=[], metavar="KEY=VALUE",
                   help="hold a parameter of the law at VALUE (repeatable), e.g. --fix E=1.6, or a derived "
                        "quantity: --fix a=0.5 (N_opt ~ C^0.5: Chinchilla with beta = alpha)")
    p.add_argument("--also-n", action="append", default=[], metavar="KIND=COLUMN",
                   help="--law auto: also try N read from COLUMN, counting KIND parameters (repeatable), "
                        "e.g. non-embedding=N_non_embedding")
    p.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=None,
                   help="widen the intervals of the law by its own leave-future-out errors where a cut leaves "
                        "enough runs below it (auto always does; default: on for tables of up to 10,000 rows)")
    p.add_argument("--objective", choices=["huber", "likelihood"], default="huber",
                   help="huber: Huber on log residuals (Hoffmann et al. 2022); likelihood: Huber likelihood "
                        "with a fitted scale (Besiroglu et al. 2024; --delta then in units of the scale)")
    p.add_argument("--keep-degenerate", action="store_true",
                   help="exit 0 and write --out even when the fit is degenerate or unidentifiable (exit 3)")
    p.add_argument("--bootstrap", type=positive_int, default=0, metavar="B",
                   help="bootstrap resamples of whole runs for SEs and CIs (e.g. 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--ci", type=level, default=0.95, help="confidence level of the intervals")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber delta on log residuals")
    p.add_argument("--over-penalty", type=float, default=1.0,
                   help="multiply the penalty of over-predicted losses by this (1 = symmetric)")
    add_table_options(p)
    p.add_argument("--compute", type=float, action="append", default=[], metavar="C",
                   help="also print the compute-optimal N, D at C FLOPs (chinchilla law; repeatable)")
    add_backtest_options(p)
    p.add_argument("--out", default=None, help="write the fit result as JSON here (with --by: all groups' fits)")
    p.add_argument("--summary", default=None, metavar="CSV", help="with --by: write the summary table here")
    p.add_argument("--approach", choices=["3", "all"], default="3",
                   help="3: the parametric fit (default); all: also Approaches 1 and 2 where the runs "
                        "allow, printing a, b of each with intervals and flagging disagreement")
    p.set_defaults(func=_fit)


def add_backtest_options(p) -> None:
    """--holdout, --holdout-by, --cutoff (fit and report)."""
    g = p.add_argument_group("backtest (refit without some runs, score the forecasts of them)")
    g.add_argument("--holdout", type=float, default=0.15,
                   help="share (< 1) or number (>= 1) of runs held out (curve-tail: share of each run's "
                        "tokens); 0 turns the backtest off")
    # The names of scalefit.analysis.backtest.SPLITS (not imported here: it imports the fitter and JAX).
    g.add_argument("--holdout-by", default="C", metavar="C|N|D|run|curve-tail",
                   help="what is held out: the runs of largest C (default), N (the largest models), D (most "
                        "tokens), run (exactly the largest runs, by C then N) or curve-tail (the last part of "
                        "every curve: works on a handful of long curves)")
    g.add_argument("--cutoff", type=float, default=None,
                   help="hold out above this value of the split's variable instead (curve-tail: a share of "
                        "each run's tokens, e.g. 0.7)")


def backtest_table(args, table):
    """The rows a backtest splits: the table itself, or for a curve-tail split of a table read with each
    run's final point, the same runs with every checkpoint."""
    if args.holdout_by != "curve-tail" or args.checkpoints != "final":
        return table
    return read_table(args, checkpoints="all")


def run_backtest(args, table, law, objective, quiet: bool = False, choice: dict | None = None):
    """The backtest the options ask for, or None with the reason printed (unless `quiet`)."""
    from scalefit.analysis.backtest import backtest, can_backtest

    if args.holdout <= 0 and args.cutoff is None:
        return None
    holdout = int(args.holdout) if args.holdout >= 1 else args.holdout
    why_not = "" if args.cutoff is not None else can_backtest(table, law, holdout, holdout_by=args.holdout_by)
    if why_not:
        if not quiet:
            print(f"backtest skipped: {why_not}")
        return why_not
    # Fewer resamples than the main fit: the backtest's intervals only need to be indicative.
    return backtest(table, law, holdout=holdout, cutoff_C=args.cutoff, holdout_by=args.holdout_by,
                    bootstrap_resamples=min(args.bootstrap, 100), seed=args.seed, level=args.ci,
                    objective=objective, **(choice or {}))


def _fit(args) -> int:
    compile_cache()
    from scalefit.fitting.fitter import fit
    from scalefit.fitting.laws import get_law
    from scalefit.fitting.solver import Objective
    from scalefit.fitting.sources import is_store, store_curves

    if args.out:
        check_writable(args.out)
    auto = args.law.strip() == "auto"
    n_columns = {NKind.parse(k, "--also-n"): v for k, v in key_values(args.also_n, float_values=False)}
    keep = list(n_columns.values())
    if auto and not n_columns and is_store(args.table):  # a run store counts N three ways: try each
        keep = [k.store_column for k in NKind]
    table = read_table(args, **({"keep": keep} if keep else {}))
    print_warnings(table)
    fixed = dict(key_values(args.fix))
    law = "auto" if auto else get_law(args.law).with_fixed(**fixed)
    objective = Objective(args.delta, args.over_penalty, scale=args.objective == "likelihood")
    choice = {"fixed": fixed, "n_columns": n_columns or None} if auto else {"calibrate": args.calibrate}
    options = dict(objective=objective, bootstrap_resamples=args.bootstrap, seed=args.seed, ci_level=args.ci,
                   **choice)
    if table.by:
        return _fit_groups(args, table, law, objective, options, choice)
    result = fit(table, law, progress=args.bootstrap >= 200, **options)
    if args.compute:
        from dataclasses import replace

        derived = dict(result.derived)
        for C in args.compute:
            alloc = result.allocate(C)
            derived[f"N_opt@{C:.3g}"] = alloc.N
            derived[f"D_opt@{C:.3g}"] = alloc.D
            derived[f"L_opt@{C:.3g}"] = alloc.loss
        result = replace(result, derived=derived)  # so the JSON carries them too
    print(result.report())
    if args.approach == "all":
        from scalefit.analysis.compare import compare_approaches
        from scalefit.fitting.select import is_curve_table

        # A run store's logs are training curves, and so are a curve table's checkpoints: Approach 1 reads them.
        curves = store_curves(args.table, table) if is_store(args.table) else read_table(args, checkpoints="all")
        curves = curves if is_curve_table(curves.frame) else None
        print(compare_approaches(table, result, curves=curves, level=args.ci))
        _print_kaplan_frontier(table, result)
    bt = run_backtest(args, backtest_table(args, table), law, objective, choice=choice)
    if bt is not None and not isinstance(bt, str):
        print(bt)
    if not result.status.ok and not args.keep_degenerate:
        print(f"scalefit: the fit is {result.status}: {result.reasons[0] if result.reasons else ''}"
              + ("; not writing --out" if args.out else "") + " (--keep-degenerate keeps it)", file=sys.stderr)
        return EXIT_DEGENERATE
    if args.out:
        print(f"wrote {result.save(args.out)}")
    return 0


def _fit_groups(args, table, law, objective, options, choice) -> int:
    """One fit per group: the summary table, each group's warnings and backtest, all fits in one file."""
    from scalefit.fitting.groups import GroupFits, key_text, split_by
    from scalefit.fitting.fitter import fit

    groups = split_by(table)
    curve_groups = split_by(backtest_table(args, table)) if args.holdout > 0 or args.cutoff else {}
    fits, failed, errors = {}, {}, {}
    for key, sub in groups.items():
        try:
            fits[key] = fit(sub, law, **options)
        except ValueError as e:
            failed[key] = str(e)
            continue
        bt = run_backtest(args, curve_groups.get(key, sub), law, objective, quiet=True, choice=choice)
        if bt is not None:
            errors[key] = bt
    gf = GroupFits(by=table.by, fits=fits, failed=failed, source=table.source)
    summary = gf.summary()
    if errors:
        summary["backtest"] = [_backtest_cell(errors.get(k)) for k in gf.keys()]
    print(f"{getattr(law, 'name', law)} by {', '.join(table.by)}: {len(fits)} groups fitted, {len(failed)} not "
          f"({len(table)} rows, {len(table.excluded)} excluded; N {table.n_kind}, C {table.c_kind})")
    with pd_options():
        print(summary.to_string(index=False, float_format=lambda x: f"{x:.5g}"))
    for key, r in fits.items():
        for w in r.warnings:
            if w not in table.warnings:
                print(f"  {key_text(table.by, key)}: WARNING: {w}")
    for key, bt in errors.items():
        print(f"  {key_text(table.by, key)}: " + (f"backtest skipped: {bt}" if isinstance(bt, str) else
                                                  str(bt).splitlines()[2].strip()))
    if args.out:
        print(f"wrote {gf.save(args.out)} ({len(fits)} fits)")
    if args.summary:
        summary.to_csv(args.summary, index=False)
        print(f"wrote {args.summary}")
    return 0


def _backtest_cell(bt) -> str:
    if bt is None:
        return ""
    if isinstance(bt, str):
        return "skipped"
    return f"{bt.mean_abs_rel_err:.2%} (max {bt.max_abs_rel_err:.2%})"


def pd_options():
    import pandas as pd

    return pd.option_context("display.width", 250, "display.max_columns", 60)


def _print_kaplan_frontier(table, result) -> None:
    """Kaplan et al. 2020's L(C) = (C_c/C)^alpha_C (and + E) on the frontier of the table's runs."""
    from scalefit.analysis.frontier import fit_frontier

    print(f"Kaplan L(C) frontier (runs lower than every run of less compute; C {table.c_kind}):")
    for irreducible in (False, True):
        try:
            f = fit_frontier(table, irreducible=irreducible)
        except ValueError as e:
            print(f"  {'with' if irreducible else 'without'} E: not fitted ({e})")
            continue
        v = f.values()
        e = f"{v['E']:.4g} + " if irreducible else ""
        print(f"  L = {e}(C_c/C)^alpha_C: alpha_C = {v['alpha_C']:.4g}, "
              f"C_c = {v['C_c']:.4g}, RMS log residual {f.solver.residual_scale:.3g} ({f.n_points} runs)")
    p = result.values()
    if {"alpha", "beta"} <= set(p):
        print(f"  Approach 3 implies alpha_C = alpha beta / (alpha + beta) = "
              f"{p['alpha'] * p['beta'] / (p['alpha'] + p['beta']):.4g} for the reducible loss"
              + ("" if result.compute.is_6nd else " if C were 6ND"))


def add_laws(sub) -> None:
    p = sub.add_parser("laws", help="the laws scalefit fits: name, formula, inputs, what they can do")
    p.set_defaults(func=_laws)


def _laws(args) -> int:
    from scalefit.fitting.laws import LAWS

    for name, law in LAWS.items():
        can = [c for c, ok in (("allocates C into N, D", law.can_allocate), ("frontier L(C)", law.has_frontier),
                               ("closed-form optimum", law.optimum is not None)) if ok]
        cond = f"; also needs {', '.join(law.conditions)}" if law.conditions else ""
        print(f"{name:18s} {law.formula}")
        print(f"{'':18s} inputs {', '.join(law.inputs)}; parameters {', '.join(law.param_names)}"
              f"{cond}{'; ' + ', '.join(can) if can else ''}")
    return 0


def add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="reference datasets shipped with scalefit")
    dsub = p.add_subparsers(dest="datasets_cmd", required=True)
    dsub.add_parser("list", help="list the reference datasets").set_defaults(func=_datasets_list)
    show = dsub.add_parser("show", help="provenance and first rows of one dataset")
    show.add_argument("name")
    show.add_argument("--rows", type=positive_int, default=5, help="rows to print")
    show.set_defaults(func=_datasets_show)


def _datasets_list(args) -> int:
    from scalefit.fitting import datasets

    for name in datasets.names():
        info = datasets.info(name)
        print(f"{name:20s} {info['rows']:6d} rows  {info['title']}")
    return 0


def _datasets_show(args) -> int:
    from scalefit.fitting import datasets

    info = datasets.info(args.name)
    for k, v in info.items():
        print(f"{k}: {v}")
    print(datasets.load(args.name).head(args.rows).to_string())
    return 0


def add_isoflop(sub) -> None:
    p = sub.add_parser("isoflop", help="Chinchilla Approach 2: IsoFLOP minima and N_opt ~ C^a, D_opt ~ C^b",
                       description="Approach 2 on TABLE (any source `scalefit fit` reads): per budget C, the "
                                   "loss-minimising N and D, then power laws in C. Both minima are computed; "
                                   "the other method is printed when the two disagree beyond their intervals.")
    p.add_argument("table", help="CSV, Parquet or JSONL file, reference dataset name, or run-store folder")
    p.add_argument("--method", choices=["parabola", "akima"], default="parabola",
                   help="minimum of each IsoFLOP curve: parabola vertex in log N (Hoffmann et al. 2022, the "
                        "default) or Akima interpolation (Porian et al. 2024)")
    p.add_argument("--ci", type=level, default=0.95, help="level of the intervals the two methods are compared at")
    add_table_options(p)
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                   help="rename a column first, e.g. --rename n=N --rename flops=C (or name it: --n-col n)")
    p.set_defaults(func=_isoflop)


def _isoflop(args) -> int:
    from scalefit.analysis.approach2 import approach2
    from scalefit.fitting.columns import read_source
    from scalefit.fitting.groups import key_text, split_by
    from scalefit.fitting.select import reason_kind

    source = args.table
    if args.rename:
        source = read_source(args.table, args.n_kind or "total")[0].rename(
            columns=dict(key_values(args.rename, float_values=False)))
    table = read_table(args, source)
    print_warnings(table)
    groups = {key_text(table.by, k): t for k, t in split_by(table).items()} if table.by else {args.table: table}
    for name, t in groups.items():
        try:
            r = approach2(t, method=args.method, level=args.ci)
        except ValueError as e:
            print(f"{name}: not fitted: {e}")
            continue
        print(f"{name}: {_exponents(r)} ({r.N_fit.n_points} budgets, {len(r.flagged)} flagged, {r.method})")
        if r.disagreement:
            alt = r.alternative
            print(f"  DISAGREE: {alt.method} gives {_exponents(alt)} ({alt.N_fit.n_points} budgets): "
                  f"{r.disagreement}")
        for row in r.optima[r.optima.flagged].itertuples():
            print(f"  flagged C = {row.C:.4g}: {row.reason}")
        counts: dict = {}
        for reason, count in r.excluded_rows.items():
            for part in reason.split("; "):
                counts[reason_kind(part)] = counts.get(reason_kind(part), 0) + count
        for reason, count in counts.items():
            print(f"  excluded {count} rows: {reason}")
    return 0


def _exponents(r) -> str:
    return (f"a = {r.a:.4f} +- {r.N_fit.exponent_se:.4f}, b = {r.b:.4f} +- {r.D_fit.exponent_se:.4f}")


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="forecasts with intervals for every row of a table of targets",
                       description="Forecast each row of TARGETS (N and D, or a budget C, per row; CSV, Parquet "
                                   "or JSONL) from FIT (scalefit fit --out; a file of fits by group picks each "
                                   "row's group by its columns), in the fit's conventions.")
    p.add_argument("fit", help="fit result JSON (scalefit fit --out), or the fits of scalefit fit --by --out")
    p.add_argument("targets", help="CSV, Parquet or JSONL file of targets")
    p.add_argument("--out", default=None, help="write the forecasts here (.csv or .parquet; default: CSV on stdout)")
    p.add_argument("--level", type=level, default=None, help="interval level (default: the fit's)")
    add_column_options(p, weight=False)
    p.set_defaults(func=_predict)


def _predict(args) -> int:
    import sys
    from pathlib import Path

    compile_cache()
    from scalefit.fitting.groups import load_fits
    from scalefit.fitting.targets import summarize

    from scalefit.fitting.columns import parse_n_cols

    fits = load_fits(args.fit)
    pred = fits.predict_table(args.targets, level=args.level, n_col=parse_n_cols(args.n_col), d_col=args.d_col,
                              c_col=args.c_col, loss_col=args.loss_col, n_kind=args.n_kind)
    print(summarize(pred), file=sys.stderr)
    if args.out is None:
        pred.to_csv(sys.stdout, index=False)
        return 0
    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix == ".csv":
        pred.to_csv(out, index=False)
    elif suffix in (".parquet", ".pq"):
        pred.attrs = {k: v for k, v in pred.attrs.items() if k != "notes"}
        pred.to_parquet(out, index=False)
    else:
        raise ValueError(f"cannot write {out}: expected a .csv or .parquet file name")
    print(f"wrote {out} ({len(pred)} rows)", file=sys.stderr)
    return 0
