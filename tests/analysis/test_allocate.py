"""Inference-aware allocation (Sardana et al. 2023) from a law's loss."""

import math

import pytest

from scalefit.analysis.allocate import inference_aware_optimal, tokens_for_loss
from scalefit.fitting.laws import CHINCHILLA
from scalefit.fitting.optimum import allocate

HOFFMANN = dict(E=math.exp(0.5267228), A=math.exp(6.0073404), B=math.exp(6.0179186),
                alpha=0.33917, beta=0.28491)
EPOCH = dict(E=1.817, A=482.0, B=2085.4, alpha=0.3478, beta=0.3658)


def loss_of(params):
    return lambda N, D: CHINCHILLA.predict(params, N=N, D=D)


def rel(x, y):
    return abs(x / y - 1)


def test_inference_aware_without_inference_is_chinchilla_optimal():
    chin = allocate(CHINCHILLA, HOFFMANN, None, 1e22)
    inf0 = inference_aware_optimal(loss_of(HOFFMANN), chin.loss.value, inference_tokens=0.0)
    assert rel(inf0.N.value, chin.N.value) < 1e-5 and rel(inf0.D.value, chin.D.value) < 1e-5
    assert inf0.C == pytest.approx(1e22, rel=1e-6)
    assert inf0.C_inference == 0.0 and inf0.method == "inference-aware"


def test_inference_aware_shrinks_model_and_grows_data():
    law = loss_of(EPOCH)
    target = allocate(CHINCHILLA, EPOCH, None, 1e22).loss.value
    prev = chin = inference_aware_optimal(law, target, 0.0)
    for d_inf in (1e11, 1e12, 1e13):
        cur = inference_aware_optimal(law, target, d_inf)
        assert cur.N.value < prev.N.value and cur.D.value > prev.D.value
        assert cur.loss.value == pytest.approx(target, abs=1e-9)
        # Training alone costs more than Chinchilla-optimal, but the lifetime total is lower than
        # serving the Chinchilla-optimal model.
        assert cur.C >= prev.C * (1 - 1e-9)
        assert cur.C + cur.C_inference < chin.C + 2 * chin.N.value * d_inf
        prev = cur


def test_inference_aware_rejects_unreachable_loss():
    with pytest.raises(ValueError, match="unreachable"):
        inference_aware_optimal(loss_of(EPOCH), EPOCH["E"] - 0.01, 1e12)


def test_tokens_for_loss_inverts_the_law():
    law = loss_of(EPOCH)
    D = tokens_for_loss(law, 1e9, 2.4)
    assert law(1e9, D) == pytest.approx(2.4, abs=1e-10)
    assert tokens_for_loss(law, 1e9, EPOCH["E"] + EPOCH["A"] / 1e9 ** EPOCH["alpha"]) == math.inf
