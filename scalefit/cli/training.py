"""Subcommands that train and read runs: train, sweep, runs.

Each `add_<name>(sub)` builds a parser and sets `func`; the work lives in the library modules,
imported inside the functions so `scalefit --help` stays fast.
"""

from __future__ import annotations

import sys

from scalefit.conventions import COUNTED, CKind, NKind


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train one model to a token or FLOP budget (resumable run folder)")
    p.add_argument("--preset", required=True, help="model size preset (see scalefit.training.config.PRESETS)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--tokens", type=float, help="training-token budget, e.g. 5e6")
    budget.add_argument("--flops", type=float, help="training-FLOP budget, e.g. 1e13")
    p.add_argument("--flops-convention", choices=list(COUNTED), type=CKind.parse, default="exact",
                   help="how --flops is counted per token (default: exact)")
    p.add_argument("--schedule", choices=["cosine", "constant", "wsd"], default="cosine")
    p.add_argument("--schedule-file", default=None, metavar="JSON",
                   help="run this schedule instead (knots as `scalefit curves optimise` writes them; its peak is "
                        "the lr, and its total_steps must be the budget's steps)")
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
    from scalefit.store.records import RunStatus
    from scalefit.training.config import TrainConfig, get_preset
    from scalefit.training.loop import train

    model_cfg = get_preset(args.preset)
    if args.seq_len is not None:
        model_cfg = model_cfg.with_overrides(seq_len=args.seq_len)
    if args.bf16:
        model_cfg = model_cfg.with_overrides(compute_dtype="bfloat16")
    sched = {"schedule": args.schedule, "lr": args.lr}
    if args.schedule_file:
        sched, file_steps = _schedule_file(args.schedule_file)
    train_cfg = TrainConfig(
        batch_size=args.batch_size, weight_decay=args.weight_decay,
        warmup_frac=args.warmup_frac, cooldown_frac=args.cooldown_frac,
        min_lr_ratio=args.min_lr_ratio, tokens=args.tokens, flops=args.flops,
        flops_convention=args.flops_convention, seed=args.seed,
        checkpoint_every=args.checkpoint_every, log_every=args.log_every, **sched)
    if args.schedule_file:
        from scalefit.training.counting import total_steps

        steps = total_steps(model_cfg, train_cfg)
        if steps != file_steps:
            raise ValueError(f"{args.schedule_file} is a schedule of {file_steps} steps, but the budget buys {steps}")
    out = args.out or f"runs/{args.preset}"
    s = train(model_cfg, train_cfg, out, corpus=args.corpus, progress=True)
    ev = "n/a" if s.final_eval_loss is None else f"{s.final_eval_loss:.4f}"
    print(f"{out}: {s.status} after {s.steps} steps, {s.tokens:.4g} tokens, "
          f"{s.flops_exact:.4g} FLOPs (exact), eval loss {ev} nats/token, {s.wall_time:.1f} s")
    if s.status is RunStatus.DIVERGED:
        print(f"diverged at step {s.diverged_at_step}", file=sys.stderr)
        return 1
    return 0


def _schedule_file(path) -> tuple[dict, int]:
    """TrainConfig fields for a JSON schedule file (format scalefit.schedule/1: total_steps, knots [[step, rate]])
    and its step count: lr = the largest rate, schedule_table = the knots relative to it."""
    import json
    from pathlib import Path

    p = Path(path)
    try:
        d = json.loads(p.read_text())
        knots, steps = [(int(s), float(r)) for s, r in d["knots"]], int(d["total_steps"])
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{p}: not a schedule file (format scalefit.schedule/1 with knots and total_steps): {e}")
    peak = max(r for _, r in knots)
    if not peak > 0:
        raise ValueError(f"{p}: every rate is zero")
    return {"schedule": "table", "lr": peak, "schedule_table": tuple((s, r / peak) for s, r in knots)}, steps


