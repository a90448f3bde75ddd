"""One fit per group (Porian et al.'s three learning-rate recipes), saved together, read back, and
used to forecast each target row with its own group's fit."""

import json

import numpy as np
import pandas as pd
import pytest

from scalefit.fitting.fitter import fit
from scalefit.fitting.groups import GroupFits, fit_by, load_fits, split_by
from scalefit.fitting.result import FitResult
from scalefit.fitting.table import load_table



@pytest.fixture(scope="module")
def grouped(three_recipes):
    # The tuned recipe cut to its smallest model: 4 rows, too few to fit the five parameters.
    df = three_recipes
    table = load_table(df, by="recipe", where="recipe != 'tuned|const' or N < 6e6")
    return table, fit_by(table, "chinchilla")


def test_one_fit_per_group_equals_the_fit_of_that_group(grouped):
    table, gf = grouped
    assert gf.by == ("recipe",) and set(gf.fits) == {("base|chinchilla",), ("base|kaplan",)}
    ((key, why),) = gf.failed.items()
    assert key == ("tuned|const",) and "usable rows but law chinchilla has 5 free parameters" in why
    alone = fit(split_by(table)[("base|kaplan",)], "chinchilla")
    got = gf.get("base|kaplan")
    assert got.objective == alone.objective and got.values() == alone.values()
    assert got.n_points == 132 and got.fingerprint == alone.fingerprint


def test_summary_and_round_trip(grouped, tmp_path):
    _, gf = grouped
    s = gf.summary()
    assert list(s["recipe"]) == ["base|chinchilla", "base|kaplan", "tuned|const"]
    assert s["status"].iloc[2].startswith("not fitted: ") and np.isnan(s["alpha"].iloc[2])
    assert s.loc[1, "rows_fitted"] == 132 and {"E", "A", "B", "alpha", "beta", "a", "b"} <= set(s.columns)
    path = gf.save(tmp_path / "fits.json")
    assert json.loads(path.read_text())["schema"] == "scalefit.fits/1"
    back = load_fits(path)
    assert isinstance(back, GroupFits) and back.failed == gf.failed
    for k, r in gf.fits.items():
        assert back.fits[k].values() == r.values() and back.fits[k].fingerprint == r.fingerprint
    assert "2 fits by recipe (1 groups not fitted)" in str(back)
    single = gf.get("base|kaplan").save(tmp_path / "one.json")
    assert isinstance(load_fits(single), FitResult)
    with pytest.raises(ValueError, match="group recipe = tuned|const was not fitted"):
        gf.get("tuned|const")
    with pytest.raises(ValueError, match="no group recipe = nope; groups: recipe = base|chinchilla"):
        gf.get("nope")


def test_each_target_row_is_forecast_by_its_groups_fit(grouped, three_recipes):
    _, gf = grouped
    df = three_recipes
    targets = df[df.recipe != "tuned|const"].sample(40, random_state=0)[["recipe", "N", "D", "loss"]]
    pred = gf.predict_table(targets)
    assert list(pred.index) == list(targets.index) and pred.attrs["groups"] == 2
    for recipe, rows in targets.groupby("recipe"):
        want = gf.get(recipe).predict(N=rows["N"].to_numpy(), D=rows["D"].to_numpy())
        np.testing.assert_array_equal(pred.loc[rows.index, "pred"], want.loss)
    with pytest.raises(ValueError, match=r"the targets need the grouping columns \['recipe'\]"):
        gf.predict_table(targets.drop(columns="recipe"))
    with pytest.raises(ValueError, match="was not fitted"):
        gf.predict_table(pd.DataFrame({"recipe": ["tuned|const"], "N": [1e8], "D": [2e9]}))
