"""Subcommands that read tables of runs: fit, datasets, isoflop.

Each `add_<name>(sub)` builds a parser and sets `func`; the work lives in the library modules,
imported inside the functions so `scalefit --help` stays fast.
"""

from __future__ import annotations

import sys

from scalefit.cli.common import key_values
from scalefit.conventions import CKind, NKind

EXIT_DEGENERATE = 3  # exit status of a fit that is degenerate or unidentifiable (2: bad input)


def add_fit(sub) -> None:
    p = sub.add_parser("fit", help="fit a scaling law to a table of runs",
                       description="Fit a scaling law to TABLE: a CSV/Parquet file, a reference "
                                   "dataset name (scalefit datasets list) or a run-store folder.")
    p.add_argument("table", help="CSV or Parquet file, reference dataset name, or run-store folder")
    p.add_argument("--law", default="chinchilla",
                   help="law to fit (`scalefit laws` lists them); NAME[KEY=VALUE] holds a parameter fixed; "
                        "auto: choose by leave-future-out cross-validation on these runs, intervals calibrated")
    p.add_argument("--fix", action="append", default=[], metavar="KEY=VALUE",
                   help="hold a parameter of the law at VALUE (repeatable), e.g. --fix E=1.6, or a derived "
                        "quantity: --fix a=0.5 (N_opt ~ C^0.5: Chinchilla with beta = alpha)")
    p.add_argument("--also-n", action="append", default=[], metavar="KIND=COLUMN",
                   help="--law auto: also try N read from COLUMN, counting KIND parameters (repeatable), "
                        "e.g. non-embedding=N_non_embedding")
    p.add_argument("--calibrate", action="store_true",
                   help="widen the intervals of the law by its own leave-future-out errors (auto always does)")
    p.add_argument("--objective", choices=["huber", "likelihood"], default="huber",
                   help="huber: Huber on log residuals (Hoffmann et al. 2022); likelihood: Huber likelihood "
                        "with a fitted scale (Besiroglu et al. 2024; --delta then in units of the scale)")
    p.add_argument("--keep-degenerate", action="store_true",
                   help="exit 0 and write --out even when the fit is degenerate or unidentifiable (exit 3)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B",
                   help="bootstrap resamples of whole runs for SEs and CIs (e.g. 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--ci", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber delta on log residuals")
    p.add_argument("--over-penalty", type=float, default=1.0,
                   help="multiply the penalty of over-predicted losses by this (1 = symmetric)")
    for field in ("n", "d", "c", "loss", "run", "weight"):
        p.add_argument(f"--{field}-col", default=None,
                       help=f"column holding {field.upper() if len(field) == 1 else field}")
    p.add_argument("--n-kind", default="total", choices=list(NKind), type=NKind.parse,
                   help="which parameters N counts")
    p.add_argument("--c-kind", default=None, choices=list(CKind), type=CKind.parse,
                   help="how C was counted (default: from the data; exact for a run store)")
    p.add_argument("--compute", type=float, action="append", default=[], metavar="C",
                   help="also print the compute-optimal N, D at C FLOPs (chinchilla law; repeatable)")
    p.add_argument("--holdout", type=float, default=0.15,
                   help="backtest: refit without this share (< 1) or number (>= 1) of the largest-C runs "
                        "and report the error on them; 0 turns it off")
    p.add_argument("--out", default=None, help="write the fit result as JSON here")
    p.add_argument("--approach", choices=["3", "all"], default="3",
                   help="3: the parametric fit (default); all: also Approaches 1 and 2 where the runs "
                        "allow, printing a, b of each with intervals and flagging disagreement")
    p.set_defaults(func=_fit)


def _fit(args) -> int:
    from scalefit.fitting.fitter import fit
    from scalefit.fitting.laws import get_law
    from scalefit.fitting.solver import Objective
    from scalefit.fitting.sources import is_store, read_runs, store_curves

    auto = args.law.strip() == "auto"
    n_columns = {NKind.parse(k, "--also-n"): v for k, v in key_values(args.also_n, float_values=False)}
    keep = list(n_columns.values())
    if auto and not n_columns and is_store(args.table):  # a run store counts N three ways: try each
        keep = [k.store_column for k in NKind]
    table = read_runs(args.table, n_col=args.n_col, d_col=args.d_col, c_col=args.c_col,
                      loss_col=args.loss_col, run_col=args.run_col, weight_col=args.weight_col,
                      n_kind=args.n_kind, c_kind=args.c_kind, keep=keep)
    fixed = dict(key_values(args.fix))
    law = "auto" if auto else get_law(args.law).with_fixed(**fixed)
    objective = Objective(args.delta, args.over_penalty, scale=args.objective == "likelihood")
    choice = {"fixed": fixed, "n_columns": n_columns or None} if auto else {"calibrate": args.calibrate}
    result = fit(table, law, objective=objective, bootstrap_resamples=args.bootstrap, seed=args.seed,
                 ci_level=args.ci, progress=args.bootstrap >= 200, **choice)
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

        # A run store's logs are training curves: Approach 1 reads them.
        curves = store_curves(args.table, table) if is_store(args.table) else None
        print(compare_approaches(table, result, curves=curves, level=args.ci))
        _print_kaplan_frontier(table, result)
    if args.holdout > 0:
        from scalefit.analysis.backtest import backtest, can_backtest

        why_not = can_backtest(table, law, args.holdout)
        if why_not:
            print(f"backtest skipped: {why_not}")
        else:
            # Fewer resamples than the main fit: the backtest's intervals only need to be indicative.
            print(backtest(table, law, holdout=args.holdout, bootstrap_resamples=min(args.bootstrap, 100),
                           seed=args.seed, level=args.ci, objective=objective, **choice))
    if not result.status.ok and not args.keep_degenerate:
        print(f"scalefit: the fit is {result.status}: {result.reasons[0] if result.reasons else ''}"
              + ("; not writing --out" if args.out else "") + " (--keep-degenerate keeps it)", file=sys.stderr)
        return EXIT_DEGENERATE
    if args.out:
        print(f"wrote {result.save(args.out)}")
    return 0


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
    show.add_argument("--rows", type=int, default=5, help="rows to print")
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
    p = sub.add_parser("isoflop", help="Chinchilla Approach 2: IsoFLOP minima and N_opt ~ C^a from a CSV")
    p.add_argument("table", help="CSV with columns N, D, C (budget), loss (see --rename)")
    p.add_argument("--method", choices=["akima", "parabola"], default="akima",
                   help="minimum of each IsoFLOP curve: Akima interpolation (Porian et al. 2024) "
                        "or parabola vertex (Hoffmann et al. 2022)")
    p.add_argument("--by", help="grouping column: one analysis per value (e.g. cfg_id)")
    p.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                   help="rename a column first, e.g. --rename n=N --rename flops=C")
    p.set_defaults(func=_isoflop)


def _isoflop(args) -> int:
    import pandas as pd

    from scalefit.analysis.approach2 import approach2, approach2_by
    from scalefit.fitting.table import load_table

    frame = pd.read_csv(args.table).rename(columns=dict(key_values(args.rename, float_values=False)))
    table = load_table(frame, keep=[args.by] if args.by else ())
    results = approach2_by(table, args.by, method=args.method) if args.by else {args.table: approach2(
        table, method=args.method)}
    for key, r in results.items():
        print(f"{key}: a = {r.a:.4f} +- {r.N_fit.exponent_se:.4f}, b = {r.b:.4f} +- "
              f"{r.D_fit.exponent_se:.4f} ({r.N_fit.n_points} budgets, {len(r.flagged)} flagged)")
        for row in r.optima[r.optima.flagged].itertuples():
            print(f"  flagged C = {row.C:.4g}: {row.reason}")
        for reason, count in r.excluded_rows.items():
            print(f"  excluded {count} rows: {reason}")
    return 0
