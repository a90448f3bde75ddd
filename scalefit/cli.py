"""Command line: thin subcommands over the library.

Each subcommand is registered by one `_add_<name>(sub)` function that builds its parser and sets
`func`; the work itself lives in the library modules, imported lazily so `scalefit --help` is fast.
"""

from __future__ import annotations

import argparse
import sys


def _add_quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="train a small IsoFLOP sweep here, fit, backtest, forecast, report",
                       description="Run experiments/quickstart.toml on this machine (finished runs are "
                                   "reused), fit all approaches, backtest the largest budget, forecast "
                                   "10x and 100x it, and write the report.")
    p.add_argument("--sweep", default=None, help="sweep file (default: experiments/quickstart.toml)")
    p.add_argument("--runs", default=None, help="run store folder (default: runs/<sweep name>)")
    p.add_argument("--out", default="report/quickstart", help="report folder")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the fit")
    p.set_defaults(func=_quickstart)


def quickstart_file():
    """experiments/quickstart.toml beside the package (an editable install or a source checkout)."""
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.toml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run from a source checkout, or pass --sweep FILE")
    return path


def _quickstart(args) -> int:
    import time
    from pathlib import Path

    from scalefit.plan import plan_sweep, read_sweep_file
    from scalefit.report import build_report
    from scalefit.sweep import run_sweep

    t0 = time.perf_counter()
    plan = plan_sweep(args.sweep or quickstart_file())
    # The fit counts N and C as the design does ([isoflop] n_kind, flops_convention), so its budgets
    # and the forecasts' are the sweep's own.
    design = read_sweep_file(plan.source).get(plan.design, {})
    n_kind = design.get("n_kind", "total")
    c_kind = "6ND" if design.get("flops_convention") == "6N" else "exact"
    store = Path(args.runs) if args.runs else Path("runs") / plan.name
    print(f"[1/2] sweep {plan.source}: {len(plan.runs)} runs, {plan.total_flops():.3g} FLOPs -> {store}")
    run_sweep(plan, store)
    budgets = sorted({r.budget for r in plan.runs if r.budget is not None})
    held = sum(r.budget == budgets[-1] for r in plan.runs) if budgets else 0.15
    print(f"[2/2] fit, approaches, backtest on the largest budget, forecasts -> {args.out}")
    rep = build_report(store, args.out, bootstrap=args.bootstrap, holdout=held, n_kind=n_kind, c_kind=c_kind,
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


def _add_fit(sub) -> None:
    p = sub.add_parser("fit", help="fit a scaling law to a table of runs",
                       description="Fit a scaling law to TABLE: a CSV/Parquet file or a reference "
                                   "dataset name (scalefit datasets list).")
    p.add_argument("table", help="CSV or Parquet file, or a reference dataset name")
    from scalefit.laws import LAWS

    p.add_argument("--law", default="chinchilla", choices=sorted(LAWS), help="law to fit")
    p.add_argument("--bootstrap", type=int, default=0, metavar="B",
                   help="bootstrap resamples of whole runs for SEs and CIs (e.g. 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--ci", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber delta on log residuals")
    p.add_argument("--over-penalty", type=float, default=1.0,
                   help="multiply the penalty of over-predicted losses by this (1 = symmetric)")
    for field in ("n", "d", "c", "loss", "run", "weight"):
        p.add_argument(f"--{field}-col", default=None, help=f"column holding {field.upper() if len(field) == 1 else field}")
    p.add_argument("--n-kind", default="total", choices=["total", "non-embedding", "active"],
                   help="which parameters N counts")
    p.add_argument("--c-kind", default=None, choices=["6ND", "exact", "reported", "unspecified"],
                   help="how C was counted (default: from the data)")
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
    from scalefit.fit import Objective, fit
    from scalefit.table import load_table

    table = load_table(args.table, n_col=args.n_col, d_col=args.d_col, c_col=args.c_col,
                       loss_col=args.loss_col, run_col=args.run_col, weight_col=args.weight_col,
                       n_kind=args.n_kind, c_kind=args.c_kind)
    objective = Objective(args.delta, args.over_penalty)
    result = fit(table, args.law, objective=objective, bootstrap_resamples=args.bootstrap, seed=args.seed,
                 ci_level=args.ci, progress=args.bootstrap >= 200)
    if args.compute:
        from dataclasses import replace

        derived = dict(result.derived)
        for C in args.compute:
            alloc = result.allocate(C)
            derived[f"N_opt@{C:.3g}"] = alloc["N"]
            derived[f"D_opt@{C:.3g}"] = alloc["D"]
            derived[f"L_opt@{C:.3g}"] = alloc["loss"]
        result = replace(result, derived=derived)  # so the JSON carries them too
    print(result.summary())
    if args.approach == "all":
        from scalefit.compare import compare_approaches

        print(compare_approaches(table, result, level=args.ci))
        _print_kaplan_frontier(table, result)
    if args.holdout > 0:
        from scalefit.forecast import backtest
        from scalefit.report import can_backtest

        why_not = can_backtest(table, args.law, args.holdout)
        if why_not:
            print(f"backtest skipped: {why_not}")
        else:
            # Fewer resamples than the main fit: the backtest's intervals only need to be indicative.
            print(backtest(table, args.law, holdout=args.holdout, bootstrap_resamples=min(args.bootstrap, 100),
                           seed=args.seed, level=args.ci, objective=objective))
    if args.out:
        print(f"wrote {result.save(args.out)}")
    return 0


def _print_kaplan_frontier(table, result) -> None:
    """Kaplan et al. 2020's L(C) = (C_c/C)^alpha_C (and + E) on the frontier of the table's runs."""
    from scalefit.envelope import fit_frontier, pareto_frontier

    frame = table.frame
    idx = pareto_frontier(frame["C"], frame["loss"])
    C, L = frame["C"].to_numpy(float)[idx], frame["loss"].to_numpy(float)[idx]
    print(f"Kaplan L(C) frontier ({len(idx)} runs lower than every run of less compute; C {table.c_kind}):")
    for irreducible in (False, True):
        try:
            f = fit_frontier(C, L, irreducible=irreducible)
        except ValueError as e:
            print(f"  {'with' if irreducible else 'without'} E: not fitted ({e})")
            continue
        print(f"  L = {f'{f.E:.4g} + ' if irreducible else ''}(C_c/C)^alpha_C: alpha_C = {f.alpha_C:.4g}, "
              f"C_c = {f.C_c:.4g}, RMS log residual {f.rmse_log:.3g}")
    p = result.values()
    if {"alpha", "beta"} <= set(p):
        print(f"  Approach 3 implies alpha_C = alpha beta / (alpha + beta) = "
              f"{p['alpha'] * p['beta'] / (p['alpha'] + p['beta']):.4g} for the reducible loss")


def _add_datasets(sub) -> None:
    p = sub.add_parser("datasets", help="reference datasets shipped with scalefit")
    dsub = p.add_subparsers(dest="datasets_cmd", required=True)
    dsub.add_parser("list", help="list the reference datasets").set_defaults(func=_datasets_list)
    show = dsub.add_parser("show", help="provenance and first rows of one dataset")
    show.add_argument("name")
    show.add_argument("--rows", type=int, default=5, help="rows to print")
    show.set_defaults(func=_datasets_show)


def _datasets_list(args) -> int:
    from scalefit import datasets

    for name in datasets.names():
        info = datasets.info(name)
        print(f"{name:20s} {info['rows']:6d} rows  {info['title']}")
    return 0


def _datasets_show(args) -> int:
    from scalefit import datasets

    info = datasets.info(args.name)
    for k, v in info.items():
        print(f"{k}: {v}")
    print(datasets.load(args.name).head(args.rows).to_string())
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one model to a token or FLOP budget (resumable run folder)")
    p.add_argument("--preset", required=True, help="model size preset (see scalefit.config.PRESETS)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--tokens", type=float, help="training-token budget, e.g. 5e6")
    budget.add_argument("--flops", type=float, help="training-FLOP budget, e.g. 1e13")
    p.add_argument("--flops-convention", choices=["exact", "6N"], default="exact",
                   help="how --flops is counted per token (default: exact)")
    p.add_argument("--schedule", choices=["cosine", "constant", "wsd"], default="cosine")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    p.add_argument("--seq-len", type=int, help="context length (default: the preset's)")
    p.add_argument("--warmup-frac", type=float, default=0.05)
    p.add_argument("--cooldown-frac", type=float, default=0.2, help="WSD cooldown fraction")
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--bf16", action="store_true", help="bf16 matmul inputs, f32 accumulation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=10, help="steps between metrics lines")
    p.add_argument("--corpus", help="text file or folder (default: the Python standard library)")
    p.add_argument("--out", help="run folder (default: runs/<preset>); an unfinished one is resumed")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from scalefit.config import TrainConfig, get_preset
    from scalefit.train import train

    model_cfg = get_preset(args.preset)
    if args.seq_len is not None:
        model_cfg = model_cfg.with_overrides(seq_len=args.seq_len)
    if args.bf16:
        model_cfg = model_cfg.with_overrides(compute_dtype="bfloat16")
    train_cfg = TrainConfig(
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_frac=args.warmup_frac, schedule=args.schedule, cooldown_frac=args.cooldown_frac,
        min_lr_ratio=args.min_lr_ratio, tokens=args.tokens, flops=args.flops,
        flops_convention=args.flops_convention, seed=args.seed,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every)
    out = args.out or f"runs/{args.preset}"
    s = train(model_cfg, train_cfg, out, corpus=args.corpus, progress=True)
    ev = "n/a" if s["final_eval_loss"] is None else f"{s['final_eval_loss']:.4f}"
    print(f"{out}: {s['status']} after {s['steps']} steps, {s['tokens']:.4g} tokens, "
          f"{s['flops_exact']:.4g} FLOPs (exact), eval loss {ev} nats/token, {s['wall_time']:.1f} s")
    if s["status"] == "diverged":
        print(f"diverged at step {s['diverged_at_step']}", file=sys.stderr)
        return 1
    return 0


def _add_isoflop(sub) -> None:
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

    from scalefit.approaches import approach2, approach2_by

    table = pd.read_csv(args.table).rename(columns=dict(_key_values(args.rename, float_values=False)))
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


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="compute-optimal N and D, a model shape and its cost from a fit")
    p.add_argument("fit", nargs="?", default=None,
                   help="a fit result JSON (scalefit fit --out) of the chinchilla law; or give --param")
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
    from scalefit import optimal

    from scalefit.compute import SIX_ND

    params, compute, n_kind = {}, SIX_ND, "total"
    if args.fit:
        from scalefit.result import FitResult

        result = FitResult.load(args.fit)
        if result.law != "chinchilla":
            raise ValueError(f"{args.fit}: plan needs a chinchilla-law fit, this one is {result.law}")
        params, compute, n_kind = result.values(), result.compute, result.n_kind
        print(f"from {args.fit}: {result.law} fit of {result.source} ({result.n_points} rows, "
              f"N = {n_kind}); C {result.c_kind}: {compute.summary()}")
        if result.samples is not None:
            a = result.allocate(args.compute)
            print(f"  compute-optimal with {100 * result.ci_level:g}% bootstrap intervals: "
                  + "  ".join(f"{k} = {a[k].value:.4g} [{a[k].ci[0]:.3g}, {a[k].ci[1]:.3g}]"
                              for k in ("N", "D", "loss")))
    params.update(_key_values(args.param))
    if not params:
        raise ValueError("plan needs a fit result file or --param KEY=VALUE for E, A, B, alpha, beta")
    if args.unique_tokens is not None:
        from scalefit.constrained import data_constrained_optimal

        alloc = data_constrained_optimal(params, args.compute, args.unique_tokens, compute)
    else:
        alloc = optimal.chinchilla_optimal(params, args.compute, compute)
    allocs = [alloc]
    if args.inference_tokens is not None:
        law = lambda N, D: float(optimal.chinchilla_loss(params, N, D))  # noqa: E731
        allocs.append(optimal.inference_aware_optimal(law, alloc.loss, args.inference_tokens, compute=compute))
    for a in allocs:
        shape = optimal.model_shape(a.N, vocab_size=args.vocab_size, n_kind=n_kind)
        # Same serving load for every plan (a forward pass, a third of a training token's FLOPs), so
        # the hours compare like with like.
        serve = float(compute.per_token(a.N)) * args.inference_tokens / 3 if args.inference_tokens else 0.0
        hours = optimal.accelerator_hours(a.C + serve, args.hardware, args.mfu)
        print(f"{a.method}: N = {a.N:.4g}, D = {a.D:.4g} tokens ({a.tokens_per_param:.1f} tokens/param), "
              f"C = {a.C:.4g} FLOPs, predicted loss {a.loss:.4f} nats/token")
        print(f"  {a.notes}")
        print(f"  shape: d_model {shape.d_model}, n_layer {shape.n_layer}, n_head {shape.n_head} "
              f"-> N = {shape.N:.4g} (12 L d^2 + vocab d), {shape.N_non_embedding:.4g} non-embedding")
        print(f"  cost: {hours:.4g} {args.hardware} hours at MFU {args.mfu:g}"
              + (f" (training + serving {args.inference_tokens:.3g} tokens)" if serve else ""))
    return 0


