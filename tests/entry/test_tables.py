"""Fit your own logs without pandas, end to end through the command line, on tables built from shipped
data: row filters, one fit per group saved together, best-of a learning-rate sweep, checkpoints of
curves, a 300-row target table, backtest splits, Approach 2 with both minima."""

import json

import pandas as pd
import pytest

from scalefit import cli
from scalefit.fitting import datasets


def run(capsys, *argv) -> str:
    assert cli.main([str(a) for a in argv]) == 0
    out = capsys.readouterr()
    return out.out + out.err


@pytest.mark.entry
def test_where_and_n_columns_per_kind(capsys, tmp_path, quickstart_curves):
    out = run(capsys, "fit", "chinchilla", "--where", "N < 1e9", "--holdout", 0)
    n = int((datasets.load("chinchilla")["N"] < 1e9).sum())
    assert f"({n} rows, {n} runs, {240 - n} excluded" in out
    # A table with both counts of N: --n-kind picks the column, the other is warned about, and the
    # per-kind --n-col names both (no warning).
    runs = tmp_path / "runs.csv"
    pd.read_csv("tests/data/quickstart/runs.csv").to_csv(runs, index=False)
    common = ["--c-col", "C_exact", "--loss-col", "final_eval_loss", "--c-kind", "exact", "--holdout", 0]
    out = run(capsys, "fit", runs, "--n-kind", "non-embedding", *common)
    assert "N = non-embedding" in out and "warning: column 'N_total' looks like total parameters" in out
    out = run(capsys, "fit", runs, "--n-col", "total=N_total", "--n-col", "non-embedding=N_non_embedding",
              "--n-kind", "non-embedding", *common)
    assert "warning" not in out.lower()


@pytest.mark.entry
def test_by_group_saved_together_then_predict_and_forecast(capsys, tmp_path, three_recipes):
    table = tmp_path / "recipes.csv"
    three_recipes.to_csv(table, index=False)
    fits, summary = tmp_path / "fits.json", tmp_path / "summary.csv"
    out = run(capsys, "fit", table, "--by", "recipe", "--out", fits, "--summary", summary, "--holdout", 0.2)
    assert "chinchilla by recipe: 3 groups fitted, 0 not" in out and f"wrote {fits} (3 fits)" in out
    s = pd.read_csv(summary)
    assert list(s["recipe"]) == ["base|chinchilla", "base|kaplan", "tuned|const"]
    assert {"alpha", "beta", "a", "b", "backtest"} <= set(s.columns) and s["backtest"].str.contains("%").all()
    assert json.loads(fits.read_text())["schema"] == "scalefit.fits/1"

    targets = tmp_path / "targets.csv"
    three_recipes.sample(300, random_state=1)[["recipe", "N", "D", "loss"]].to_csv(targets, index=False)
    pred = tmp_path / "pred.parquet"
    out = run(capsys, "predict", fits, targets, "--out", pred)
    assert "300 forecasts (300 at N, D) of law chinchilla" in out and "against the 300 observed losses" in out
    got = pd.read_parquet(pred)
    assert len(got) == 300 and {"pred", "low", "high", "param_low", "rel_err"} <= set(got.columns)
    out = run(capsys, "forecast", fits, "--compute", 1e20, "--group", "recipe=tuned|const")
    assert out.startswith("[recipe = tuned|const] forecast (chinchilla) at C = 1e+20") and out.count("[recipe") == 1
    assert run(capsys, "forecast", fits, "--N", 1e8, "--D", 2e9).count("[recipe = ") == 3


