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


# Registration order is the order in `scalefit --help`.
_COMMANDS = [_add_datasets]


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
