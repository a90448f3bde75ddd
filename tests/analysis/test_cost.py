"""A planned model's shape (counted by the trainer's own count) and its accelerator-hours."""

import math

import pytest

from scalefit.analysis.cost import PEAK_BF16_FLOPS, accelerator_hours, model_shape, shape_at
from scalefit.training.counting import param_counts


def test_model_shape_closest_on_ladder_and_counted_like_the_trainer():
    s = model_shape(7e9)
    assert s.d_model % 64 == 0 and s.n_head == s.d_model // 64 and s.n_layer == round(s.d_model / 64)
    assert s.counts == param_counts(s.config) and s.N == s.counts.total
    for d in (s.d_model - 64, s.d_model + 64):  # the neighbouring rungs are no closer in log N
        n = shape_at(d, round(d / 64)).N
        assert abs(math.log(n / 7e9)) >= abs(math.log(s.N / 7e9))
    assert abs(s.N / 7e9 - 1) < 0.05


def test_model_shape_in_another_n_kind():
    s = model_shape(1e9, n_kind="non-embedding")
    assert abs(s.N_non_embedding / 1e9 - 1) < 0.1 and s.N > s.N_non_embedding


def test_model_shape_tiny_target_is_smallest_rung():
    s = model_shape(1e5, vocab_size=256)
    assert (s.d_model, s.n_layer) == (64, 1)


def test_accelerator_hours():
    assert accelerator_hours(989e12 * 3600 * 0.5, "h100", mfu=0.5) == pytest.approx(1.0)
    assert accelerator_hours(1e22, "a100", mfu=0.4) == pytest.approx(1e22 / (312e12 * 0.4 * 3600))
    assert accelerator_hours(1e22, peak_flops=1e15, mfu=1.0) == pytest.approx(1e22 / 3.6e18)
    assert set(PEAK_BF16_FLOPS) >= {"h100", "a100", "h200", "tpu-v5e"}
    with pytest.raises(ValueError, match="unknown hardware"):
        accelerator_hours(1e22, "abacus")
    with pytest.raises(ValueError, match="mfu"):
        accelerator_hours(1e22, mfu=0)


def test_cli_plan_prints_allocation_shape_and_cost(capsys):
    from scalefit.cli import main
    from scalefit.fitting.laws import CHINCHILLA
    from scalefit.fitting.optimum import allocate

    epoch = dict(E=1.817, A=482.0, B=2085.4, alpha=0.3478, beta=0.3658)
    args = ["plan", "--compute", "5.76e23", "--hardware", "a100"]
    for k, v in epoch.items():
        args += ["--param", f"{k}={v}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    a = allocate(CHINCHILLA, epoch, None, 5.76e23)
    assert f"N = {a.N.value:.4g}" in out and f"D = {a.D.value:.4g}" in out
    assert f"{accelerator_hours(5.76e23, 'a100', 0.4):.4g} a100 hours" in out
    assert main(["plan", "--compute", "1e22", "--param", "E=1.8"]) == 2
    assert "law parameters lack" in capsys.readouterr().err


def test_cli_plan_data_constrained(capsys):
    from scalefit.cli import main

    params = dict(E=math.exp(0.6254804), A=math.exp(6.255414), B=math.exp(7.3049974), alpha=0.3526596,
                  beta=0.3526596, R_D_star=15.387756, R_N_star=5.309743)
    args = ["plan", "--compute", "1e22", "--unique-tokens", "25e9"]
    for k, v in params.items():
        args += ["--param", f"{k}={v}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "data_constrained" in out and "U = 2.5e+10" in out and "N = 7.0" in out
