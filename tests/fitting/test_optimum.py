"""Compute-optimal allocation of a law: published numbers reproduced, closed form against a search."""

import dataclasses
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from scalefit.fitting.compute import SIX_ND, ComputeModel
from scalefit.fitting.laws import CHINCHILLA
from scalefit.fitting.optimum import allocate, allocate_many, optimal_split

# Hoffmann et al. 2022, unrounded (as used by Besiroglu et al. 2024); rounding moves D/N by > 50%.
HOFFMANN = dict(E=math.exp(0.5267228), A=math.exp(6.0073404), B=math.exp(6.0179186),
                alpha=0.33917, beta=0.28491)
# Besiroglu et al. 2024 (Epoch AI) re-estimate from the same Figure 4 points.
EPOCH = dict(E=1.817, A=482.0, B=2085.4, alpha=0.3478, beta=0.3658)
NUMERIC = dataclasses.replace(CHINCHILLA, name="chinchilla-numeric", optimum=None)


def rel(x, y):
    return abs(x / y - 1)


def search(params, C, compute=SIX_ND):
    """Reference optimum: bounded Brent search of L(N, C / F(N)) over log N, refit by refit."""
    f = lambda x: float(CHINCHILLA.predict(params, N=math.exp(x), D=compute.tokens(C, math.exp(x))))  # noqa: E731
    mid = 0.5 * math.log(C / 6)
    return math.exp(minimize_scalar(f, bounds=(mid - 12, mid + 12), method="bounded",
                                    options={"xatol": 1e-11}).x)


@pytest.mark.parametrize("params,N,D", [(HOFFMANN, 4.04e10, 2.38e12), (EPOCH, 7.24e10, 1.33e12)])
def test_closed_form_reproduces_published_allocation(params, N, D):
    a = allocate(CHINCHILLA, params, None, 5.76e23)
    assert a.method == "closed-form" and a.N.se is None
    assert rel(a.N.value, N) < 0.01 and rel(a.D.value, D) < 0.01
    assert a.C == pytest.approx(6 * a.N.value * a.D.value, rel=1e-12)
    assert a.tokens_per_param.value == pytest.approx(a.D.value / a.N.value)
    assert a.loss.value == pytest.approx(CHINCHILLA.predict(params, N=a.N.value, D=a.D.value))


def test_rounded_hoffmann_constants_move_tokens_per_param_a_lot():
    rounded = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    r = allocate(CHINCHILLA, rounded, None, 5.76e23).tokens_per_param.value
    u = allocate(CHINCHILLA, HOFFMANN, None, 5.76e23).tokens_per_param.value
    assert abs(r / u - 1) > 0.5


def test_exponents_sum_to_one_and_scale_allocation():
    d = CHINCHILLA.derived(np.array([HOFFMANN[k] for k in CHINCHILLA.param_names]))
    assert d["a"] + d["b"] == pytest.approx(1.0)
    assert d["a"] == pytest.approx(0.28491 / (0.33917 + 0.28491))
    lo, hi = allocate_many(CHINCHILLA, HOFFMANN, None, [1e20, 1e24])
    assert math.log(hi.N.value / lo.N.value) / math.log(1e4) == pytest.approx(d["a"], rel=1e-12)
    assert math.log(hi.D.value / lo.D.value) / math.log(1e4) == pytest.approx(d["b"], rel=1e-12)


@pytest.mark.parametrize("compute", [SIX_ND, ComputeModel(k=8.0), ComputeModel(k=20.0, gamma=0.9),
                                     ComputeModel(m=500.0, p=0.55)])
@pytest.mark.parametrize("C", [1e18, 5.76e23, 1e27])
def test_closed_form_and_numeric_search_agree_with_a_reference_search(compute, C):
    # C = 8 N D changes C/k; C = 20 N^0.9 D moves the exponent; a two-term count has no closed form.
    closed = allocate(CHINCHILLA, EPOCH, None, C, compute)
    num = allocate(NUMERIC, EPOCH, None, C, compute)
    ref = search(EPOCH, C, compute)
    assert num.method == "numeric" and closed.method == ("numeric" if compute.m else "closed-form")
    assert rel(closed.N.value, ref) < 1e-6 and rel(num.N.value, ref) < 1e-6
    assert closed.D.value * compute.per_token(closed.N.value) == pytest.approx(C, rel=1e-12)


def test_closed_form_under_a_power_count_has_its_own_exponent():
    # Under C = k N^gamma D, N_opt ~ C^(beta / (alpha + gamma beta)) (derived in chinchilla.split).
    compute = ComputeModel(k=20.0, gamma=0.9)
    lo, hi = allocate_many(CHINCHILLA, EPOCH, None, [1e20, 1e24], compute)
    a = math.log(hi.N.value / lo.N.value) / math.log(1e4)
    assert a == pytest.approx(EPOCH["beta"] / (EPOCH["alpha"] + 0.9 * EPOCH["beta"]), rel=1e-10)


def test_split_solves_every_refit_and_budget_at_once():
    P = np.array([[EPOCH[k] for k in CHINCHILLA.param_names], [HOFFMANN[k] for k in CHINCHILLA.param_names]])
    C = np.array([1e19, 5.76e23])
    for compute in (SIX_ND, ComputeModel(m=500.0, p=0.55)):
        N, D = optimal_split(NUMERIC, P, C, compute)  # [2, 2]
        for b, params in enumerate((EPOCH, HOFFMANN)):
            for j, c in enumerate(C):
                assert rel(N[b, j], search(params, c, compute)) < 1e-6
                assert D[b, j] * compute.per_token(N[b, j]) == pytest.approx(c, rel=1e-12)


def test_bootstrap_refits_give_allocation_intervals():
    rng = np.random.default_rng(0)
    base = np.array([EPOCH[k] for k in CHINCHILLA.param_names])
    samples = base * np.exp(rng.normal(0, 0.02, (200, 5)))
    a = allocate(CHINCHILLA, base, samples, 1e22, level=0.9)
    for e in (a.N, a.D, a.loss, a.tokens_per_param):
        assert e.se > 0 and e.ci[0] < e.ci[1]
    assert a.N.ci[0] < a.N.value < a.N.ci[1]


def test_bad_parameters_and_budgets_are_named():
    with pytest.raises(ValueError, match="beta"):
        allocate(CHINCHILLA, {"E": 1.0, "A": 1.0, "B": 1.0, "alpha": 0.3}, None, 1e20)
    with pytest.raises(ValueError, match="alpha"):
        allocate(CHINCHILLA, dict(EPOCH, alpha=-0.3), None, 1e20)
    with pytest.raises(ValueError, match="C must be"):
        allocate(CHINCHILLA, EPOCH, None, -1.0)
