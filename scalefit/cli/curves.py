"""Subcommands of whole loss curves: scalefit curves fit | forecast | optimise | derive | plot.

Each `add_<name>(sub)` builds a parser and sets `func`; the work lives in the library modules
(`scalefit.fitting.curve_sources`, `.curvefit`, `scalefit.analysis.derived`, `.schedule_opt`), imported
inside the functions so `scalefit --help` stays fast.
"""

from __future__ import annotations

import sys

from scalefit.conventions import COUNTED, CKind, NKind


def _source_args(p) -> None:
    p.add_argument("source", help="run-store folder, the dataset name multipower, or a CSV/Parquet of points "
                                  "(columns curve, step, loss; lr per step or --schedule)")
    p.add_argument("--curves", default=None, help="comma-separated curves to use (default: all)")
    p.add_argument("--loss", choices=["eval", "train"], default="eval", help="run store: which logged loss")
    p.add_argument("--schedule", default=None, help="a table's schedule: JSON knots, CSV step,lr, or a spec "
                                                    "like cosine:steps=2000,lr=3e-3,warmup=100,min_ratio=0.1")
    p.add_argument("--n", type=float, default=None, help="a table's model size N (parameters), for all its curves")
    p.add_argument("--tokens-per-step", type=float, default=None, help="a table's tokens per optimizer step")
    p.add_argument("--step-offset", type=int, default=0,
                   help="add to a table's step to count updates done (1 when step is the last update's index)")
    p.add_argument("--n-kind", default="total", choices=list(NKind), type=NKind.parse, help="which parameters N counts")
    p.add_argument("--c-kind", default="exact", choices=list(COUNTED), type=CKind.parse,
                   help="run store: how C is counted")


def _read(args, curves=None):
    from scalefit.fitting.curve_sources import read_curves
    from scalefit.fitting.schedules import from_spec

    sched = from_spec(args.schedule) if args.schedule else None
    table = read_curves(args.source, schedule=sched, loss=args.loss, n_kind=args.n_kind, c_kind=args.c_kind,
                        N=args.n, tokens_per_step=args.tokens_per_step, step_offset=args.step_offset)
    names = curves if curves is not None else args.curves
    if names:
        table = table.subset([c.strip() for c in names.split(",") if c.strip()])
    return table


def add_curves(sub) -> None:
    p = sub.add_parser("curves", help="laws of whole loss curves under a learning-rate schedule (fit, forecast, "
                                      "optimise a schedule, derive (N, D) points, plot)")
    csub = p.add_subparsers(dest="curves_cmd", required=True)

    lw = csub.add_parser("laws", help="the curve laws: name, formula, parameters")
    lw.set_defaults(func=_laws)

    f = csub.add_parser("fit", help="fit a curve law to loss curves and score it on held-out curves")
    _source_args(f)
    f.add_argument("--law", default="multipower", help="curve law (multipower, tissue, power_steps, multipower_joint; "
                                                       "NAME[KEY=VALUE] pins a parameter)")
    f.add_argument("--test", default=None, help="comma-separated held-out curves: forecast and scored, not fitted")
    f.add_argument("--bootstrap", type=int, default=0, metavar="B", help="bootstrap resamples of whole curves")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", default=None, help="write the fit as JSON here")
    f.set_defaults(func=_fit)

    fc = csub.add_parser("forecast", help="the loss curve a fitted law predicts for a schedule")
    fc.add_argument("fit", help="a fit JSON written by `scalefit curves fit --out`")
    fc.add_argument("--schedule", required=True, help="JSON knots, CSV step,lr, or a spec (cosine:steps=...,...)")
    fc.add_argument("--n", type=float, default=None, help="model size N (joint laws)")
    fc.add_argument("--points", type=int, default=20, help="steps to print, log-spaced to the end (default 20)")
    fc.set_defaults(func=_forecast)

    o = csub.add_parser("optimise", help="the non-increasing schedule with the lowest predicted final loss")
    o.add_argument("fit", help="a fit JSON written by `scalefit curves fit --out`")
    o.add_argument("--reference", required=True,
                   help="the schedule to beat (its length, warmup and peak are kept): JSON/CSV or a spec")
    o.add_argument("--n", type=float, default=None, help="model size N (joint laws)")
    o.add_argument("--min-ratio", type=float, default=1e-3, help="lowest rate, as a share of the peak")
    o.add_argument("--out", required=True, help="write the schedule here (JSON knots: scalefit train --schedule-file)")
    o.set_defaults(func=_optimise)

    d = csub.add_parser("derive", help="(N, D) points: each curve's final loss had it cooled down earlier")
    d.add_argument("fit", help="a fit JSON written by `scalefit curves fit --out`")
    _source_args(d)
    d.add_argument("--cooldown-frac", type=float, default=0.2, help="share of each length spent cooling down")
    d.add_argument("--min-ratio", type=float, default=0.1, help="rate at the end of the cooldown / peak")
    d.add_argument("--shape", default="1-sqrt", help="cooldown shape: 1-sqrt (the trainer's WSD), linear, cosine, exp")
    d.add_argument("--lengths", default=None, help="comma-separated lengths in steps (default: 6 log-spaced per curve)")
    d.add_argument("--out", required=True, help="CSV of derived rows (`scalefit fit` reads it)")
    d.set_defaults(func=_derive)

    pl = csub.add_parser("plot", help="observed against predicted curves with their intervals")
    pl.add_argument("fit", help="a fit JSON written by `scalefit curves fit --out`")
    _source_args(pl)
    pl.add_argument("--out", required=True, help="image file (.png, .pdf, .svg)")
    pl.set_defaults(func=_plot)


