"""Row selections of the table reader on shipped data: --where, the run-id rule, --best-of over three
learning-rate recipes per cell (Porian et al. 2024), checkpoints of the quickstart's real curves."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scalefit.fitting.groups import split_by
from scalefit.fitting.table import load_table

DATA = Path(__file__).resolve().parents[1] / "data" / "quickstart"
CURVE_OPTS = dict(n_col="N_non_embedding", n_kind="non-embedding", d_col="tokens", c_col="flops_exact",
                  loss_col="eval_loss", c_kind="exact")


def test_where_filters_rows_and_counts_them(three_recipes):
    t = load_table("chinchilla", where="N < 1e9")
    full = load_table("chinchilla")
    assert len(t) == int((full.frame["N"] < 1e9).sum()) and (t.frame["N"] < 1e9).all()
    dropped = [why for _, why in t.excluded if why.startswith("not selected by where")]
    assert len(dropped) == len(full) - len(t) and t.excluded_counts()["not selected by where 'N < 1e9'"] == len(dropped)
    assert any(f"{len(t)} of" in n for n in t.notes)
    # Source columns and the fitter's names both work; a bad expression names the table's columns.
    assert len(load_table(three_recipes, where="recipe == 'tuned|const' and N > 1e7")) < 121
    with pytest.raises(ValueError, match=r"where 'nope > 1' cannot be evaluated on dataset 'chinchilla'.*columns"):
        load_table("chinchilla", where="nope > 1")
    with pytest.raises(ValueError, match="must give True/False per row"):
        load_table("chinchilla", where="N * 2")


def test_duplicated_run_ids_with_different_models_are_refused(three_recipes):
    df = three_recipes
    with pytest.raises(ValueError, match=r"run id 'base\|kaplan' is shared by rows 0, 1, .* with different N .*"
                                         r"bootstrap would merge"):
        load_table(df, run_col="recipe")
    # Within groups the same ids are unique per cell ... still one id per recipe and size: refused too.
    with pytest.raises(ValueError, match=r"\(in group C = 1.25e\+16\) .*different N"):
        load_table(df, run_col="recipe", by=["C"])
    # ... and unique once the id says which size and budget: fine.
    t = load_table(df.assign(run=df.recipe + "|" + df.N.astype(str) + "|" + df.C.astype(str)))
    assert len(t) == len(df)


def test_repeated_rows_of_one_run_are_refused(quickstart_curves):
    cv = quickstart_curves
    twice = pd.concat([cv, cv.iloc[[7]]], ignore_index=True)
    with pytest.raises(ValueError, match=rf"run id '{cv.run_id[7]}' has several rows at D = .* \(rows 7, 96"):
        load_table(twice, **CURVE_OPTS)


def test_best_of_keeps_the_lowest_final_loss_per_cell(three_recipes):
    df = three_recipes
    t = load_table(df, best_of="recipe", best_per="N,C")
    best = df.loc[df.groupby(["N", "C"])["loss"].idxmin()]
    assert len(t) == len(best) == 133
    got = t.frame.sort_values(["C", "N"]).reset_index(drop=True)
    np.testing.assert_array_equal(got["loss"], best.sort_values(["C", "N"])["loss"])
    assert list(got["recipe"]) == list(best.sort_values(["C", "N"])["recipe"])
    assert t.excluded_counts() == {"not the lowest loss of its cell": len(df) - 133}
    assert any("best of recipe per (N, C): 341 runs in 133 cells" in n and "208 runs (208 rows) dropped" in n
               for n in t.notes)
    assert any("13 of 133 cells have a single run" in w for w in t.warnings)
    # The default cell is (N, D): the same cells here (D = C / 6N to rounding).
    assert len(load_table(df, best_of="recipe")) == 133
    with pytest.raises(ValueError, match="best_of column 'lr' not found"):
        load_table(df, best_of="lr")


def test_best_of_warns_when_the_sweep_does_not_bracket_its_best(three_recipes):
    # A numeric sweep column: the recipes' order of aggressiveness, 0 = tuned constant LR.
    df = three_recipes.copy()
    df["lr_rank"] = df["recipe"].map({"tuned|const": 0, "base|chinchilla": 1, "base|kaplan": 2})
    t = load_table(df, best_of="lr_rank", best_per="N,C")
    assert any("the lowest loss is at the smallest lr_rank tried" in w for w in t.warnings)


def test_curve_table_fits_final_points_by_default(quickstart_curves):
    cv = quickstart_curves
    t = load_table(cv, **CURVE_OPTS)
    finals = cv.loc[cv.groupby("run_id")["tokens"].idxmax()]
    assert len(t) == 16 and set(t.frame["run"]) == set(cv["run_id"])
    np.testing.assert_array_equal(np.sort(t.frame["D"]), np.sort(finals["tokens"]))
    assert (t.frame["weight"] == 1).all()
    assert not any("step column" in w for w in t.warnings)  # it has one: read as curves without doubt
    assert t.excluded_counts() == {"checkpoint before its run's final point": 80}


def test_all_checkpoints_weigh_each_run_the_same(quickstart_curves):
    t = load_table(quickstart_curves, checkpoints="all", **CURVE_OPTS)
    assert len(t) == 96
    np.testing.assert_allclose(t.frame.groupby("run")["weight"].sum(), 1.0)
    after = load_table(quickstart_curves, checkpoints="after=0.2", **CURVE_OPTS)
    f = after.frame
    assert (f["D"] >= 0.2 * f.groupby("run")["D"].transform("max")).all()
    np.testing.assert_allclose(f.groupby("run")["weight"].sum(), 1.0)
    assert 16 < len(f) < 96
    with pytest.raises(ValueError, match="checkpoints must be 'final', 'all' or 'after=FRACTION'"):
        load_table(quickstart_curves, checkpoints="after=2", **CURVE_OPTS)


def test_shared_ids_without_a_step_column_are_read_as_curves_with_a_warning():
    # The run table keyed by preset: one preset trained at 3-4 budgets. Read as curves, and said so.
    t = load_table(DATA / "runs.csv", run_col="preset", c_col="C_exact", loss_col="final_eval_loss", c_kind="exact")
    assert len(t) == 6 and any("no step column: they were read as checkpoints of 6 runs" in w for w in t.warnings)


def test_groups_keep_their_own_exclusions(three_recipes):
    df = three_recipes.copy()
    df.loc[3, "loss"] = np.nan
    t = load_table(df, by="recipe", where="C > 2e16")
    groups = split_by(t)
    assert list(groups) == [("base|chinchilla",), ("base|kaplan",), ("tuned|const",)]
    assert sum(len(g) for g in groups.values()) == len(t)
    for (recipe,), g in groups.items():
        mine = df.index[df.recipe == recipe]
        assert {r for r, _ in g.excluded} <= set(mine) and len(g.excluded) == int(((df.recipe == recipe)
                                                                                  & ((df.C <= 2e16) | df.loss.isna())).sum())
        assert any(f"group recipe = {recipe}" in n for n in g.notes)