def _key_values(items, float_values: bool = True):
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        yield key.strip(), float(value) if float_values else value.strip()


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="plan and run a family of models from a sweep file (experiments/*.toml)")
    ssub = p.add_subparsers(dest="sweep_cmd", required=True)
    plan = ssub.add_parser("plan", help="print every run of a sweep file, its counts and cost; warn on weak designs")
    plan.add_argument("file", help="sweep file (TOML, see docs/sweeps.md)")
    plan.add_argument("--no-calibrate", action="store_true",
                      help="skip timing a few steps of the smallest and largest model (no wall-time estimate)")
    plan.set_defaults(func=_sweep_plan)
    run = ssub.add_parser("run", help="train every unfinished run of a sweep file (resumable)")
    run.add_argument("file", help="sweep file (TOML, see docs/sweeps.md)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local: one run after another here; ray: one task per run on a Ray cluster")
    run.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    run.add_argument("--out", default=None, help="run store folder (default: runs/<sweep name>)")
    run.add_argument("--retry-diverged", action="store_true", help="train diverged runs again")
    run.set_defaults(func=_sweep_run)


def _sweep_plan(args) -> int:
    from scalefit.plan import format_plan, plan_sweep

    plan = plan_sweep(args.file)
    walls = None
    if not args.no_calibrate:
        from scalefit.sweep import calibrate, estimate_wall

        cal = calibrate(plan)
        walls = [estimate_wall(r, cal) for r in plan.runs]
        print(f"calibration ({', '.join(cal.models)}): {1e9 * cal.b:.3g} s per GFLOP + {1e3 * cal.a:.2g} ms "
              f"per step, compile {cal.compile:.1f} s per run")
    print(format_plan(plan, walls))
    return 0


