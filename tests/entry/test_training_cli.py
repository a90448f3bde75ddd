"""The training side's command line documents itself: every option's default in --help, the presets and the
shipped sweeps listable."""

import argparse

import pytest

from scalefit import cli
from scalefit.training.config import PRESETS

pytestmark = pytest.mark.entry


def _parsers():
    """(command, parser) of train, sweep plan/run/list and runs ls/export."""
    top = cli.build_parser()
    subs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
    out = [("train", subs["train"])]
    for group, names in (("sweep", ("plan", "run", "list")), ("runs", ("ls", "export"))):
        inner = next(a for a in subs[group]._actions if isinstance(a, argparse._SubParsersAction)).choices
        out += [(f"{group} {n}", inner[n]) for n in names]
    return out


@pytest.mark.parametrize("command,parser", _parsers(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_option_documents_its_default(command, parser):
    fmt = parser._get_formatter()
    for a in parser._actions:
        if not a.option_strings or a.dest in ("help", "list_presets"):
            continue
        helped = fmt._get_help_string(a) if a.help else ""
        assert helped, f"{command} {a.option_strings[0]} has no help"
        # A default is shown, said in words, or there is none to show: a required option, or one of two.
        assert "(default" in helped or "default:" in helped or a.required or "(this or" in helped, \
            f"{command} {a.option_strings[0]}: {helped}"
    assert "(default: None)" not in parser.format_help()


def test_presets_and_sweeps_can_be_listed(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--list-presets"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:]] == list(PRESETS)
    assert cli.main(["sweep", "list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"quickstart", "isoflop_dense", "wsd_ladder", "moe_tiny", "moe_experts"} <= set(names)
    with pytest.raises(SystemExit) as e:  # an unknown preset lists the known ones
        cli.main(["train", "--preset", "d999", "--tokens", "1e5"])
    assert e.value.code == 2
    assert "invalid choice: 'd999'" in capsys.readouterr().err
