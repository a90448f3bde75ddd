"""Schedules as data: rebuilt exactly from a trainer spec, knots, cooldowns, files; the merged sums."""

import json

import numpy as np
import pandas as pd
import pytest

from scalefit.fitting.curve_sources import multipower_curves, multipower_schedule
from scalefit.fitting.laws.sums import NodeSpec, build_points
from scalefit.fitting.schedules import (Schedule, cooled_down, from_knots, from_rates, from_run_spec, from_spec,
                                        infer_warmup, rates_from_columns, read_schedule, write_schedule)
from scalefit.training.config import TrainConfig
from scalefit.training.optim import lr_table, wsd_schedule


def _spec(**train):
    cfg = TrainConfig(tokens=1e5, **train)
    import dataclasses

    return {"train": dataclasses.asdict(cfg), "steps": 400, "warmup_steps": 20}


@pytest.mark.parametrize("kind", ["cosine", "constant", "wsd"])
def test_run_spec_rebuilds_the_trainers_rates_exactly(kind):
    spec = _spec(schedule=kind, warmup_steps=20, lr=2e-3, min_lr_ratio=0.05, cooldown_frac=0.25)
    s = from_run_spec(spec)
    want = lr_table(TrainConfig(**spec["train"]), 400).astype(np.float64)
    assert s.steps == 400 and s.warmup == 20
    np.testing.assert_array_equal(s.rates, want)  # the float32 rates the updates used


def test_run_spec_errors_name_the_file():
    with pytest.raises(ValueError, match="spec.json: no 'steps'"):
        from_run_spec({"train": {}}, "spec.json")
    spec = _spec()
    spec["train"]["new_option"] = 3
    with pytest.raises(ValueError, match="new_option"):
        from_run_spec(spec)
    spec["train"]["new_option"] = None  # a newer trainer's field left unset does not matter
    assert from_run_spec(spec).steps == 400


def test_knots_round_trip_and_file(tmp_path):
    base = multipower_schedule("wsdld_20000_24000")
    k = base.knots()
    assert len(k) < 10  # linear pieces need only their ends
    back = from_knots(k, base.steps)
    np.testing.assert_allclose(back.rates, base.rates, rtol=1e-12, atol=1e-18)
    cos = multipower_schedule("cosine_24000")
    path = write_schedule(cos, tmp_path / "s.json")
    read = read_schedule(path)
    np.testing.assert_allclose(read.rates, cos.rates, rtol=1e-12, atol=1e-18)
    assert read.warmup == cos.warmup == 2160
    assert json.loads(path.read_text())["format"] == "scalefit.schedule/1"


def test_per_step_rate_column_needs_every_step(tmp_path):
    df = pd.DataFrame({"step": np.arange(50), "lr": np.linspace(1, 0.1, 50)})
    s = rates_from_columns(df.sample(frac=1, random_state=0), "t.csv")  # any row order
    np.testing.assert_array_equal(s.rates, np.linspace(1, 0.1, 50))
    with pytest.raises(ValueError, match="every step 0..49; 1 are missing, e.g. step 7"):
        rates_from_columns(df.drop(index=7), "t.csv")
    df.to_csv(tmp_path / "s.csv", index=False)
    assert read_schedule(tmp_path / "s.csv") == s


def test_cooldown_of_a_constant_trunk_is_the_trainers_wsd_branch():
    trunk = from_spec("constant:steps=3000,lr=3e-3,warmup=50")
    for S in (500, 1000, 3000):
        K = round(0.2 * S)
        branch = cooled_down(trunk, S, K, 0.1)
        want = wsd_schedule(3e-3, S, 50, K, 0.1)(np.arange(S)).astype(np.float32)
        np.testing.assert_allclose(branch.rates, want, rtol=2e-7)
    assert from_spec("wsd:steps=1000,lr=3e-3,warmup=50,cooldown=200").steps == 1000
    with pytest.raises(ValueError, match="kind must be"):
        from_spec("linear:steps=10")


