"""Paths stay where they belong: a sweep's name is a plain name, its corpus lies in its folder (audit X1, X2, X7)."""

import os
from dataclasses import replace
from pathlib import Path

import pytest

from scalefit import cli
from scalefit.store.records import check_sweep_name
from scalefit.sweep.plan import plan_sweep
from scalefit.sweep.run import run_sweep

BODY = ('design = "grid"\n[model]\nladder = ["d16-l1"]\nseq_len = 32\n[train]\nbatch_size = 4\n'
        '[grid]\nsizes = ["d16-l1"]\ntokens = [2560]\n')


def _tree(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """tmp/sweeps/ holds the sweep files and their corpus; tmp/victim.json and tmp/outside.txt lie outside."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALEFIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "c.txt").write_text("inside the sweep folder\n" * 300)
    (tmp_path / "outside.txt").write_text("outside the sweep folder\n" * 300)
    (tmp_path / "victim.json").write_text('{"keep": true}\n')
    return tmp_path


def _sweep(home, head: str) -> Path:
    f = home / "sweeps" / "s.toml"
    f.write_text(f"[sweep]\n{head}\n{BODY}")
    return f


@pytest.mark.parametrize("name", ["../../escaped", "x/../../victim", "/tmp/trav/absolute", "a/b", ".", "..",
                                  "a\\u0000b", "tab\\tname", ""])
def test_a_sweep_name_that_is_not_a_plain_name_is_refused(home, name, capsys):  # X1, X7
    f = _sweep(home, f'name = "{name}"\ncorpus = "c.txt"')
    before = _tree(home)
    rc = cli.main(["sweep", "run", str(f), "--out", str(home / "sweeps" / "store")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.startswith(f"scalefit: error: {f}, line 2: [sweep] name: expected a plain name: letters, digits, "
                          "'.', '_' or '-', not '.' or '..', got "), err
    assert _tree(home) == before  # no store, no index, victim.json untouched
    assert (home / "victim.json").read_text() == '{"keep": true}\n'


def test_a_plan_built_in_code_is_held_to_the_same_rule(home):
    plan = plan_sweep(_sweep(home, 'name = "ok"\ncorpus = "c.txt"'))
    before = _tree(home)
    with pytest.raises(ValueError, match=r"sweep name 'x/../../victim' is not a plain name"):
        run_sweep(replace(plan, name="x/../../victim"), home / "sweeps" / "store", progress=False)
    assert _tree(home) == before
    with pytest.raises(ValueError, match="not a plain name"):
        check_sweep_name("..")
    assert check_sweep_name("quick_start-2.v1") == "quick_start-2.v1"


def test_a_file_stem_that_is_not_a_plain_name_needs_a_name(home):
    f = home / "sweeps" / "my sweep.toml"
    f.write_text('[sweep]\ncorpus = "c.txt"\n' + BODY)
    with pytest.raises(ValueError, match=r"the sweep's name 'my sweep' \(the file's stem\) is not a plain name"):
        plan_sweep(f)


@pytest.mark.parametrize("corpus", ["../outside.txt", "{home}/outside.txt", "/etc/passwd", "sub/../../outside.txt",
                                    "~/outside.txt", "link.txt"])
def test_a_corpus_outside_the_sweep_folder_is_refused(home, corpus, capsys, monkeypatch):  # X2
    monkeypatch.setenv("HOME", str(home))  # ~ is the test folder: outside the sweep's folder all the same
    os.symlink(home / "outside.txt", home / "sweeps" / "link.txt")  # a link inside that points outside
    f = _sweep(home, f'name = "s"\ncorpus = "{corpus.format(home=home)}"')
    before = _tree(home)
    assert cli.main(["sweep", "plan", str(f), "--no-calibrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"scalefit: error: {f}: [sweep] corpus {corpus.format(home=home)!r} leaves the sweep "
                          f"file's folder {home / 'sweeps'}"), err
    assert err.rstrip().endswith("To train on it, name it on the command line: --corpus PATH")
    assert _tree(home) == before  # not read, not cached
    assert not (home / "cache").exists()


def test_a_corpus_named_on_the_command_line_or_inside_the_folder_is_used(home, capsys):
    f = _sweep(home, 'name = "s"\ncorpus = "../outside.txt"')
    assert cli.main(["sweep", "plan", str(f), "--no-calibrate", "--corpus", str(home / "outside.txt")]) == 0
    assert f"corpus {home / 'outside.txt'} (from {f})" in capsys.readouterr().out
    (home / "sweeps" / "data").mkdir()
    (home / "sweeps" / "data" / "d.txt").write_text("in a subfolder\n" * 300)
    for inside in ("data/d.txt", "./data/../c.txt", str(home / "sweeps" / "c.txt")):
        plan = plan_sweep(_sweep(home, f'name = "s"\ncorpus = "{inside}"'))
        assert Path(plan.corpus).is_relative_to(home / "sweeps")
