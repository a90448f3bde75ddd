"""Intervals calibrated on leave-future-out errors: they widen where the form fails and keep their level."""

import math

import numpy as np
import pytest
from scipy.special import ndtri

from scalefit.fitting.calibrate import (Calibration, calibrate, conformal_quantile, distance, fit_tau,
                                        fold_quantile, reference)
from scalefit.fitting.fitter import fit
from scalefit.fitting.result import FitResult


def test_conformal_quantile_is_the_finite_sample_rank():
    u = np.arange(1.0, 20.0)  # 19 scores
    assert conformal_quantile(u, 0.9) == 18.0  # ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(u, 0.5) == 10.0
    assert conformal_quantile(np.array([0.3]), 0.9) == pytest.approx(float(ndtri(0.95)))  # too few: Normal
    assert conformal_quantile(np.array([5.0]), 0.9) == 5.0  # ... or the largest score, if larger
    # Weights: a fold of one row weighs as much as a fold of many.
    many, one = np.full(9, 1.0), np.array([10.0])
    assert fold_quantile([many, one], 0.6) == 10.0 and conformal_quantile(np.r_[many, one], 0.6) == 1.0


def test_fit_tau_recovers_the_growth_of_the_error():
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 3, 4000)
    err = rng.normal(0, np.sqrt(0.005 ** 2 + (0.02 * d) ** 2))
    assert fit_tau(err, np.full_like(d, 0.005), d) == pytest.approx(0.02, rel=0.05)
    assert fit_tau(rng.normal(0, 0.005, 4000), np.full_like(d, 0.005), d) < 0.002  # the form holds: ~0


def test_distance_is_in_log_compute_beyond_the_fitted_rows():
    logx = np.log(np.array([[1e8, 1e9], [1e11, 1e10]]))  # N, D of two fitted rows: N D = 1e19 each
    ref = reference(("N", "D"), logx)
    assert ref["N*D"] == pytest.approx(math.log(1e19))
    # The next IsoFLOP budget: N and D each inside their ranges, N D twice the largest.
    x = np.log(np.array([[2e8], [1e11]]))
    assert distance(("N", "D"), x, ref)[0] == pytest.approx(math.log(2e19 / 1e19))
    assert distance(("N", "D"), logx, ref).tolist() == [0.0, 0.0]


def test_calibrated_interval_widens_where_the_form_fails_and_the_plain_one_does_not(synth):
    df = synth.isoflop(synth.broken, noise=0.003, seed=1)
    plain = fit(df, "chinchilla", bootstrap_resamples=50)
    cal = fit(df, "chinchilla", bootstrap_resamples=50, calibrate=True)
    assert cal.calibration.tau > 0.003

    def width(r, m):
        a = r.allocate(df["C"].max() * m)
        iv = r.predict(0.9, N=a.N.value, D=a.D.value)
        return float(np.log(iv.high / iv.low)), a

    (p1, _), (p100, _) = width(plain, 1), width(plain, 100)
    (c1, _), (c100, a) = width(cal, 1), width(cal, 100)
    assert c100 / c1 > 2 * (p100 / p1)  # the calibrated interval grows with the distance, the plain one hardly
    assert c100 > 2 * p100
    truth = synth.broken(a.N.value, a.D.value)
    iv = cal.predict(0.9, N=a.N.value, D=a.D.value)
    assert iv.low <= truth <= iv.high


@pytest.mark.slow
def test_coverage_on_a_known_law_matches_nominal(synth):
    # 16 sweeps from one Chinchilla law with 1% scatter; each fitted below 5e19 and asked for the top budget.
    inside = {0.8: [], 0.9: [], 0.95: []}
    for seed in range(16):
        df = synth.isoflop(synth.chinchilla(synth.CHIN), noise=0.01, seed=100 + seed)
        train, test = df[df["C"] < 5e19], df[df["C"] > 5e19]
        r = fit(train, "chinchilla", calibrate=True)
        for p in inside:
            iv = r.predict(p, N=test["N"].to_numpy(), D=test["D"].to_numpy())
            inside[p] += list((test["loss"] >= iv.low) & (test["loss"] <= iv.high))
    for p, hits in inside.items():
        n = len(hits)
        assert abs(np.mean(hits) - p) <= 3 * math.sqrt(p * (1 - p) / n) + 0.02, (p, np.mean(hits), n)


def test_calibration_round_trips_and_old_files_read_back(synth, tmp_path):
    err = np.array([0.01, -0.02, 0.005, 0.03, -0.01])
    c = calibrate(err, np.full(5, 0.01), np.array([0.5, 1.0, 0.2, 2.0, 1.5]), np.array([0, 0, 1, 1, 1]),
                  {"N": 20.0, "D": 23.0, "N*D": 43.0})
    assert Calibration.from_dict(c.to_dict()) == c and c.n_folds == 2
    r = fit(synth.isoflop(synth.chinchilla(synth.CHIN), seed=2), "chinchilla")
    d = r.to_dict()
    d["schema"] = "scalefit.fit/2"
    for k in ("reasons", "calibration", "selection"):
        d.pop(k)
    old = FitResult.from_dict(d)
    assert old.calibration is None and old.reasons == () and old.values() == r.values()


def test_too_few_runs_to_calibrate_is_said_not_hidden():
    from scalefit.fitting.laws import CHINCHILLA
    from scalefit.fitting.synthetic import draw_runs

    truth = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    few = fit(draw_runs(CHINCHILLA, truth, 6, seed=1), "chinchilla", calibrate=True)
    assert few.calibration is None
    assert any(n.startswith("intervals not calibrated: no leave-future-out cut leaves 6 groups") for n in few.notes)
    enough = fit(draw_runs(CHINCHILLA, truth, 60, seed=1), "chinchilla", calibrate=True)
    assert enough.calibration is not None and not any("not calibrated" in n for n in enough.notes)


def test_the_cli_fit_calibrates_unless_told_not_to(tmp_path, capsys):
    from scalefit import cli

    for flag, calibrated in (([], True), (["--no-calibrate"], False)):
        out = tmp_path / f"fit{len(flag)}.json"
        assert cli.main(["fit", "chinchilla", "--holdout", "0", "--out", str(out), *flag]) == 0
        assert (FitResult.load(out).calibration is not None) is calibrated
    capsys.readouterr()
    from scalefit.fitting.fitter import CALIBRATE_MAX_ROWS

    with pytest.raises(SystemExit):
        cli.main(["fit", "--help"])
    assert f"up to {CALIBRATE_MAX_ROWS:,} rows" in " ".join(capsys.readouterr().out.split())


def test_calibrate_none_calibrates_small_tables_and_says_why_not_for_big_ones(monkeypatch):
    from scalefit.fitting import fitter
    from scalefit.fitting.laws import CHINCHILLA
    from scalefit.fitting.synthetic import draw_runs

    truth = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    monkeypatch.setattr(fitter, "CALIBRATE_MAX_ROWS", 50)
    small = fit(draw_runs(CHINCHILLA, truth, 50, seed=2), "chinchilla", calibrate=None)
    big = fit(draw_runs(CHINCHILLA, truth, 51, seed=2), "chinchilla", calibrate=None)
    assert small.calibration is not None
    assert big.calibration is None and any(n.startswith("intervals not calibrated: 51 rows, above the 50")
                                           for n in big.notes)
    assert fit(draw_runs(CHINCHILLA, truth, 51, seed=2), "chinchilla", calibrate=True).calibration is not None
