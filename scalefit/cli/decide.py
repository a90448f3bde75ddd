"""Subcommands that turn a fit into decisions: plan, forecast, report, quickstart.

Each `add_<name>(sub)` builds a parser and sets `func`; the work lives in the library modules,
imported inside the functions so `scalefit --help` stays fast.
"""

from __future__ import annotations

import sys

from scalefit.cli.common import (add_table_options, check_writable, compile_cache, key_values, level, positive_int,
                                 print_warnings, read_table)
from scalefit.cli.fitting import EXIT_DEGENERATE
from scalefit.conventions import CKind, NKind


def add_quickstart(sub) -> None:
    p = sub.add_parser("quickstart", help="train a small IsoFLOP sweep here, fit, backtest, forecast, report",
                       description="Run experiments/quickstart.toml here (finished runs are reused), fit all "
                                   "approaches, backtest the largest budget, forecast 10x and 100x it, report.")
    p.add_argument("--sweep", default=None, help="sweep file or shipped sweep name (default: quickstart)")
    p.add_argument("--runs", default=None, help="run store folder (default: runs/<sweep name>)")
    p.add_argument("--out", default="report/quickstart", help="report folder")
    p.add_argument("--bootstrap", type=positive_int, default=200, help="bootstrap resamples of the fit")
    p.add_argument("--jobs", type=positive_int, default=None, help="runs trained at once (default: one per core)")
    p.set_defaults(func=_quickstart)


def quickstart_file():
    """The shipped experiments/quickstart.toml (in a checkout, an editable install or a wheel)."""
    from scalefit.resources import sweep_file

    return sweep_file("quickstart")


def _quickstart(args) -> int:
    compile_cache()
    import time
    from pathlib import Path

    from scalefit.fitting.sources import read_runs, store_curves
    from scalefit.report.build import build_report
    from scalefit.sweep.plan import plan_sweep, read_sweep_file
    from scalefit.sweep.run import run_sweep
    from scalefit.sweep.timing import summarize_overhead

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
    swept = run_sweep(plan, store, executor="parallel", jobs=args.jobs)
    print(f"overhead: {summarize_overhead(swept.timings, swept.wall, swept.workers)}")
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
    if rep.selection:
        print(f"law chosen by cross-validation on the runs: {rep.selection}")
    if rep.backtest_mean_abs_rel_err is not None:
        print(f"backtest, largest budget held out ({rep.backtest_extrapolation:.3g}x the largest fitted C): "
              f"mean |rel err| {rep.backtest_mean_abs_rel_err:.2%}, max {rep.backtest_max_abs_rel_err:.2%}; "
              "coverage, nominal -> empirical: "
              + ", ".join(f"{100 * p:g}% -> {c:.0%}" for p, c in rep.backtest_coverage))
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
    p.add_argument("--context", type=int, default=None,
                   help="context length of the memory and FLOP lines (KV cache, attention share; default 2048)")
    moe = p.add_argument_group("dense vs mixture of experts (a law in N, D and E, e.g. joint_moe)")
    moe.add_argument("--moe", action="store_true",
                     help="compare the best dense model with the best MoE at --compute (N is active parameters)")
    moe.add_argument("--experts", default="1,2,4,8,16,32,64,128,256", help="expert counts to try, comma-separated")
    moe.add_argument("--top-k", type=int, default=1, help="experts each token is routed to")
    limit = moe.add_mutually_exclusive_group()
    limit.add_argument("--max-params", type=float, help="memory limit: total parameters (every expert)")
    limit.add_argument("--max-memory-gb", type=float, help="memory limit: GB (1e9 bytes) of weights at --precision")
    moe.add_argument("--precision", default="bf16", help="precision the weights are counted at (fp32, bf16, fp8, "
                                                         "int8, int4)")
    p.set_defaults(func=_plan)


def _plan(args) -> int:
    compile_cache()
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
    if args.moe:
        return _plan_moe(args, result if args.fit else law, params, compute)
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
        _print_memory(shape.config, args.context)
    return 0


def _print_memory(config, context) -> None:
    """The calculators' weights, training memory, KV cache and attention-share lines for a planned shape."""
    from scalefit.analysis.memory import model_sheet

    for line in model_sheet(config, context).lines()[2:]:
        print(f"  {line}")


