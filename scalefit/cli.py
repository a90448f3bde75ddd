"""Command line: thin subcommands over the library.

Each subcommand is registered by one `_add_<name>(sub)` function that builds its parser and sets
`func`; the work itself lives in the library modules, imported lazily so `scalefit --help` is fast.
"""

from __future__ import annotations

import argparse
import sys


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


# Registration order is the order in `scalefit --help`.
_COMMANDS = [_add_datasets, _add_train]


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
