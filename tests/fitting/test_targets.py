"""Forecasts for a table of 300 targets in one call: the same numbers as one forecast at a time, in the
fit's conventions, and a target table in another N kind refused."""

import numpy as np
import pandas as pd
import pytest

from scalefit.analysis.forecast import forecast
from scalefit.fitting import datasets
from scalefit.fitting.fitter import fit


@pytest.fixture(scope="module")
def result():
    return fit("chinchilla", "chinchilla", bootstrap_resamples=30, seed=3)


def targets_300() -> pd.DataFrame:
    """300 targets from the Chinchilla points: the 240 fitted runs at their own N and D (with the loss they
    reached), and the budgets C of the first 60 of them alone (a compute-optimal forecast each)."""
    df = datasets.load("chinchilla")
    runs = df[["N", "D", "loss"]]
    budgets = pd.DataFrame({"C": df["C"].iloc[:60].to_numpy()})
    return pd.concat([runs, budgets], ignore_index=True)


def test_300_targets_match_one_forecast_at_a_time(result):
    t = targets_300()
    pred = result.predict_table(t)
    assert len(pred) == 300 and list(pred.columns[:4]) == ["N", "D", "loss", "C"]
    assert (pred["how"].iloc[:240] == "N, D").all() and (pred["how"].iloc[240:] == "compute-optimal").all()
    iv = result.predict(N=t["N"].iloc[:240].to_numpy(), D=t["D"].iloc[:240].to_numpy())
    for col, want in (("pred", iv.loss), ("low", iv.low), ("high", iv.high), ("param_low", iv.param_low)):
        np.testing.assert_array_equal(pred[col].iloc[:240], want)
    for i in (240, 270, 299):  # the budget rows: as scalefit forecast --compute C gives them
        f = forecast(result, C=float(t["C"].iloc[i]))
        assert pred["pred"].iloc[i] == pytest.approx(f.loss, rel=1e-12)
        assert (pred["low"].iloc[i], pred["high"].iloc[i]) == pytest.approx(f.interval, rel=1e-12)
        assert pred["at_N"].iloc[i] == pytest.approx(f.at["N"], rel=1e-12)
    obs = t["loss"].iloc[:240].to_numpy()
    np.testing.assert_allclose(pred["rel_err"].iloc[:240], (iv.loss - obs) / obs)
    assert pred["rel_err"].iloc[240:].isna().all()
    assert pred.attrs["n_kind"] == "total" and pred.attrs["c_kind"] == "6ND" and pred.attrs["level"] == 0.95


def test_budget_with_one_of_n_or_d_spends_the_rest(result):
    pred = result.predict_table(pd.DataFrame({"C": [1e22, 1e22], "N": [1e10, np.nan], "D": [np.nan, 1e11]}))
    assert list(pred["how"]) == ["C, N", "C, D"]
    assert pred["at_D"].iloc[0] == pytest.approx(1e22 / 6e10) and pred["at_N"].iloc[1] == pytest.approx(1e22 / 6e11)
    f = forecast(result, C=1e22, N=1e10)
    assert pred["pred"].iloc[0] == pytest.approx(f.loss, rel=1e-12)


def test_targets_in_another_n_kind_are_refused(result):
    t = targets_300().rename(columns={"N": "N_non_embedding"})
    with pytest.raises(ValueError, match=r"gives N only as 'N_non_embedding' \(non-embedding\), but the fit counts "
                                         r"total N"):
        result.predict_table(t)
    with pytest.raises(ValueError, match="the targets count N as non-embedding, the fit as total"):
        result.predict_table(targets_300(), n_kind="non-embedding")
    # Both counts present: the fit's is used, and said so.
    both = targets_300().assign(N_non_embedding=1.0)
    assert any("'N_non_embedding' not used" in n for n in result.predict_table(both).attrs["notes"])


def test_rows_without_inputs_or_with_bad_values_name_the_row(result):
    with pytest.raises(ValueError, match=r"target row 1 gives no forecastable inputs: law chinchilla needs N and D, "
                                         r"or a budget C.*1 of 2 rows"):
        result.predict_table(pd.DataFrame({"N": [1e9, 1e9], "D": [2e10, np.nan]}))
    with pytest.raises(ValueError, match=r"D \('D'\) must be a finite number > 0 where given; row 0 has -1"):
        result.predict_table(pd.DataFrame({"N": [1e9], "D": [-1.0]}))
