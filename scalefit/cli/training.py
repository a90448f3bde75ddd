"""Subcommands that train and read runs: train, sweep, runs.

Each `add_<name>(sub)` builds a parser and sets `func`; the work lives in the library modules,
imported inside the functions so `scalefit --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from scalefit.conventions import COUNTED, CKind, NKind


class _DEFAULTS(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help says it already (or it has none)."""

    def _get_help_string(self, action) -> str:
        h = action.help or ""
        if "(default" in h or action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return h
        return h + " (default: %(default)s)"


class _ListPresets(argparse.Action):
    """``--list-presets``: print the model presets (shape and parameter counts) and exit."""

    def __init__(self, option_strings, dest, **kw) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from scalefit.training.config import PRESETS
        from scalefit.training.counting import param_counts

        print(f"{'preset':20s} {'d':>4s} {'L':>2s} {'H':>2s} {'KV':>2s} {'E/k':>5s} {'tied':>4s} {'N_total':>9s} "
              f"{'N_nonemb':>9s} {'N_active':>9s}")
        for name, m in PRESETS.items():
            pc = param_counts(m)
            ek = f"{m.n_expert}/{m.top_k}" if m.is_moe else "-"
            print(f"{name:20s} {m.d_model:4d} {m.n_layer:2d} {m.n_head:2d} {m.n_kv_head:2d} {ek:>5s} "
                  f"{'yes' if m.tie_embeddings else 'no':>4s} {pc.total:9.3g} {pc.non_embedding:9.3g} {pc.active:9.3g}")
        parser.exit()


def add_train(sub) -> None:
    from scalefit.training.config import PRESETS, TrainConfig  # configs only: no JAX

    d = TrainConfig(tokens=1.0)  # the defaults shown are TrainConfig's own
    p = sub.add_parser("train", help="train one model to a token or FLOP budget (resumable run folder)",
                       formatter_class=_DEFAULTS)
    p.add_argument("--list-presets", action=_ListPresets, help="print the model presets and exit")
    p.add_argument("--preset", required=True, choices=list(PRESETS), metavar="PRESET",
                   help="model size preset (--list-presets shows them)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--tokens", type=float, help="training-token budget, e.g. 5e6 (this or --flops)")
    budget.add_argument("--flops", type=float, help="training-FLOP budget, e.g. 1e13 (this or --tokens)")
    p.add_argument("--flops-convention", choices=list(COUNTED), type=CKind.parse, default="exact",
                   help="how --flops is counted per token")
    p.add_argument("--schedule", choices=["cosine", "constant", "wsd"], default=d.schedule,
                   help="learning-rate schedule after the warmup")
    p.add_argument("--schedule-file", default=None, metavar="JSON",
                   help="run this schedule instead (knots as `scalefit curves optimise` writes them; its peak is "
                        "the lr, and its total_steps must be the budget's steps; default: --schedule)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per step")
    p.add_argument("--seq-len", type=int, help="context length (default: the preset's)")
    p.add_argument("--warmup-frac", type=float, default=d.warmup_frac, help="linear warmup, as a share of all steps")
    p.add_argument("--cooldown-frac", type=float, default=d.cooldown_frac,
                   help="WSD: share of all steps in the 1-sqrt cooldown")
    p.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio,
                   help="final / peak learning rate of the cosine and WSD decays")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="decoupled AdamW weight decay")
    p.add_argument("--bf16", action="store_true", help="bf16 matmul inputs, f32 accumulation")
    p.add_argument("--seed", type=int, default=d.seed, help="parameter init and data order")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=d.log_every, help="steps between metrics lines")
    p.add_argument("--corpus", help="text file or folder (default: the Python standard library)")
    p.add_argument("--out", help="run folder (default: runs/<preset>); an unfinished one is resumed")
    p.add_argument("--devices", type=int, default=None,
                   help="devices the batch is split over (default: all; not part of the run)")
    p.add_argument("--params", choices=["replicated", "fsdp"], default="replicated",
                   help="the training state whole on every device, or sharded over them (FSDP)")
    p.add_argument("--attention", default="auto",
                   help="attention kernel: auto (the backend's fastest), chunked, xla or cudnn (docs/training.md)")
    p.set_defaults(func=_train)


def _interrupted(where: str) -> int:
    """Ctrl-C: one line instead of a traceback; every finished run and checkpoint is kept."""
    print(f"scalefit: interrupted; what was finished is kept in {where}: run the same command again to resume",
          file=sys.stderr)
    return 130