def _sweep_run(args) -> int:
    from scalefit.sweep import run_sweep, summarize_overhead

    rep = run_sweep(args.file, args.out, executor=args.executor, ray_address=args.ray_address,
                    retry_diverged=args.retry_diverged)
    print(f"overhead: {summarize_overhead(rep['timings'])}")
    print(f"sweep wall time {rep['wall']:.1f} s; run table: scalefit runs ls {rep['out']}")
    return 0


def _add_runs(sub) -> None:
    p = sub.add_parser("runs", help="the run store: list runs, export the run table")
    rsub = p.add_subparsers(dest="runs_cmd", required=True)
    ls = rsub.add_parser("ls", help="table of runs: status, N, D, C, final losses, wall time")
    ls.add_argument("dir", help="run store folder (e.g. runs/quickstart)")
    ls.set_defaults(func=_runs_ls)
    ex = rsub.add_parser("export", help="write the run table to CSV or Parquet")
    ex.add_argument("dir", help="run store folder")
    ex.add_argument("out", help="output file: .csv or .parquet")
    ex.add_argument("--n-kind", default="total", choices=["total", "non-embedding", "active"],
                    help="which parameters the N column counts")
    ex.add_argument("--c-kind", default="exact", choices=["exact", "6ND"], help="which FLOPs the C column counts")
    ex.set_defaults(func=_runs_export)