def _laws(args) -> int:
    from scalefit.fitting.laws import CURVE_LAWS

    for name, law in CURVE_LAWS.items():
        print(f"{name:18s} {law.formula}\n{'':18s} parameters: {', '.join(law.param_names)}"
              + ("; depends on N" if law.reads_n else ""))
    return 0


def _print_errors(label: str, errors) -> None:
    for r in errors.itertuples():
        print(f"  {label} {r.curve:32s} {r.points:5d} points  mean error {100 * r.mean_err:6.3f}%  "
              f"worst {100 * r.worst_err:6.3f}%")


def _fit(args) -> int:
    from scalefit.fitting.curvefit import fit_curves

    table = _read(args)
    test = None
    if args.test:
        names = [c.strip() for c in args.test.split(",") if c.strip()]
        test = table.subset(names, note="held out")
        table = table.subset([c for c in table.curves if c not in names], note="fitted")
    result = fit_curves(table, args.law, bootstrap_resamples=args.bootstrap, seed=args.seed,
                        progress=args.bootstrap >= 200)
    print(result.result.report())
    _print_errors("fit ", result.errors(table))
    if test is not None:
        e = result.errors(test)
        _print_errors("test", e)
        print(f"  held out: mean error {100 * e.mean_err.mean():.3f}%, mean of per-curve worst "
              f"{100 * e.worst_err.mean():.3f}%, worst {100 * e.worst_err.max():.3f}%")
    if args.out:
        print(f"wrote {result.save(args.out)}")
    return 0


def _load(path):
    from scalefit.fitting.curvefit import load_curve_fit

    return load_curve_fit(path)


def _forecast(args) -> int:
    import numpy as np

    from scalefit.fitting.schedules import from_spec

    fit = _load(args.fit)
    sched = from_spec(args.schedule)
    steps = np.unique(np.round(np.geomspace(1, sched.steps, args.points)).astype(int))
    p = fit.predict(sched, steps, N=args.n)
    print(f"# {fit.result.law.name} on schedule {sched.label} ({sched.steps} steps); loss in nats/token, "
          f"{100 * p.level:g}% intervals (law: param_low/high; one run: low/high)")
    print("step,lr,loss,param_low,param_high,low,high")
    for i, s in enumerate(steps):
        pl = "" if p.param_low is None else f"{p.param_low[i]:.5f}"
        ph = "" if p.param_high is None else f"{p.param_high[i]:.5f}"
        print(f"{s},{sched.rates[s - 1]:.6g},{p.loss[i]:.5f},{pl},{ph},{p.low[i]:.5f},{p.high[i]:.5f}")
    return 0


def _optimise(args) -> int:
    from scalefit.analysis.schedule_opt import optimise_schedule
    from scalefit.fitting.schedules import from_spec, write_schedule

    fit = _load(args.fit)
    ref = from_spec(args.reference)
    o = optimise_schedule(fit, ref, N=args.n, min_ratio=args.min_ratio)
    path = write_schedule(o.schedule, args.out)
    print(f"optimised {o.schedule.steps} steps ({o.iterations} L-BFGS-B iterations, "
          f"{'converged' if o.converged else 'NOT converged'}): predicted final loss {o.predicted.loss[0]:.5f} "
          f"[{o.predicted.low[0]:.5f}, {o.predicted.high[0]:.5f}] vs {o.reference_predicted.loss[0]:.5f} for "
          f"{ref.label}")
    print(f"wrote {path} ({len(o.schedule.knots())} knots); train it with scalefit train --schedule-file {path}")
    return 0


def _derive(args) -> int:
    from scalefit.analysis.derived import derived_points

    fit = _load(args.fit)
    table = _read(args)
    lengths = None if not args.lengths else [int(float(x)) for x in args.lengths.split(",")]
    rows = derived_points(fit, table, lengths, cooldown_frac=args.cooldown_frac, min_ratio=args.min_ratio,
                          shape=args.shape)
    rows.to_csv(args.out, index=False)
    print(f"wrote {len(rows)} derived (N, D) rows from {len(table.curves)} curves to {args.out} "
          f"(D: {rows.attrs['d_convention']}; `scalefit fit {args.out}` fits them)")
    return 0


def _plot(args) -> int:
    from scalefit.report.plots import loss_curves

    fit = _load(args.fit)
    table = _read(args)
    ax = loss_curves(fit, table)
    ax.figure.savefig(args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
