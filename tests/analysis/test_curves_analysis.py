"""Curves into (N, D) points, and the schedule a fitted law says is best, on the shipped curves."""

import numpy as np
import pytest

from scalefit.analysis.derived import derived_points
from scalefit.analysis.schedule_opt import dense_arrays, optimise_schedule
from scalefit.fitting.curve_sources import MULTIPOWER_TRAIN, multipower_curves, multipower_schedule
from scalefit.fitting.curvefit import fit_curves
from scalefit.fitting.laws.curves import MULTIPOWER
from scalefit.fitting.schedules import cooled_down, from_spec, train_overrides
from scalefit.fitting.table import load_table

# Luo et al.'s 25M parameters but gamma (refitted here on a thinned copy of the paper's three training
# curves: a real CurveFit in seconds).
PINS = "multipower[L0=3.04045406,A=0.52468604,alpha=0.50786857,B=363.78751622,C=2.06560812,beta=0.58279013]"


@pytest.fixture(scope="module")
def curves():
    return multipower_curves(models="25M")


@pytest.fixture(scope="module")
def fit25(curves):
    train = curves.subset([f"25M/{s}" for s in MULTIPOWER_TRAIN])
    thin = train.subset(mask=np.arange(len(train)) % 4 == 0, note="every 4th point")
    return fit_curves(thin, PINS, bootstrap_resamples=20, seed=0)


def test_derived_points_agree_with_the_cooled_down_runs(curves, fit25):
    # From the constant-rate curve, the final loss of its schedule cooled down over the last 4,000 of 24,000
    # steps (geometric, as wsd_20000_24000; linear, as wsdld) against those two separately trained runs.
    const = curves.subset("25M/constant_24000")
    for shape, run in (("exp", "25M/wsd_20000_24000"), ("linear", "25M/wsdld_20000_24000")):
        rows = derived_points(fit25, const, [24000], cooldown_frac=4000 / 24000, min_ratio=0.1, shape=shape)
        last = curves.subset(run).frame.iloc[-1]  # the last logged point, 23,905 updates
        # within the law's own error on these curves (Luo et al.: worst 0.3-0.6% at 25M) ...
        assert rows["loss"].iloc[0] == pytest.approx(last["loss"], rel=0.01), shape
        # ... and the derived schedule's loss at that step nearer still
        at = fit25.predict(cooled_down(const.schedules["25M/constant_24000"], 24000, 4000, 0.1, shape),
                           [int(last["step"])]).loss[0]
        assert at == pytest.approx(last["loss"], rel=0.006) and rows["loss"].iloc[0] < at
        assert rows["loss_low"].iloc[0] < rows["loss"].iloc[0] < rows["loss_high"].iloc[0]
        # the derived schedule is that run's schedule (up to Luo et al.'s one-step offset of the decay)
        derived = cooled_down(const.schedules["25M/constant_24000"], 24000, 4000, 0.1, shape)
        real = multipower_schedule(run.split("/")[1])
        assert np.max(np.abs(derived.rates[1:] - real.rates[1:]) / real.rates[1:]) < 5e-3


def test_derived_rows_feed_the_nd_fit(curves, fit25):
    rows = derived_points(fit25, curves.subset(["25M/constant_72000"]), n_lengths=5)
    assert rows["derived"].all() and len(rows) == 5 and (rows["run"] == "25M/constant_72000").all()
    # cooled down, every length beats the constant run at the same step
    const = curves.subset("25M/constant_72000").frame.set_index("step")["loss"]
    near = const.reindex(rows["steps"], method="nearest").to_numpy()
    assert np.all(rows["loss"].to_numpy() < near)
    table = load_table(rows, keep=["derived"])
    assert len(table) == 5 and table.frame["derived"].all()


def test_optimised_schedule_beats_cosine_and_wsd_under_the_law(fit25):
    ref = multipower_schedule("cosine_24000")
    o = optimise_schedule(fit25, ref, n_knots=48)
    r = o.schedule.rates
    assert o.converged and o.schedule.steps == 24000
    np.testing.assert_array_equal(r[:2160], ref.rates[:2160])  # the warmup is kept
    assert np.all(np.diff(r[2159:]) <= 1e-18) and r.max() == pytest.approx(3e-4)  # non-increasing from the peak
    assert o.predicted.loss[0] < o.reference_predicted.loss[0]
    wsd = fit25.predict(multipower_schedule("wsd_20000_24000"), [24000]).loss[0]
    assert o.predicted.loss[0] < wsd
    # the law's own gradient: no small non-increasing change of the knots lowers its prediction further
    law = lambda s: fit25.predict(s, [24000]).loss[0]  # noqa: E731
    assert law(o.schedule) == pytest.approx(o.predicted.loss[0], rel=1e-12)
    # a form the trainer runs: knots relative to the peak
    over = train_overrides(o.schedule)
    assert over["schedule"] == "table" and over["lr"] == pytest.approx(3e-4)
    assert max(v for _, v in over["schedule_table"]) == pytest.approx(1.0)


def test_dense_arrays_are_the_unmerged_sums():
    sched = from_spec("wsd:steps=300,lr=1e-3,warmup=20,cooldown=60")
    from scalefit.fitting.laws.sums import NodeSpec, build_points

    import jax

    pts = build_points([sched], [0], [300], spec=NodeSpec(("eta", "area"), resolution=0.0))
    with jax.enable_x64(True):  # as the optimiser calls it
        d = {k: np.asarray(v) for k, v in dense_arrays(sched.rates, 20, False).items()}
    keep = d["weight"] != 0
    np.testing.assert_allclose(d["weight"][keep], pts.weight)
    np.testing.assert_allclose(d["log_s"][keep], pts.log_s)
    np.testing.assert_allclose(d["log_area"], pts.log_area)
    theta = MULTIPOWER.from_params(np.array([3.0, 0.5, 0.5, 300.0, 2.0, 0.6, 0.6]))
    with jax.enable_x64(True):
        a = float(MULTIPOWER.log_loss(theta, dense_arrays(sched.rates, 20, False))[0])
    from scalefit.fitting.laws.curves import with_resolution

    b = float(np.log(with_resolution(MULTIPOWER, 0.0).evaluate(MULTIPOWER.to_params(theta)[None], pts)[0, 0]))
    assert a == pytest.approx(b, rel=1e-12)
