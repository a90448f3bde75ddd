"""Synthetic sweeps drawn from known laws, shared by the cross-validation and calibration tests
(the `synth` fixture)."""

import types

import numpy as np
import pandas as pd
import pytest

from scalefit.fitting.laws import CHINCHILLA

UNTIED = dict(E=1.7, A=2000.0, B=300.0, alpha=0.45, beta=0.2)  # a = 0.31: far from tied exponents
CHIN = dict(E=1.7, A=400.0, B=800.0, alpha=0.34, beta=0.3)


def isoflop(loss, budgets=np.geomspace(1e17, 1e20, 7), noise=0.005, seed=0, ratios=np.geomspace(5, 300, 6)):
    """An IsoFLOP sweep: at each budget C, sizes N with D/N = `ratios` and D = C / 6N; log-Normal scatter."""
    rng = np.random.default_rng(seed)
    C = np.repeat(budgets, len(ratios))
    N = np.sqrt(C / (6 * np.tile(ratios, len(budgets))))
    D = C / (6 * N)
    return pd.DataFrame({"N": N, "D": D, "C": C, "loss": loss(N, D) * np.exp(noise * rng.standard_normal(N.size))})


def chinchilla(params):
    return lambda N, D: CHINCHILLA.predict(params, N=N, D=D)


def broken(N, D, Nb=3e8):
    """Chinchilla-like, but the N exponent falls from 0.5 to 0.2 at Nb: the form is wrong beyond Nb."""
    term_n = np.where(N < Nb, 3e3 * N ** -0.5, 3e3 * Nb ** -0.5 * (N / Nb) ** -0.2)
    return 1.7 + term_n + 400 * D ** -0.3


@pytest.fixture
def synth():
    """isoflop, chinchilla, broken and the parameter sets, as one namespace."""
    return types.SimpleNamespace(isoflop=isoflop, chinchilla=chinchilla, broken=broken, UNTIED=UNTIED, CHIN=CHIN)
