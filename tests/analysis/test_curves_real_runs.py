"""Curve laws on real runs of this project's trainer: a WSD ladder of d32-l2 (tests/data/curves_ladder)."""

from pathlib import Path

import numpy as np
import pytest

from scalefit.analysis.derived import derived_points
from scalefit.fitting.curve_sources import curves_from_store
from scalefit.fitting.curvefit import fit_curves
from scalefit.fitting.schedules import cooled_down
from scalefit.store import tables

STORE = Path(__file__).resolve().parents[1] / "data" / "curves_ladder"
# Each eval is 4 batches of 16 x 128 byte tokens, so one final loss is itself uncertain by about a percent;
# the cooldown the derived points must supply is worth 2-4% at these lengths (the trunk's own loss there).
TOLERANCE = 0.025


@pytest.fixture(scope="module")
def ladder():
    runs = tables.load(STORE).set_index("run_id")
    return runs, curves_from_store(STORE, loss="eval")


def test_the_store_gives_every_run_its_own_points_and_exact_schedule(ladder):
    runs, curves = ladder
    assert len(curves.curves) == 8 and not curves.excluded  # every logged lr matched the rebuilt schedule
    trunk = runs[runs["role"] == "trunk"].sort_values("D").index[-1]
    for rid, r in runs[runs["role"] == "branch"].iterrows():
        S = int(r["steps"])
        # a branch's schedule is the trunk's cooled down over its last 20% (float32 rates, as trained)
        want = cooled_down(curves.schedules[trunk], S, round(0.2 * S), 0.1) if S <= 3125 else None
        if want is not None:
            np.testing.assert_allclose(curves.schedules[rid].rates, want.rates, rtol=1e-7)
        own = curves.subset(rid).frame["step"]
        start = int(runs.loc[r["parent"], "steps"])
        assert own.min() > start and own.max() == S  # only its own steps: the rest are its parent's points
    # the points: every eval of the ladder once
    assert curves.frame.duplicated(["curve", "step"]).sum() == 0


def test_derived_points_agree_with_the_separately_trained_branches(ladder):
    # Leave each of the three shorter branches out, fit the trunk and the other branches, and derive that
    # budget's cooled-down final loss from the trunk's curve: the branch measured it.
    runs, curves = ladder
    curves = curves.after_warmup()
    trunk = runs[runs["role"] == "trunk"].sort_values("D").index[-1]
    errors, naive = [], []
    frame = curves.frame
    trunks = frame[frame["curve"].isin(runs[runs["role"] == "trunk"].index)].sort_values("step")
    for rid, r in runs[runs["role"] == "branch"].sort_values("D").iloc[:-1].iterrows():
        fit = fit_curves(curves.subset([c for c in curves.curves if c != rid]), "tissue")
        row = derived_points(fit, curves.subset(trunk), [int(r["steps"])], cooldown_frac=0.2, min_ratio=0.1)
        assert row["derived"].iloc[0] and row["run"].iloc[0] == trunk
        errors.append(row["loss"].iloc[0] / r["final_eval_loss"] - 1)
        assert row["loss_low"].iloc[0] < row["loss"].iloc[0] < row["loss_high"].iloc[0]
        # reading the uncooled trunk at that length instead (the last eval at or before it)
        naive.append(trunks[trunks["step"] <= r["steps"]]["loss"].iloc[-1] / r["final_eval_loss"] - 1)
        # the derived point is the forecast of the branch's own schedule
        direct = fit.predict(curves.schedules[rid], [int(r["steps"])]).loss[0]
        assert row["loss"].iloc[0] == pytest.approx(direct, rel=1e-6)
    assert np.max(np.abs(errors)) < TOLERANCE, errors
    assert np.mean(np.abs(errors)) < np.mean(np.abs(naive)), (errors, naive)
