"""The report: fits, compares, backtests, forecasts and renders figures that exist and show something."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from scalefit import cli

from scalefit.analysis.backtest import can_backtest
from scalefit.analysis.compare import compare_approaches, isoflop_method, isoflop_structure, snap_budgets
from scalefit.fitting.compute import SIX_ND, ComputeModel
from scalefit.fitting.laws import CHINCHILLA
from scalefit.fitting.optimum import allocate
from scalefit.fitting.result import FitResult
from scalefit.fitting.sources import read_runs, store_curves
from scalefit.fitting.table import load_table
from scalefit.report.build import ReportSummary, build_report

TRUE = {"E": 1.8, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.31}
A_TRUE = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])


def chinchilla_loss(N, D):
    return CHINCHILLA.predict(TRUE, N=N, D=D)


def optimum(C, compute=SIX_ND):
    return allocate(CHINCHILLA, TRUE, None, C, compute)


def isoflop_runs(noise=0.004, seed=0, compute=SIX_ND):
    rng = np.random.default_rng(seed)
    rows = []
    for C in np.geomspace(1e17, 1e20, 7):
        for N in optimum(C, compute).N.value * np.geomspace(1 / 6, 6, 7):
            D = float(compute.tokens(C, N))
            rows.append((N, D, C, float(chinchilla_loss(N, D)) * math.exp(noise * rng.standard_normal())))
    df = pd.DataFrame(rows, columns=["N", "D", "C", "loss"])
    df["run"] = [f"r{i}" for i in range(len(df))]
    return df


def _check_rendered(s: ReportSummary, is_blank):
    md, ht = s.markdown.read_text(), s.html.read_text()
    assert s.figures
    for p in s.figures:
        assert p.is_file() and p.stat().st_size > 1000, p
        assert not is_blank(p), p
        assert f"]({p.name})" in md and f"src='{p.name}'" in ht
    # Every image the report references exists.
    for ref in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (s.out_dir / ref).is_file()
    assert FitResult.load(s.fit_json).law.name == s.law
    return md, ht


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return build_report(load_table(isoflop_runs()), out, bootstrap=40, holdout=7)


def test_report_on_isoflop_runs(synthetic_report, is_blank):
    s = synthetic_report
    md, ht = _check_rendered(s, is_blank)
    names = {p.name for p in s.figures}
    assert names == {"loss_vs_compute.png", "residuals.png", "contours.png", "allocation.png", "isoflop.png"}
    assert s.a == pytest.approx(A_TRUE, abs=0.03)
    assert s.backtest_mean_abs_rel_err < 0.01
    assert (s.out_dir / "backtest.csv").is_file()
    assert [f[0] for f in s.forecasts] == pytest.approx([1e21, 1e22])
    for C, loss, lo, hi in s.forecasts:
        assert lo <= loss <= hi
        # 10x and 100x beyond 1e20: within 2% of the truth's optimum (one seed; the intervals'
        # coverage that far out is not checked here, see docs/forecasting.md).
        assert loss == pytest.approx(optimum(C).loss.value, rel=0.02)
    assert "2 (IsoFLOP)" in md and "3 (parametric fit)" in md and "Backtest" in md
    assert "<table>" in ht and "</html>" in ht


def test_compare_approaches_agree_on_known_law():
    runs = load_table(isoflop_runs())
    assert isoflop_structure(runs.frame) and isoflop_method(snap_budgets(runs.frame, 0.0)) == "akima"
    cmp = compare_approaches(runs, bootstrap_resamples=30)
    assert [e.approach for e in cmp.estimates] == ["2 (IsoFLOP)", "3 (parametric fit)"]
    for e in cmp.estimates:
        assert e.a == pytest.approx(A_TRUE, abs=0.03)
        assert e.a_ci[0] <= e.a <= e.a_ci[1]
    assert cmp.disagreements == ()
    assert "skipped approach 1" in str(cmp)


def test_compare_flags_disagreement():
    # Approach 2 sees the true law; the parametric fit is handed a result with a wrong, tight a.
    from dataclasses import replace

    from scalefit.fitting.estimate import Estimate
    from scalefit.fitting.fitter import fit

    runs = load_table(isoflop_runs())
    res = fit(runs, "chinchilla")
    res = replace(res, derived={"a": Estimate(0.70, 0.005, (0.69, 0.71)), "b": Estimate(0.30, 0.005, (0.29, 0.31))})
    cmp = compare_approaches(runs, res)
    assert any(d.startswith("a:") for d in cmp.disagreements)
    assert "DISAGREE" in str(cmp)


def test_snap_budgets_groups_nearby_compute():
    df = pd.DataFrame({"C": [1.0e19, 1.05e19, 0.97e19, 3e19, 3.1e19], "N": [1, 2, 3, 4, 5]})
    s = snap_budgets(df, 0.1)
    assert s["C"].nunique() == 2
    assert s["C"].iloc[0] == pytest.approx((1.0e19 * 1.05e19 * 0.97e19) ** (1 / 3))
    assert list(s["C_raw"]) == list(df["C"])
    assert isoflop_method(s) == "parabola"


def test_cerebras_report_with_a_law_in_compute(tmp_path, is_blank):
    s = build_report(load_table("cerebras"), tmp_path, law="kaplan_c", bootstrap=40, holdout=2)
    md, _ = _check_rendered(s, is_blank)
    print(md)
    assert {p.name for p in s.figures} == {"loss_vs_compute.png", "residuals.png"}
    assert s.a is None and s.backtest_max_abs_rel_err < 0.03
    assert "6.7B" in (tmp_path / "backtest.csv").read_text()


def test_no_backtest_without_spread(tmp_path):
    runs = isoflop_runs()
    small = runs[runs["C"] <= runs["C"].unique()[1]]
    table = read_runs(small)
    why = can_backtest(table, "chinchilla", 0.2)
    assert "span only a factor" in why or "runs left" in why


def test_cli_report_and_forecast(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    isoflop_runs().to_csv(csv, index=False)
    out = tmp_path / "rep"
    assert cli.main(["report", str(csv), "--out", str(out), "--bootstrap", "20", "--holdout", "7"]) == 0
    text = capsys.readouterr().out
    assert "backtest |relative error|" in text and "forecast at C = 1e+21" in text
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert cli.main(["forecast", str(out / "fit.json"), "--compute", "1e22"]) == 0
    text = capsys.readouterr().out
    assert "compute-optimal" in text and "prediction interval" in text
    assert cli.main(["forecast", str(out / "fit.json"), "--N", "1e9"]) == 2
    assert "N and D" in capsys.readouterr().err


def test_cli_fit_approach_all(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    isoflop_runs().to_csv(csv, index=False)
    assert cli.main(["fit", str(csv), "--bootstrap", "20", "--approach", "all"]) == 0
    text = capsys.readouterr().out
    assert "2 (IsoFLOP)" in text and "3 (parametric fit)" in text and "agree" in text


def synthetic_curves():
    """Training curves on the true law: 12 sizes a factor 1.5 apart, loss logged along D."""
    rows = []
    for i, N in enumerate(1e7 * 1.5 ** np.arange(12)):
        for D in np.geomspace(1e8, 2e12, 60):
            rows.append((f"n{i}", N, D, 6 * N * D, float(chinchilla_loss(N, D))))
    return load_table(pd.DataFrame(rows, columns=["run", "N", "D", "C", "loss"]), checkpoints="all")


def test_compare_with_training_curves_runs_approach_1():
    from scalefit.analysis.approach1 import approach1, envelope_exponent_bound

    cmp = compare_approaches(load_table(isoflop_runs()), curves=synthetic_curves(), bootstrap_resamples=20)
    print(cmp)
    one = cmp.estimates[0]
    assert one.approach == "1 (envelope)"
    # The envelope can only pick trained sizes: its exponent is exact up to the ladder's bound.
    bound = envelope_exponent_bound(approach1(synthetic_curves()), 1.5)
    assert abs(one.a - A_TRUE) <= bound + 1e-9


def test_report_reads_a_run_store(tmp_path):
    """A real (tiny) run store: two runs of one shape; read_runs finds both with their conventions."""
    import shutil

    from scalefit.training import corpus as data
    from scalefit.sweep.run import run_sweep

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ["textwrap.py", "string.py", "heapq.py", "bisect.py", "fnmatch.py", "glob.py"]:
        shutil.copy(data.stdlib_root() / name, corpus / name)
    f = tmp_path / "g.toml"
    f.write_text(f'[sweep]\nname = "g"\ndesign = "grid"\ncorpus = "{corpus}"\n[model]\nseq_len = 32\n'
                 '[train]\nbatch_size = 8\nn_evals = 3\neval_batches = 2\nlog_every = 5\ncheckpoint_every = 50\n'
                 '[grid]\nsizes = ["d32-l1"]\ntokens = [12800, 25600]\n')
    run_sweep(f, tmp_path / "runs", progress=False, log=lambda s: None)
    table = read_runs(tmp_path / "runs")
    assert len(table.frame) == 2 and table.c_kind == "exact" and table.excluded == ()
    assert any("run store" in n for n in table.notes)
    cv = store_curves(tmp_path / "runs", table).frame
    assert set(cv["run"]) == set(table.frame["run"]) and cv["loss"].notna().all() and len(cv) >= 4


def test_report_for_a_law_without_compute(tmp_path, is_blank):
    # L(N) alone: no frontier, no budget forecasts, and too few runs left (5 < 2 x 3) to backtest.
    s = build_report(load_table("cerebras"), tmp_path, law="power_n", bootstrap=10, holdout=2)
    md, _ = _check_rendered(s, is_blank)
    assert s.forecasts == () and s.backtest_mean_abs_rel_err is None
    assert "does not give the loss at a budget" in md and "No backtest: only 5 runs left" in md


def test_report_forecasts_budgets_in_the_runs_count_of_compute(tmp_path, is_blank):
    # Runs whose C is counted as D (6N + 40 N^0.6) (an exact count with attention and output layer,
    # 1.2-2x 6ND here): the forecasts at 10x and 100x the largest budget are the law's optimum under
    # that count, and Approach 3's a (in that count too) matches Approach 2's.
    compute = ComputeModel(m=40.0, p=0.6)
    runs = isoflop_runs(compute=compute)
    s = build_report(load_table(runs, c_kind="exact"), tmp_path, bootstrap=20, holdout=7)
    md, _ = _check_rendered(s, is_blank)
    fitted = FitResult.load(s.fit_json).compute
    assert fitted.basis == "6N + m N^p" and fitted.p == pytest.approx(0.6, abs=0.02)
    for C, loss, lo, hi in s.forecasts:
        truth = optimum(C, compute).loss.value
        assert loss == pytest.approx(truth, rel=0.02)
        assert abs(loss / optimum(C).loss.value - 1) > abs(loss / truth - 1)
    assert "Compute convention: budgets here are C as the runs count it (exact), C = D (6 N + " in md
    assert not s.disagreements


def test_report_shows_the_ranking_and_nominal_against_empirical_coverage(synthetic_report):
    s = synthetic_report  # law="auto", the default
    md = s.markdown.read_text()
    assert s.selection and "Law chosen by forecasting the runs' own future" in md
    assert "| rank | candidate | CV mean \\|err\\| |" in md and "chosen" in md
    assert "| nominal coverage | empirical coverage |" in md
    assert [p for p, _ in s.backtest_coverage] == [0.8, 0.9, 0.95]
    assert "calibrated on" in md and s.status == "converged"