def test_warmup_inference_and_validation():
    assert infer_warmup([0.0, 1.0, 2.0, 2.0, 1.0]) == 3
    assert infer_warmup([2.0, 2.0, 1.0]) == 0
    with pytest.raises(ValueError, match="rate at step 1 is -1"):
        Schedule(np.array([1.0, -1.0]), 0)
    assert from_rates([1.0, 2.0]) == from_rates(np.array([1.0, 2.0]))  # equal by content


def test_multipower_schedules_match_the_files_lr_column():
    t = multipower_curves(models="25M")  # raises if any rebuilt rate differs from the file's lr
    assert len(t.curves) == 9 and t.frame["step"].min() == 2161  # cosine_24000 starts at index 2160


# ---- the merged sums -------------------------------------------------------------------------------------


def _warm_decay_rewarm(T=3000):
    """Warmup 100 steps, peak to 1000, cosine to a tenth by 1800, re-warm to half the peak by 2000, then a
    linear decay to 5% at the end."""
    s = np.arange(T, dtype=float)
    r = np.full(T, 1e-3)
    r[:100] = 1e-3 * (s[:100] + 1) / 100
    m = (s >= 1000) & (s < 1800)
    r[m] = 1e-4 + 0.5 * 9e-4 * (1 + np.cos(np.pi * (s[m] - 1000) / 800))
    m = (s >= 1800) & (s < 2000)
    r[m] = 1e-4 + 4e-4 * (s[m] - 1800) / 200
    m = s >= 2000
    r[m] = 5e-4 - (5e-4 - 5e-5) * (s[m] - 2000) / (T - 2000)
    return from_rates(r, label="warmup, decay, re-warm")


@pytest.mark.parametrize("spec", [NodeSpec(("eta", "area")), NodeSpec(("steps",), flat_warmup=True)])
def test_merged_sums_match_the_step_by_step_sum(spec):
    sched = _warm_decay_rewarm()
    steps = np.arange(20, 3001, 37)
    pts = build_points([sched], np.zeros(steps.size, int), steps, spec=spec)
    exact = build_points([sched], np.zeros(steps.size, int), steps, spec=NodeSpec(spec.resolve, spec.flat_warmup, 0.0))
    r = sched.rates.copy()
    if spec.flat_warmup:
        r[:100] = r[99]
    assert exact.weight.size == sum(np.count_nonzero(np.diff(r[:n])) for n in steps)  # one node per change
    assert pts.weight.size < exact.weight.size / 3
    if "eta" in spec.resolve:  # multi-power: G(C eta^-gamma S), C = 2, beta = gamma = 0.6
        term = lambda eta, s, k: 1 - (2.0 * eta ** -0.6 * s + 1) ** -0.6  # noqa: E731
        node = lambda p: 1 - (2.0 * np.exp(-0.6 * p.log_eta + p.log_s) + 1) ** -0.6  # noqa: E731
    else:  # momentum: (1 - lambda^(n-k)) / (1 - lambda), lambda = 0.99
        term = lambda eta, s, k: (1 - 0.99 ** k) / 0.01  # noqa: E731
        node = lambda p: (1 - 0.99 ** np.exp(p.log_steps)) / 0.01  # noqa: E731
    for p in (pts, exact):
        merged = np.bincount(p.seg, weights=p.weight * node(p), minlength=len(p))
        ref = np.array([p.exact_sum(term, i) for i in range(len(p))])
        tol = 1e-12 if p is exact else 2e-3
        np.testing.assert_allclose(merged, ref, rtol=tol, atol=tol * np.abs(ref).max())
    # the area: the sum of the rates seen (warmup at its end rate when flat)
    np.testing.assert_allclose(np.exp(pts.log_area), np.cumsum(r)[steps - 1], rtol=1e-12)


def test_points_outside_a_schedule_are_refused():
    with pytest.raises(ValueError, match="point 1: 11 updates is outside its schedule"):
        build_points([from_rates(np.ones(10))], [0, 0], [10, 11])