def _plan_moe(args, source, params, compute) -> int:
    from scalefit.analysis.moe import decide_moe
    from scalefit.fitting.result import FitResult

    experts = [int(x) for x in str(args.experts).split(",") if x.strip()]
    fitted = isinstance(source, FitResult)
    d = decide_moe(source if fitted and not args.param else getattr(source, "law", source), args.compute,
                   params=None if fitted and not args.param else params, compute=compute, experts=experts,
                   top_k=args.top_k, max_params=args.max_params,
                   max_bytes=None if args.max_memory_gb is None else args.max_memory_gb * 1e9,
                   precision=args.precision, vocab_size=args.vocab_size)
    print(d)
    best = d.best
    print(f"choose {best.name}: d_model {best.shape.d_model}, n_layer {best.shape.n_layer}, "
          f"{best.N_total:.4g} parameters in all, {best.N.value:.4g} active, trained on {best.D.value:.4g} tokens")
    _print_memory(best.shape.config, args.context)
    return 0


def add_forecast(sub) -> None:
    p = sub.add_parser("forecast", help="loss forecast with intervals from a saved fit (FIT.json)",
                       description="Forecast one point from FIT; a file of fits by group (scalefit fit --by "
                                   "--out) gives one forecast per group (--group picks some). For a table of "
                                   "targets, use scalefit predict.")
    p.add_argument("fit", help="fit result JSON written by scalefit fit --out (one fit, or fits by group)")
    p.add_argument("--compute", type=float, metavar="C",
                   help="budget in FLOPs: compute-optimal N, D (or with --N / --D, the other from C = 6ND)")
    p.add_argument("--N", type=float, help="parameters")
    p.add_argument("--D", type=float, help="training tokens")
    p.add_argument("--U", type=float, help="unique tokens (laws that read U, e.g. data_constrained)")
    p.add_argument("--E", type=float, help="experts (MoE laws, e.g. joint_moe; 1 = dense)")
    p.add_argument("--G", type=float, help="granularity (fine_grained_moe)")
    p.add_argument("--level", type=level, default=None, help="interval level (default: the fit's)")
    p.add_argument("--group", action="append", default=[], metavar="COL=VALUE",
                   help="with a file of fits by group: only the groups with this value (repeatable)")
    p.set_defaults(func=_forecast)


def _forecast(args) -> int:
    compile_cache()
    from scalefit.analysis.forecast import forecast
    from scalefit.fitting.groups import GroupFits, _norm, key_text, load_fits

    fits = load_fits(args.fit)
    given = {k: v for k, v in (("U", args.U), ("E", args.E), ("G", args.G)) if v is not None}
    at = dict(N=args.N, D=args.D, C=args.compute, level=args.level, **given)
    if not isinstance(fits, GroupFits):
        if args.group:
            raise ValueError(f"{args.fit} holds one fit, not fits by group: --group does not apply")
        print(forecast(fits, **at))
        return 0
    want = {k: _norm(v) for k, v in key_values(args.group, float_values=False)}
    unknown = sorted(set(want) - set(fits.by))
    if unknown:
        raise ValueError(f"--group {unknown[0]}: the fits are by {', '.join(fits.by)}")
    keys = [k for k in fits.keys() if all(_norm(v) == want.get(b, _norm(v)) for b, v in zip(fits.by, k))]
    if not keys:
        raise ValueError(f"no group matches {args.group}; groups: " + "; ".join(key_text(fits.by, k) for k in fits.keys()))
    for key in keys:
        print(f"[{key_text(fits.by, key)}] " + (str(forecast(fits.fits[key], **at)) if key in fits.fits
                                                 else f"not fitted: {fits.failed[key]}"))
    return 0