def _runs_ls(args) -> int:
    from scalefit import runs

    print(runs.format_table(runs.load(args.dir)))
    return 0


def _runs_export(args) -> int:
    from scalefit import runs

    out = runs.export(args.dir, args.out, n_kind=args.n_kind, c_kind=args.c_kind)
    print(f"wrote {out}")
    return 0


def _add_forecast(sub) -> None:
    p = sub.add_parser("forecast", help="loss forecast with intervals from a saved fit (FIT.json)")
    p.add_argument("fit", help="fit result JSON written by scalefit fit --out")
    p.add_argument("--compute", type=float, metavar="C",
                   help="budget in FLOPs: compute-optimal N, D (or with --N / --D, the other from C = 6ND)")
    p.add_argument("--N", type=float, help="parameters")
    p.add_argument("--D", type=float, help="training tokens")
    p.add_argument("--level", type=float, default=None, help="interval level (default: the fit's)")
    p.set_defaults(func=_forecast)


def _forecast(args) -> int:
    from scalefit.forecast import forecast
    from scalefit.result import FitResult

    print(forecast(FitResult.load(args.fit), N=args.N, D=args.D, C=args.compute, level=args.level))
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="fit, backtest, forecast and plot into a one-page report")
    p.add_argument("source", help="run-store folder, CSV/Parquet file or reference dataset name")
    p.add_argument("--out", required=True, help="folder for report.md, report.html, figures, fit.json")
    from scalefit.laws import LAWS

    p.add_argument("--law", default="chinchilla", choices=sorted(LAWS), help="law to fit")
    p.add_argument("--bootstrap", type=int, default=200, metavar="B", help="bootstrap resamples of runs")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--holdout", type=float, default=0.15,
                   help="backtest: fraction (< 1) or number (>= 1) of largest-compute runs held out")
    p.add_argument("--ci", type=float, default=0.95, help="interval level")
    p.add_argument("--n-kind", default="total", choices=["total", "non-embedding", "active"],
                   help="which parameters N counts")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from scalefit.report import build_report

    holdout = int(args.holdout) if args.holdout >= 1 else args.holdout
    s = build_report(args.source, args.out, law=args.law, bootstrap=args.bootstrap, seed=args.seed,
                     holdout=holdout, level=args.ci, n_kind=args.n_kind)
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


# Registration order is the order in `scalefit --help`.
_COMMANDS = [_add_quickstart, _add_fit, _add_datasets, _add_train, _add_isoflop, _add_plan, _add_sweep, _add_runs,
             _add_forecast, _add_report]


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


if __name__ == "__main__":
    sys.exit(main())
