"""Subcommands that turn a fit into decisions: plan, forecast, report, quickstart.

Each `add_<name>(sub)` builds a parser and sets `func`; the work lives in the library modules,
imported inside the functions so `scalefit --help` stays fast.
"""

from __future__ import annotations

from scalefit.cli.common import key_values
from scalefit.conventions import CKind, NKind


def add_quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="train a small IsoFLOP sweep here, fit, backtest, forecast, report",
                       description="Run experiments/quickstart.toml on this machine (finished runs are "
                                   "reused), fit all approaches, backtest the largest budget, forecast "
                                   "10x and 100x it, and write the report.")
    p.add_argument("--sweep", default=None, help="sweep file or shipped sweep name (default: quickstart)")
    p.add_argument("--runs", default=None, help="run store folder (default: runs/<sweep name>)")
    p.add_argument("--out", default="report/quickstart", help="report folder")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the fit")
    p.add_argument("--jobs", type=int, default=None, help="runs trained at once (default: one per core)")
    p.set_defaults(func=_quickstart)


def quickstart_file():
    """The shipped experiments/quickstart.toml (in a checkout, an editable install or a wheel)."""
    from scalefit.resources import sweep_file

    return sweep_file("quickstart")


def _quickstart(args) -> int:
    import time
    from pathlib import Path

    from scalefit.fitting.sources import read_runs, store_curves
    from scalefit.report.build import build_report
    from scalefit.sweep.plan import plan_sweep, read_sweep_file
    from scalefit.sweep.run import run_sweep

    t0 = time.perf_counter()
    from scalefit.resources import sweep_file

    plan = plan_sweep(sweep_file(args.sweep) if args.sweep else quickstart_file())
    # The fit counts N and C as the design does ([isoflop] n_kind, flops_convention), so its budgets
    # and the forecasts' are the sweep's own.
    design = read_sweep_file(plan.source).get(plan.design, {})
    n_kind = design.get("n_kind", "total")
    c_kind = CKind.parse(design.get("flops_convention", "exact"))
    store = Path(args.runs) if args.runs else Path("runs") / plan.name
    print(f"[1/2] sweep {plan.source}: {len(plan.runs)} runs, {plan.total_flops():.3g} FLOPs -> {store}")
    run_sweep(plan, store, executor="parallel", jobs=args.jobs)
    budgets = sorted({r.budget for r in plan.runs if r.budget is not None})
    held = sum(r.budget == budgets[-1] for r in plan.runs) if budgets else 0.15
    print(f"[2/2] fit, approaches, backtest on the largest budget, forecasts -> {args.out}")
    table = read_runs(store, n_kind=n_kind, c_kind=c_kind)
    rep = build_report(table, args.out, bootstrap=args.bootstrap, holdout=held, curves=store_curves(store, table),
                       title=f"scalefit quickstart: {plan.name}")
    if rep.a is not None:
        print(f"N_opt ~ C^{rep.a:.3f}, D_opt ~ C^{rep.b:.3f} (Approach 3, C {c_kind})")
    for d in rep.disagreements:
        print(f"approaches disagree: {d}")
    if rep.backtest_mean_abs_rel_err is not None:
        print(f"backtest, largest budget held out ({rep.backtest_extrapolation:.3g}x the largest fitted C): "
              f"mean |rel err| {rep.backtest_mean_abs_rel_err:.2%}, max {rep.backtest_max_abs_rel_err:.2%}")
    else:
        print(f"no backtest: {rep.backtest_skipped}")
    for C, loss, lo, hi in rep.forecasts:
        print(f"forecast at C={C:.3g}: loss {loss:.4f} [{lo:.4f}, {hi:.4f}] nats/token")
    print(f"report: {rep.markdown} and {rep.html} ({len(rep.figures)} figures); "
          f"{time.perf_counter() - t0:.0f} s in all")
    return 0


