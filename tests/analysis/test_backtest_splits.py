"""Backtest splits other than compute: the largest models, the most tokens, the largest run, the tails of
curves; on the quickstart's real runs and on Clark et al. 2022's 13 long dense curves."""

from pathlib import Path

import numpy as np
import pytest

from scalefit.analysis.backtest import SPLITS, backtest, can_backtest, holdout_split, split
from scalefit.fitting import datasets
from scalefit.fitting.table import load_table

RUNS = Path(__file__).resolve().parents[1] / "data" / "quickstart" / "runs.csv"


@pytest.fixture(scope="module")
def runs():
    return load_table(RUNS, n_kind="non-embedding", c_col="C_exact", loss_col="final_eval_loss", run_col="run_id",
                      c_kind="exact")


@pytest.fixture(scope="module")
def clark_dense():
    """Clark et al.'s dense runs: 13 curves of 25 evaluations (steps 10,000 to 249,000, one batch size, so D
    counts steps: tokens / a constant, which the law's B absorbs, and C = 6 N D is FLOPs / that constant),
    each run's first fifth left out (warmup)."""
    df = datasets.load("clark_routing_curves")
    return load_table(df[df.num_experts == 1], n_col="dense_parameter_count", d_col="step", loss_col="loss_validation",
                      run_col="hyper_id", c_kind="6ND", checkpoints="after=0.2")


def test_registry_and_the_compute_split_is_holdout_split(runs):
    assert list(SPLITS) == ["C", "N", "D", "run", "curve-tail"]
    a, b = split(runs.frame, "C", 4), holdout_split(runs.frame, 4)
    assert (a[0] == b[0]).all() and a[1:] == b[1:]
    with pytest.raises(ValueError, match="holdout_by must be one of C, N, D, run, curve-tail"):
        split(runs.frame, "loss", 0.2)


def test_largest_models_most_tokens_and_the_largest_run(runs):
    f = runs.frame
    held, rule, cut = split(f, "N", 4)
    assert rule == "held out the 4 runs of largest N (the largest models)" and held.sum() == 4
    assert f.loc[held, "N"].min() > cut >= f.loc[~held, "N"].max()
    assert f.loc[held, "C"].nunique() > 1  # not a cut in compute: the largest models at several budgets
    held, _, cut = split(f, "D", 0.25)
    assert f.loc[held, "D"].min() > f.loc[~held, "D"].max() and held.sum() == 4
    held, rule, _ = split(f, "run", 1)
    top = f.sort_values(["C", "N"]).iloc[-1]
    assert held.sum() == 1 and f.loc[held, "run"].item() == top["run"] and "the largest run" in rule
    held, _, _ = split(f, "N", None, cutoff=1e5)
    assert (f.loc[held, "N"] > 1e5).all() and (f.loc[~held, "N"] <= 1e5).all()


def test_backtest_of_the_largest_models(runs):
    bt = backtest(runs, "chinchilla", holdout=4, holdout_by="N", bootstrap_resamples=20)
    assert bt.holdout_by == "N" and bt.n_held_runs == 4 and bt.n_fit_runs == 12
    assert bt.fit.n_points == 12
    assert bt.rows["N"].min() > runs.frame.loc[~runs.frame["run"].isin(bt.rows["run"]), "N"].max()
    assert "fit on 12 rows of 12 runs" in str(bt) and "largest models" in str(bt)
    print(f"\n{bt}")
    assert bt.mean_abs_rel_err < 0.05


def test_curve_tail_holds_out_the_end_of_every_curve(quickstart_curves):
    t = load_table(quickstart_curves, n_kind="non-embedding", n_col="N_non_embedding", d_col="tokens",
                   c_col="flops_exact", loss_col="eval_loss", checkpoints="all")
    f = t.frame
    held, rule, _ = split(f, "curve-tail", 0.5)
    d_max = f.groupby("run")["D"].transform("max")
    np.testing.assert_array_equal(held, (f["D"] > 0.5 * d_max) & (f["D"] > f.groupby("run")["D"].transform("min")))
    assert set(f.loc[held, "run"]) == set(f["run"]) and "past 50% of each run's tokens" in rule
    final_only = load_table(quickstart_curves, n_col="N_non_embedding", n_kind="non-embedding", d_col="tokens",
                            c_col="flops_exact", loss_col="eval_loss")
    with pytest.raises(ValueError, match="curve-tail' needs a curve table"):
        split(final_only.frame, "curve-tail", 0.3)


def test_a_handful_of_long_curves_backtests_by_their_tails(clark_dense):
    f = clark_dense.frame
    assert f["run"].nunique() == 13 and len(f) == 273
    # By compute, 13 runs leave too few to fit; by the curves' tails every run is in the fit.
    assert can_backtest(clark_dense, "chinchilla", 0.3) == "only 9 runs left to fit a 5-parameter law (need 10)"
    assert can_backtest(clark_dense, "chinchilla", 0.3, holdout_by="curve-tail") == ""
    bt = backtest(clark_dense, "chinchilla", holdout=0.3, holdout_by="curve-tail", bootstrap_resamples=0)
    print(f"\n{bt}")
    assert bt.n_fit_runs == bt.n_held_runs == 13 and len(bt.rows) == 104 and bt.fit.n_points == 169
    assert (bt.rows["D"] > 0.7 * 249000).all()
    assert bt.mean_abs_rel_err < 0.03 and bt.max_abs_rel_err < 0.08
