"""The compute model C = D F(N): detected, fitted, extrapolated and carried through a fit."""

import json

import numpy as np
import pandas as pd
import pytest

from scalefit.fitting.compute import SIX_ND, ComputeModel, fit_compute_model
from scalefit.training.config import get_preset
from scalefit.training.counting import flops_per_token, param_counts
from scalefit.fitting.fitter import fit
from scalefit.analysis.forecast import forecast
from scalefit.fitting.laws import CHINCHILLA
from scalefit.fitting.optimum import allocate
from scalefit.fitting.table import load_table
from scalefit.fitting.result import FitResult

QUICKSTART_LADDER = ["d16-l1", "d24-l1", "d32-l1", "d32-l2", "d48-l2", "d64-l2", "d64-l4", "d96-l3"]
LARGER = ["d128-l4", "d192-l4", "d256-l4", "d384-l6", "d512-l6"]
TRUE = dict(E=1.7, A=60.0, B=900.0, alpha=0.34, beta=0.31)


def exact_counts(names, seq_len=128):
    """Non-embedding N and exact training FLOPs per token of presets, from scalefit.training.counting."""
    cfgs = [get_preset(n).with_overrides(seq_len=seq_len) for n in names]
    N = np.array([param_counts(c).non_embedding for c in cfgs], float)
    return N, np.array([flops_per_token(c).exact for c in cfgs], float)


def test_six_nd_is_recognised_exactly():
    N, D = np.array([1e8, 4e8, 1e9]), np.array([2e9, 8e9, 2e10])
    assert fit_compute_model(N, D, 6 * N * D) is SIX_ND
    assert not fit_compute_model(N, D, 6 * N * D * (1 + 1e-3)).is_6nd


@pytest.mark.parametrize("true", [ComputeModel(m=300.0, p=0.6), ComputeModel(k=40.0, gamma=0.85)])
def test_known_forms_are_recovered_without_noise(true):
    N = np.geomspace(1e4, 1e7, 9)
    D = np.geomspace(1e9, 1e7, 9)
    got = fit_compute_model(N, D, true.flops(N, D))
    assert got.basis == ("6N + m N^p" if true.m else "k N^gamma")
    for key in ("k", "gamma", "m", "p"):
        assert getattr(got, key) == pytest.approx(getattr(true, key), rel=1e-9, abs=1e-12)
    assert got.rms_log < 1e-12 and got.n_range == (1e4, 1e7) and got.n_rows == 9


def test_one_size_gets_a_constant_per_parameter():
    N = np.full(4, 5e6)
    got = fit_compute_model(N, np.geomspace(1e8, 1e9, 4), 7.5 * N * np.geomspace(1e8, 1e9, 4))
    assert got.gamma == 1 and got.m == 0 and got.k == pytest.approx(7.5)


def test_exact_counts_of_the_quickstart_ladder_extrapolate_to_larger_presets():
    # F(N) fitted on the 8 quickstart sizes (N 3e3-3e5) predicts the exact count of presets up to
    # 57x larger within 1%: the excess over 6N (output layer, attention) grows as a power of N.
    N, F = exact_counts(QUICKSTART_LADDER)
    model = fit_compute_model(N, np.ones_like(N), F)
    assert model.basis == "6N + m N^p" and model.rms_log < 0.02
    Nb, Fb = exact_counts(LARGER)
    assert np.max(np.abs(model.per_token(Nb) / Fb - 1)) < 0.01
    # The single power law fits the ladder worse and misses the larger presets by far more.
    gamma, logk = np.polyfit(np.log(N), np.log(F), 1)
    assert np.max(np.abs(np.exp(logk) * Nb**gamma / Fb - 1)) > 0.1


def test_inverse_and_json_round_trip():
    model = ComputeModel(m=512.0, p=0.55, basis="6N + m N^p", n_rows=3, rms_log=0.01, n_range=(1e3, 1e5))
    assert model.params_for(float(model.flops(3e4, 1e6)), 1e6) == pytest.approx(3e4, rel=1e-10)
    assert ComputeModel.from_dict(json.loads(json.dumps(model.to_dict()))) == model
    with pytest.raises(ValueError, match="finite, positive"):
        fit_compute_model([1.0, np.nan], [1.0, 1.0], [6.0, 6.0])