def add_plan(sub) -> None:
    p = sub.add_parser("plan", help="compute-optimal N and D, a model shape and its cost from a fit")
    p.add_argument("fit", nargs="?", default=None,
                   help="a fit result JSON (scalefit fit --out) of a law in N and D; or give --param")
    p.add_argument("--law", default=None,
                   help="the law of --param (default: chinchilla; data_constrained with --unique-tokens)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="law parameter, repeated: E, A, B, alpha, beta (+ R_D_star, R_N_star with "
                        "--unique-tokens); overrides the fit's")
    p.add_argument("--compute", type=float, required=True,
                   help="training FLOPs, counted as the fit's runs counted theirs (6ND with --param)")
    p.add_argument("--unique-tokens", type=float, help="unique tokens available (data-constrained law)")
    p.add_argument("--inference-tokens", type=float,
                   help="tokens to be served; plans for the loss the compute-optimal model reaches")
    p.add_argument("--hardware", default="h100", help="h100, h200, a100 or tpu-v5e (peak dense bf16)")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation (default 0.4)")
    p.add_argument("--vocab-size", type=int, default=50257, help="for the model shape's parameter count")
    p.set_defaults(func=_plan)


def _plan(args) -> int:
    from scalefit.analysis.allocate import inference_aware_optimal
    from scalefit.analysis.cost import accelerator_hours, model_shape
    from scalefit.fitting.compute import SIX_ND
    from scalefit.fitting.laws import DATA_CONSTRAINED, get_law
    from scalefit.fitting.optimum import allocate

    params, compute, n_kind, law = {}, SIX_ND, NKind.TOTAL, get_law(args.law or "chinchilla")
    given = {} if args.unique_tokens is None else {"U": args.unique_tokens}
    if args.fit:
        from scalefit.fitting.result import FitResult

        result = FitResult.load(args.fit)
        law = result.law
        if not law.can_allocate:
            raise ValueError(f"{args.fit}: plan needs a law that splits a budget into N and D; this fit is of "
                             f"{law.name} ({law.formula})")
        params, compute, n_kind = result.values(), result.compute, result.n_kind
        print(f"from {args.fit}: {law.name} fit of {result.source} ({result.n_points} rows, "
              f"N = {n_kind}); C {result.c_kind}: {compute.summary()}")
        if result.samples is not None and set(law.conditions) <= set(given):
            a = result.allocate(args.compute, **{k: given[k] for k in law.conditions})
            print(f"  compute-optimal with {100 * result.ci_level:g}% bootstrap intervals: "
                  + "  ".join(f"{k} = {getattr(a, k):.4g}" for k in ("N", "D", "loss")))
    params.update(key_values(args.param))
    if not params:
        raise ValueError("plan needs a fit result file or --param KEY=VALUE for E, A, B, alpha, beta")
    if given and "U" not in law.conditions:
        law = DATA_CONSTRAINED  # the fit's Chinchilla terms plus the repetition scales given by --param
    alloc = allocate(law, params, None, args.compute, compute, given={k: given[k] for k in law.conditions
                                                                      if k in given})
    allocs = [alloc]
    if args.inference_tokens is not None:
        loss = lambda N, D: law.predict(params, N=N, D=D, **alloc.given)  # noqa: E731
        allocs.append(inference_aware_optimal(loss, alloc.loss.value, args.inference_tokens, compute=compute))
    for a in allocs:
        shape = model_shape(a.N.value, vocab_size=args.vocab_size, n_kind=n_kind)
        # Same serving load for every plan (a forward pass, a third of a training token's FLOPs), so
        # the hours compare like with like.
        serve = float(compute.per_token(a.N.value)) * args.inference_tokens / 3 if args.inference_tokens else 0.0
        hours = accelerator_hours(a.C + serve, args.hardware, args.mfu)
        print(f"{a.method} ({law.name}): N = {a.N.value:.4g}, D = {a.D.value:.4g} tokens "
              f"({a.tokens_per_param.value:.1f} tokens/param), C = {a.C:.4g} FLOPs, predicted loss "
              f"{a.loss.value:.4f} nats/token")
        print("  " + "; ".join([a.compute, *(f"{k} = {v:.4g}" for k, v in a.given.items()), *a.notes]))
        print(f"  shape: d_model {shape.d_model}, n_layer {shape.n_layer}, n_head {shape.n_head} "
              f"-> N = {shape.N:.4g} total, {shape.N_non_embedding:.4g} non-embedding (SwiGLU, untied output)")
        print(f"  cost: {hours:.4g} {args.hardware} hours at MFU {args.mfu:g}"
              + (f" (training + serving {args.inference_tokens:.3g} tokens)" if serve else ""))
    return 0


def add_forecast(sub) -> None:
    p = sub.add_parser("forecast", help="loss forecast with intervals from a saved fit (FIT.json)")
    p.add_argument("fit", help="fit result JSON written by scalefit fit --out")
    p.add_argument("--compute", type=float, metavar="C",
                   help="budget in FLOPs: compute-optimal N, D (or with --N / --D, the other from C = 6ND)")
    p.add_argument("--N", type=float, help="parameters")
    p.add_argument("--D", type=float, help="training tokens")
    p.add_argument("--U", type=float, help="unique tokens (laws that read U, e.g. data_constrained)")
    p.add_argument("--level", type=float, default=None, help="interval level (default: the fit's)")
    p.set_defaults(func=_forecast)


def _forecast(args) -> int:
    from scalefit.analysis.forecast import forecast
    from scalefit.fitting.result import FitResult

    print(forecast(FitResult.load(args.fit), N=args.N, D=args.D, C=args.compute, level=args.level,
                   **({} if args.U is None else {"U": args.U})))
    return 0


def add_report(sub) -> None:
    p = sub.add_parser("report", help="fit, backtest, forecast and plot into a one-page report")
    p.add_argument("source", help="run-store folder, CSV/Parquet file or reference dataset name")
    p.add_argument("--out", required=True, help="folder for report.md, report.html, figures, fit.json")
    p.add_argument("--law", default="chinchilla",
                   help="law to fit (`scalefit laws` lists them); NAME[KEY=VALUE] holds a parameter fixed")
    p.add_argument("--bootstrap", type=int, default=200, metavar="B", help="bootstrap resamples of runs")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--holdout", type=float, default=0.15,
                   help="backtest: fraction (< 1) or number (>= 1) of largest-compute runs held out")
    p.add_argument("--ci", type=float, default=0.95, help="interval level")
    p.add_argument("--n-kind", default="total", choices=list(NKind), type=NKind.parse,
                   help="which parameters N counts")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from scalefit.fitting.sources import is_store, read_runs, store_curves
    from scalefit.report.build import build_report

    holdout = int(args.holdout) if args.holdout >= 1 else args.holdout
    table = read_runs(args.source, n_kind=args.n_kind)
    curves = store_curves(args.source, table) if is_store(args.source) else None
    s = build_report(table, args.out, law=args.law, bootstrap=args.bootstrap, seed=args.seed,
                     holdout=holdout, level=args.ci, curves=curves)
    print(f"{s.law} on {s.n_runs} runs" + ("" if s.a is None else f": a = {s.a:.3f}, b = {s.b:.3f}"))
    if s.backtest_mean_abs_rel_err is not None:
        print(f"backtest |relative error|: mean {s.backtest_mean_abs_rel_err:.2%}, "
              f"max {s.backtest_max_abs_rel_err:.2%}")
    for C, loss, lo, hi in s.forecasts:
        print(f"forecast at C = {C:.3g}: loss {loss:.4f} [{lo:.4f}, {hi:.4f}]")
    for d in s.disagreements:
        print(f"DISAGREE: {d}")
    print(f"wrote {s.markdown}, {s.html} and {len(s.figures)} figures")
    return 0