def add_calc(sub) -> None:
    p = sub.add_parser("calc", help="parameter counts, memory, KV cache and FLOPs of a planned model",
                       description="What a model weighs: parameter counts (total, embedding, non-embedding, "
                                   "active), weights at FP32/BF16/FP8/INT8/INT4, training memory with AdamW, the "
                                   "KV cache of MHA/GQA/MQA at a context and batch, FLOPs per token and the share "
                                   "attention takes as the context grows. Give a preset, a shape, a target N, or a "
                                   "fit and a budget (its compute-optimal N).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="a trainer preset (scalefit.training.config.PRESETS)")
    src.add_argument("--d-model", type=int, help="residual width of a shape given by hand (with --n-layer, --n-head)")
    src.add_argument("--N", type=float, help="a planned parameter count: the recipe's nearest shape (see --n-kind)")
    src.add_argument("--fit", help="a fit result JSON: the shape of its compute-optimal N at --compute")
    p.add_argument("--n-layer", type=int, help="blocks (with --d-model)")
    p.add_argument("--n-head", type=int, help="query heads (with --d-model)")
    p.add_argument("--n-kv-head", type=int, help="key/value heads: = n-head MHA, fewer GQA, 1 MQA (default MHA)")
    p.add_argument("--d-ff", type=int, help="MLP width per expert (default the recipe's 8d/3, over top-k for MoE)")
    p.add_argument("--vocab-size", type=int, default=50257, help="vocabulary size of the embedding and output layers")
    p.add_argument("--tie-embeddings", action="store_true", help="output layer shares the input embedding")
    p.add_argument("--experts", type=int, default=1, help="experts per MLP layer (1 = dense)")
    p.add_argument("--top-k", type=int, default=1, help="experts each token is routed to")
    p.add_argument("--n-kind", default="total", choices=list(NKind), type=NKind.parse,
                   help="which parameters --N counts (default total; a fit's own kind with --fit)")
    p.add_argument("--compute", type=float, help="budget for --fit, counted as the fit's runs counted theirs")
    p.add_argument("--context", type=int, default=None, help="context length (default: the shape's seq_len)")
    p.add_argument("--batch", type=int, default=1, help="sequences in the KV cache")
    p.add_argument("--kv-precision", default="bf16", help="precision of the cached keys and values")
    p.set_defaults(func=_calc)


def _calc(args) -> int:
    from scalefit.analysis.cost import model_shape
    from scalefit.analysis.memory import model_sheet
    from scalefit.training.config import ModelConfig, get_preset, swiglu_width

    moe = dict(n_expert=args.experts, top_k=args.top_k)
    if args.preset:
        cfg = get_preset(args.preset)
        if args.experts > 1:
            cfg = cfg.with_overrides(**moe)
        print(f"preset {args.preset}")
    elif args.d_model:
        if not (args.n_layer and args.n_head):
            raise ValueError("a shape by hand needs --d-model, --n-layer and --n-head")
        d_ff = args.d_ff or (swiglu_width(args.d_model) if args.experts == 1 else
                             max(16, round(swiglu_width(args.d_model) / args.top_k / 16) * 16))
        cfg = ModelConfig(vocab_size=args.vocab_size, seq_len=args.context or 2048, d_model=args.d_model,
                          n_layer=args.n_layer, n_head=args.n_head, n_kv_head=args.n_kv_head or args.n_head,
                          d_ff=d_ff, tie_embeddings=args.tie_embeddings, **moe)
    else:
        N, n_kind = args.N, args.n_kind
        if args.fit:
            from scalefit.fitting.result import FitResult

            result = FitResult.load(args.fit)
            if args.compute is None or not result.law.can_allocate:
                raise ValueError("--fit needs --compute and a fit of a law that splits a budget into N and D")
            given = {"E": float(args.experts)} if "E" in result.law.conditions else {}
            a = result.allocate(args.compute, **given)
            N, n_kind = a.N.value, result.n_kind
            print(f"from {args.fit}: compute-optimal at C = {args.compute:.4g}: N = {N:.4g} ({n_kind}), "
                  f"D = {a.D.value:.4g}")
        shape = model_shape(N, vocab_size=args.vocab_size, n_kind=n_kind, seq_len=args.context or 2048,
                            tie_embeddings=args.tie_embeddings, **moe)
        cfg = shape.config
        print(f"the recipe's shape nearest N = {N:.4g} ({n_kind})")
    print(model_sheet(cfg, args.context, args.batch, args.kv_precision))
    return 0


def add_report(sub) -> None:
    from scalefit.cli.fitting import add_backtest_options

    p = sub.add_parser("report", help="fit, backtest, forecast and plot into a one-page report (one per group with --by)")
    p.add_argument("table", help="run-store folder, CSV/Parquet/JSONL file or reference dataset name")
    p.add_argument("--out", required=True, help="folder for report.md, report.html, figures, fit.json "
                                                "(with --by: a folder per group and index.md)")
    p.add_argument("--law", default="auto",
                   help="law to fit (`scalefit laws` lists them); NAME[KEY=VALUE] holds a parameter fixed; "
                        "auto (default): chosen by leave-future-out cross-validation on the runs")
    p.add_argument("--keep-degenerate", action="store_true",
                   help="exit 0 even when the fit is degenerate or unidentifiable (exit 3)")
    p.add_argument("--bootstrap", type=positive_int, default=200, metavar="B", help="bootstrap resamples of runs")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--ci", type=level, default=0.95, help="interval level")
    add_table_options(p)
    add_backtest_options(p)
    p.set_defaults(func=_report)


def _report(args) -> int:
    compile_cache()
    import re
    from pathlib import Path

    from scalefit.fitting.groups import key_text, split_by
    from scalefit.fitting.sources import is_store, store_curves

    if args.holdout_by != "C" or args.cutoff is not None:
        raise ValueError("scalefit report backtests the largest-compute runs (--holdout); for other splits "
                         "(--holdout-by, --cutoff) use scalefit fit")
    check_writable(Path(args.out) / "report.md")  # before the fits, not after them
    print_warnings(table := read_table(args))
    holdout = int(args.holdout) if args.holdout >= 1 else args.holdout
    curves = store_curves(args.table, table) if is_store(args.table) else None
    if not table.by:
        s = _one_report(args, table, Path(args.out), holdout, curves)
        return EXIT_DEGENERATE if _degenerate(s) and not args.keep_degenerate else 0
    out = Path(args.out)
    degenerate = 0
    lines = [f"# {args.law} by {', '.join(table.by)}: {table.source}", "",
             "| group | runs | a | b | backtest mean abs error | report |", "|---|---|---|---|---|---|"]
    for key, sub in split_by(table).items():
        name = key_text(table.by, key)
        folder = out / re.sub(r"[^A-Za-z0-9._=-]+", "_", name.replace(" = ", "=").replace(", ", "__"))
        print(f"[{name}]")
        try:
            s = _one_report(args, sub, folder, holdout, None)
        except ValueError as e:
            print(f"  not reported: {e}")
            lines.append(f"| {name} | {len(sub)} | | | | not fitted: {e} |")
            continue
        degenerate += _degenerate(s)
        f = lambda x, spec: "" if x is None else format(x, spec)  # noqa: E731
        lines.append(f"| {name} | {s.n_runs} | {f(s.a, '.3f')} | {f(s.b, '.3f')} | "
                     f"{f(s.backtest_mean_abs_rel_err, '.2%')} | [{folder.name}]({folder.name}/report.md) |")
    from scalefit.atomic import write_text

    print(f"wrote {write_text(out / 'index.md', chr(10).join(lines) + chr(10))}")
    return EXIT_DEGENERATE if degenerate and not args.keep_degenerate else 0


def _degenerate(s) -> bool:
    return s.status in ("degenerate", "unidentifiable")


def _one_report(args, table, out, holdout, curves):
    from scalefit.report.build import build_report

    s = build_report(table, out, law=args.law, bootstrap=args.bootstrap, seed=args.seed,
                     holdout=holdout, level=args.ci, curves=curves)
    print(f"{s.law} on {s.n_runs} runs" + ("" if s.a is None else f": a = {s.a:.3f}, b = {s.b:.3f}")
          + (f" (chosen by cross-validation: {s.selection})" if s.selection else ""))
    if s.backtest_mean_abs_rel_err is not None:
        print(f"backtest |relative error|: mean {s.backtest_mean_abs_rel_err:.2%}, "
              f"max {s.backtest_max_abs_rel_err:.2%}; coverage, nominal -> empirical: "
              + ", ".join(f"{100 * p:g}% -> {c:.0%}" for p, c in s.backtest_coverage))
    for C, loss, lo, hi in s.forecasts:
        print(f"forecast at C = {C:.3g}: loss {loss:.4f} [{lo:.4f}, {hi:.4f}]")
    for d in s.disagreements:
        print(f"DISAGREE: {d}")
    print(f"wrote {s.markdown}, {s.html} and {len(s.figures)} figures")
    if s.status in ("degenerate", "unidentifiable"):
        print(f"scalefit: the fit is {s.status} (see the report"
              + ("" if args.keep_degenerate else "; --keep-degenerate exits 0") + ")", file=sys.stderr)
    return s