def add_sweep(sub) -> None:
    from scalefit.sweep.executors import EXECUTORS  # the registry alone: no JAX, no Ray

    p = sub.add_parser("sweep", help="plan and run a family of models from a sweep file (experiments/*.toml)")
    ssub = p.add_subparsers(dest="sweep_cmd", required=True)
    plan = ssub.add_parser("plan", help="print every run of a sweep file, its counts and cost; warn on weak designs")
    plan.add_argument("file", help="sweep file (TOML, see docs/sweeps.md) or a shipped sweep's name (quickstart, ...)")
    plan.add_argument("--no-calibrate", action="store_true",
                      help="skip timing a few steps of the smallest and largest model (no wall-time estimate)")
    plan.set_defaults(func=_sweep_plan)
    run = ssub.add_parser("run", help="train every unfinished run of a sweep file (resumable)")
    run.add_argument("file", help="sweep file (TOML, see docs/sweeps.md) or a shipped sweep's name (quickstart, ...)")
    run.add_argument("--executor", choices=list(EXECUTORS), default="local",
                     help="; ".join(f"{name}: {e.help}" for name, e in EXECUTORS.items()))
    run.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    run.add_argument("--out", default=None, help="run store folder (default: runs/<sweep name>)")
    run.add_argument("--retry-diverged", action="store_true", help="train diverged runs again")
    run.set_defaults(func=_sweep_run)


def _sweep_plan(args) -> int:
    from scalefit.resources import sweep_file
    from scalefit.sweep.checks import format_plan
    from scalefit.sweep.plan import plan_sweep

    plan = plan_sweep(sweep_file(args.file))
    walls = None
    if not args.no_calibrate:
        from scalefit.sweep.timing import calibrate, estimate_wall  # imports JAX: only when timing

        cal = calibrate(plan)
        walls = [estimate_wall(r, cal) for r in plan.runs]
        print(f"calibration ({', '.join(cal.models)}): {1e9 * cal.b:.3g} s per GFLOP + {1e3 * cal.a:.2g} ms "
              f"per step, compile {cal.compile:.1f} s per run")
    print(format_plan(plan, walls))
    return 0


def _sweep_run(args) -> int:
    from scalefit.resources import sweep_file
    from scalefit.sweep.run import run_sweep
    from scalefit.sweep.timing import summarize_overhead

    rep = run_sweep(sweep_file(args.file), args.out, executor=args.executor, ray_address=args.ray_address,
                    retry_diverged=args.retry_diverged)
    print(f"overhead: {summarize_overhead(rep.timings)}")
    print(f"sweep wall time {rep.wall:.1f} s; run table: scalefit runs ls {rep.out}")
    return 0


def add_runs(sub) -> None:
    p = sub.add_parser("runs", help="the run store: list runs, export the run table")
    rsub = p.add_subparsers(dest="runs_cmd", required=True)
    ls = rsub.add_parser("ls", help="table of runs: status, N, D, C, final losses, wall time")
    ls.add_argument("dir", help="run store folder (e.g. runs/quickstart)")
    ls.set_defaults(func=_runs_ls)
    ex = rsub.add_parser("export", help="write the run table to CSV or Parquet")
    ex.add_argument("dir", help="run store folder")
    ex.add_argument("out", help="output file: .csv or .parquet")
    ex.add_argument("--n-kind", default="total", choices=list(NKind), type=NKind.parse,
                    help="which parameters the N column counts")
    ex.add_argument("--c-kind", default="exact", choices=list(COUNTED), type=CKind.parse,
                    help="which FLOPs the C column counts")
    ex.set_defaults(func=_runs_export)


def _runs_ls(args) -> int:
    from scalefit.store import tables as runs

    print(runs.format_table(runs.load(args.dir)))
    return 0


def _runs_export(args) -> int:
    from scalefit.store import tables as runs

    out = runs.export(args.dir, args.out, n_kind=args.n_kind, c_kind=args.c_kind)
    print(f"wrote {out}")
    return 0