def _train(args) -> int:
    from scalefit.store.records import RunStatus
    from scalefit.training.config import ComputeConfig, TrainConfig, get_preset
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
    compute = ComputeConfig(devices=args.devices, params=args.params, attention=args.attention)
    try:
        s = train(model_cfg, train_cfg, out, corpus=args.corpus, progress=True, compute=compute)
    except KeyboardInterrupt:
        return _interrupted(out)
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
    file_help = ("sweep file (TOML, see docs/sweeps.md) or a shipped sweep's name (`scalefit sweep list`); "
                 "model presets: `scalefit train --list-presets`")
    corpus_help = ("train on this text file or folder instead of the sweep file's [sweep] corpus, which must lie "
                   "in the sweep file's folder: a corpus elsewhere is used only when named here (default: the "
                   "sweep file's corpus)")
    plan = ssub.add_parser("plan", help="print every run of a sweep file, its counts and cost; warn on weak designs",
                           formatter_class=_DEFAULTS)
    plan.add_argument("file", help=file_help)
    plan.add_argument("--corpus", default=None, help=corpus_help)
    plan.add_argument("--no-calibrate", action="store_true",
                      help="skip timing a few steps of the smallest and largest model (no wall-time estimate)")
    plan.set_defaults(func=_sweep_plan)
    run = ssub.add_parser("run", help="train every unfinished run of a sweep file (resumable)",
                          formatter_class=_DEFAULTS)
    run.add_argument("file", help=file_help)
    run.add_argument("--corpus", default=None, help=corpus_help)
    run.add_argument("--executor", choices=list(EXECUTORS), default="parallel",
                     help="; ".join(f"{name}: {e.help}" for name, e in EXECUTORS.items()))
    run.add_argument("--jobs", type=int, default=None,
                     help="runs trained at once by the parallel executor (default: one per core)")
    run.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    run.add_argument("--out", default=None, help="run store folder (default: runs/<sweep name>)")
    run.add_argument("--retry-diverged", action="store_true", help="train diverged runs again")
    run.set_defaults(func=_sweep_run)
    ls = ssub.add_parser("list", help="the sweep files shipped with scalefit (experiments/*.toml)",
                         formatter_class=_DEFAULTS)
    ls.set_defaults(func=_sweep_list)


def _sweep_list(args) -> int:
    from pathlib import Path

    from scalefit.resources import files

    for f in sorted(Path(str(files().joinpath("experiments"))).glob("*.toml")):
        first = next((ln.lstrip("# ").strip() for ln in f.read_text().splitlines() if ln.startswith("#")), "")
        print(f"{f.stem:16s} {first}")
    return 0


def _sweep_plan(args) -> int:
    from scalefit.resources import sweep_file
    from scalefit.sweep.checks import format_plan
    from scalefit.sweep.plan import plan_sweep

    plan = plan_sweep(sweep_file(args.file), corpus=args.corpus)
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

    try:
        rep = run_sweep(sweep_file(args.file), args.out, executor=args.executor, ray_address=args.ray_address,
                        jobs=args.jobs, retry_diverged=args.retry_diverged, corpus=args.corpus)
    except KeyboardInterrupt:
        return _interrupted(args.out or "the run store")
    print(f"overhead: {summarize_overhead(rep.timings, rep.wall, rep.workers)}")
    print(f"sweep wall time {rep.wall:.1f} s; run table: scalefit runs ls {rep.out}")
    return 0


def add_runs(sub) -> None:
    p = sub.add_parser("runs", help="the run store: list runs, export the run table")
    rsub = p.add_subparsers(dest="runs_cmd", required=True)
    ls = rsub.add_parser("ls", help="table of runs: status, N, D, C, final losses, wall time",
                         formatter_class=_DEFAULTS)
    ls.add_argument("dir", help="run store folder (e.g. runs/quickstart)")
    ls.set_defaults(func=_runs_ls)
    ex = rsub.add_parser("export", help="write the run table to CSV or Parquet", formatter_class=_DEFAULTS)
    ex.add_argument("dir", help="run store folder")
    ex.add_argument("out", help="output file: .csv or .parquet")
    ex.add_argument("--n-kind", default="total", choices=list(NKind), type=NKind.parse,
                    help="which parameters the fitter's N column counts")
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
