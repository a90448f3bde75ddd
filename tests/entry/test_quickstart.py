"""`scalefit quickstart` end to end on a tiny IsoFLOP sweep: train, report, and reuse on a second call."""

import json
import shutil

import pytest

from scalefit import cli

from scalefit.training import corpus as data
from scalefit.sweep.plan import plan_sweep

FILES = ["json/decoder.py", "json/encoder.py", "textwrap.py", "string.py", "heapq.py", "bisect.py",
         "fnmatch.py", "glob.py", "shlex.py", "difflib.py", "argparse.py", "calendar.py"]

# 3 budgets x 3 of the smallest presets, a few hundred steps each. With the largest budget held out
# only 6 runs remain for even the smallest candidate law (4 parameters, tied exponents), so the backtest
# must be skipped, and say why.
TINY = """[sweep]
name = "tiny"
design = "isoflop"
corpus = "{corpus}"

[model]
ladder = ["d16-l1", "d24-l1", "d32-l1"]
seq_len = 32

[train]
batch_size = 8
n_evals = 2
eval_batches = 2
log_every = 10
checkpoint_every = 200

[isoflop]
budgets = [5e9, 1e10, 2e10]
sizes_per_budget = 3
tokens_per_param = 5
"""


@pytest.mark.entry
def test_quickstart_trains_reports_and_reuses_runs(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in FILES:
        shutil.copy(data.stdlib_root() / name, corpus / name.replace("/", "_"))
    sweep = tmp_path / "tiny.toml"
    sweep.write_text(TINY.format(corpus=corpus))
    plan = plan_sweep(sweep)
    assert len(plan.runs) == 9 and not plan.warnings
    store, out = tmp_path / "runs", tmp_path / "report"
    argv = ["quickstart", "--sweep", str(sweep), "--runs", str(store), "--out", str(out), "--bootstrap", "20"]

    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "[1/2] sweep" in text and "9 to train" in text
    assert "no backtest: only 6 runs left to fit a 4-parameter law (need 8)" in text
    for name in ("report.md", "report.html", "fit.json", "loss_vs_compute.png", "isoflop.png"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "No backtest: only 6 runs left" in md
    # Three budgets of these sizes leave Approaches 1 and 2 little to work with: the report says why
    # each one missing did not run, and claims no agreement when only Approach 3 is left.
    assert md.count("Not run: approach") >= 1
    assert ("Only one approach could run here" in md) == (md.count("Not run: approach") == 2)
    fit = json.loads((out / "fit.json").read_text())
    # The law is chosen by cross-validation on the nine runs (the quickstart's default, law="auto").
    assert fit["law"].startswith("chinchilla") and fit["n_points"] <= 9 and fit["selection"]["chosen"]
    for r in plan.runs:
        assert json.loads((store / r.spec.run_id / "summary.json").read_text())["status"] == "completed"

    # The run store fits directly too, its logged curves going to Approach 1, its exact C to the
    # compute model. Nine tiny runs need not pin E: kept even if the fit says it is degenerate.
    assert cli.main(["fit", str(store), "--approach", "all", "--n-kind", "non-embedding", "--keep-degenerate"]) == 0
    text = capsys.readouterr().out
    assert "9 rows, 9 runs" in text and "N = non-embedding, C = exact" in text
    assert "compute: C = D (" in text and "approach 1 (envelope)" in text.lower()

    # A second call trains nothing: every run is found completed and only the report is rebuilt.
    stamps = {r.spec.run_id: (store / r.spec.run_id / "summary.json").stat().st_mtime_ns for r in plan.runs}
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "9 completed" in text and "0 to train" in text
    assert stamps == {r: (store / r / "summary.json").stat().st_mtime_ns for r in stamps}


def test_default_sweep_is_the_shipped_quickstart():
    from pathlib import Path

    from scalefit.cli.decide import quickstart_file

    path = quickstart_file()
    assert path.resolve() == Path(__file__).resolve().parents[2] / "experiments" / "quickstart.toml"
    plan = plan_sweep(path)
    assert len(plan.runs) == 16 and not plan.warnings