def _runs_with_exact_flops():
    """Runs from a known Chinchilla law in non-embedding N, whose C is the presets' exact count."""
    N, F = exact_counts(QUICKSTART_LADDER)
    rows = []
    for n, f in zip(N, F):
        for D in n * np.geomspace(20, 400, 5):
            rows.append(dict(N=n, D=D, C=f * D, loss=float(CHINCHILLA.predict(TRUE, N=n, D=D))))
    return pd.DataFrame(rows)


def test_fit_allocates_in_the_runs_convention():
    runs = _runs_with_exact_flops()
    res = fit(load_table(runs, c_kind="exact", n_kind="non-embedding"), "chinchilla", bootstrap_resamples=20)
    cm = res.compute
    assert cm.basis == "6N + m N^p" and "compute: C = D (6 N +" in res.report()
    C = 10 * runs["C"].max()
    a = res.allocate(C)
    # The budget is spent exactly under the runs' count, and the split is the law's true optimum there.
    assert a.D.value * cm.per_token(a.N.value) == pytest.approx(C, rel=1e-10)
    ref = allocate(CHINCHILLA, TRUE, None, C, cm)
    assert a.N.value == pytest.approx(ref.N.value, rel=1e-4) and a.loss.value == pytest.approx(ref.loss.value, rel=1e-6)
    # Under 6ND the same budget would seem to buy 40% more tokens and a 3% lower loss: these runs'
    # C is 1.4-2.8x 6ND.
    six = allocate(CHINCHILLA, TRUE, None, C)
    assert six.D.value / ref.D.value - 1 > 0.3 and 1 - six.loss.value / ref.loss.value > 0.02
    assert a.N.ci[0] <= a.N.value <= a.N.ci[1]
    # A forecast there says where the compute model is extrapolated, and splits a budget with one of
    # N, D by the same count.
    f = forecast(res, C=C)
    assert f.at["N"] == a.N.value and "C = D (6 N +" in str(f)
    far = forecast(res, C=1000 * C)
    assert any("beyond the largest N the compute model" in n for n in far.notes), far
    assert not forecast(res, C=float(runs["C"].median())).notes
    g = forecast(res, C=C, N=1e5)
    assert g.at["D"] * cm.per_token(1e5) == pytest.approx(C, rel=1e-12)
    assert forecast(res, C=C, D=g.at["D"]).at["N"] == pytest.approx(1e5, rel=1e-9)
    # The compute model survives the JSON round trip, and so does the allocation.
    back = FitResult.from_dict(json.loads(res.to_json()))
    assert back.compute == cm and back.allocate(C).N.value == pytest.approx(a.N.value, rel=1e-12)


def test_exponents_in_the_runs_convention():
    runs = _runs_with_exact_flops()
    res = fit(load_table(runs, c_kind="exact", n_kind="non-embedding"), "chinchilla")
    C = (runs["C"].min(), runs["C"].max())
    e = res.exponents(C)
    Cs = np.geomspace(*C, 9)
    logN = np.log([allocate(CHINCHILLA, TRUE, None, c, res.compute).N.value for c in Cs])
    slope = np.polyfit(np.log(Cs), logN, 1)[0]
    assert e["a"].value == pytest.approx(slope, abs=1e-4)
    assert e["a"].value > res.derived["a"].value + 0.02  # the overhead shrinks with N: larger a
    # Under 6ND they are the law's own constants.
    six = fit(runs.assign(C=6 * runs["N"] * runs["D"]), "chinchilla")
    assert six.compute.is_6nd
    e6 = six.exponents(C)
    assert e6["a"].value == pytest.approx(six.derived["a"].value, rel=1e-9)
    assert e6["b"].value == pytest.approx(six.derived["b"].value, rel=1e-9)