@pytest.mark.entry
def test_best_of_a_sweep_and_isoflop_reports_both_minima(capsys, tmp_path, three_recipes):
    table = tmp_path / "recipes.csv"
    three_recipes.to_csv(table, index=False)
    out = run(capsys, "isoflop", table, "--best-of", "recipe", "--best-per", "N,C")
    assert "(12 budgets, 0 flagged, parabola)" in out and "excluded 208 rows: not the lowest loss of its cell" in out
    assert "DISAGREE: akima gives" in out
    out = run(capsys, "isoflop", table, "--by", "recipe", "--method", "akima")
    assert out.count("recipe = ") == 3 and "akima)" in out
    out = run(capsys, "fit", table, "--best-of", "recipe", "--best-per", "N,C", "--holdout", 0)
    assert "(133 rows, 133 runs, 208 excluded" in out


@pytest.mark.entry
def test_curve_table_checkpoints_and_curve_tail_backtest(capsys, tmp_path, quickstart_curves):
    table = tmp_path / "curves.csv"
    quickstart_curves.to_csv(table, index=False)
    cols = ["--n-col", "total=N_total", "--n-col", "non-embedding=N_non_embedding", "--d-col", "tokens",
            "--c-col", "flops_exact", "--loss-col", "eval_loss", "--c-kind", "exact"]
    out = run(capsys, "fit", table, *cols, "--holdout", 0)
    assert "(16 rows, 16 runs, 80 excluded" in out and "fitted each run's final point" in out
    # Every checkpoint of these tiny runs leaves E unpinned (it collapses to 0): the fit says so and
    # exits 3 unless the user keeps the degenerate fit.
    out = run(capsys, "fit", table, *cols, "--checkpoints", "all", "--holdout-by", "curve-tail", "--holdout", 0.5,
              "--keep-degenerate")
    assert "status unidentifiable" in out
    assert "(96 rows, 16 runs, 0 excluded" in out and "each weighted 1/(checkpoints kept in its run)" in out
    assert "backtest (chinchilla): held out the checkpoints past 50% of each run's tokens" in out
    # The default final points, with a curve-tail backtest: the backtest reads the checkpoints itself.
    out = run(capsys, "fit", table, *cols, "--holdout-by", "curve-tail", "--holdout", 0.5)
    assert "(16 rows, 16 runs" in out and "fit on 80 rows of 16 runs; forecast 16 held-out rows" in out


@pytest.mark.entry
def test_predict_300_targets_to_stdout(capsys, tmp_path):
    fit = tmp_path / "fit.json"
    run(capsys, "fit", "chinchilla", "--bootstrap", 20, "--holdout", 0, "--out", fit)
    df = datasets.load("chinchilla")
    targets = tmp_path / "targets.csv"
    pd.concat([df[["N", "D"]], pd.DataFrame({"C": df["C"].iloc[:60].to_numpy()})]).to_csv(targets, index=False)
    assert cli.main(["predict", str(fit), str(targets)]) == 0
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 301 and lines[0].startswith("N,D,C,at_N,at_D,how,pred,param_low,param_high,low,high")
    assert "300 forecasts (240 at N, D, 60 at compute-optimal)" in out.err and "N total, C 6ND" in out.err
    ne = tmp_path / "ne.csv"
    df[["N", "D"]].rename(columns={"N": "N_non_embedding"}).to_csv(ne, index=False)
    assert cli.main(["predict", str(fit), str(ne)]) == 2
    assert "gives N only as 'N_non_embedding' (non-embedding), but the fit counts total N" in capsys.readouterr().err


@pytest.mark.entry
@pytest.mark.slow
def test_report_by_group(capsys, tmp_path, three_recipes):
    table = tmp_path / "recipes.csv"
    three_recipes[three_recipes.recipe != "base|kaplan"].to_csv(table, index=False)
    out = run(capsys, "report", table, "--by", "recipe", "--out", tmp_path / "rep", "--bootstrap", 10)
    index = (tmp_path / "rep" / "index.md").read_text()
    assert index.count("report.md") == 2 and "| recipe = tuned|const |" in index
    for name in ("recipe=base_chinchilla", "recipe=tuned_const"):
        assert (tmp_path / "rep" / name / "report.md").is_file(), out
