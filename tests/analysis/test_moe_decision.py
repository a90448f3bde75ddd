"""Dense against MoE under a budget and a memory limit, on data and parameters of a known joint law."""

import numpy as np
import pandas as pd
import pytest

from scalefit.analysis.cost import shape_at
from scalefit.analysis.moe import decide_moe
from scalefit.fitting.compute import SIX_ND
from scalefit.fitting.fitter import fit
from scalefit.fitting.laws import JOINT
from scalefit.fitting.optimum import optimal_split
from scalefit.fitting.table import load_table

# A known law (tests/fitting/test_fit.py's truth for joint_moe): Hoffmann et al. 2022's dense constants,
# experts that lower the N term (delta < 0) less so at large N (gamma > 0) and want a little more data.
TRUTH = {"a": 406.4, "alpha": -0.34, "delta": -0.25, "gamma": 0.01, "b": 410.7, "beta": -0.28, "omega": 0.05,
         "zeta": -0.002, "c": 1.69, "E_start": 1.2, "E_max": 300.0}
C = 1e22


def loss_at(N, D, E, p=TRUTH):
    return float(JOINT.predict(p, N=N, D=D, E=float(E)))


def test_each_candidate_is_the_compute_optimum_of_its_expert_count():
    d = decide_moe("joint_moe", C, params=TRUTH, experts=(1, 4, 16, 64))
    assert [c.E for c in d.candidates] == [1, 4, 16, 64] and d.dense.E == 1
    for c in d.candidates:
        N, D = (x[0, 0] for x in optimal_split(JOINT, [list(TRUTH.values())], [C], SIX_ND, {"E": float(c.E)}))
        assert c.N.value == pytest.approx(N, rel=1e-9) and c.D.value == pytest.approx(C / (6 * N), rel=1e-9)
        assert c.loss.value == pytest.approx(loss_at(N, D, c.E), rel=1e-12)
        for f in (0.95, 1.05):  # the budget spent on any other size does worse
            assert loss_at(f * N, C / (6 * f * N), c.E) > c.loss.value
        assert c.shape.counts.total == c.N_total and c.shape.config.n_expert == c.E
        assert abs(np.log(c.shape.counts.active / c.N.value)) < 0.1
    # Under this law the experts are worth it: the best MoE beats the dense model by the margin printed.
    assert d.moe.E > 1 and d.margin.value == pytest.approx(d.dense.loss.value - d.moe.loss.value)
    assert d.margin.value > 0 and d.best is d.moe and "the MoE is better" in str(d)


def test_memory_limit_caps_every_candidate():
    free = decide_moe("joint_moe", C, params=TRUTH, experts=(1, 4, 16, 64))
    cap = 2.0 * free.dense.N_total  # the dense optimum fits; the large-E optima do not
    d = decide_moe("joint_moe", C, params=TRUTH, experts=(1, 4, 16, 64), max_params=cap)
    assert all(c.N_total <= cap for c in d.candidates)
    assert not d.dense.limited and d.dense.N.value == pytest.approx(free.dense.N.value)
    limited = [c for c in d.candidates if c.limited]
    assert limited and all(c.E > 1 for c in limited)
    for c in limited:
        # The largest shape of the ladder that fits: the next rung up does not.
        s = c.shape.config
        up = shape_at(s.d_model + 64, round((s.d_model + 64) / 64), n_expert=c.E, top_k=c.top_k)
        assert up.counts.total > cap and c.N.value < next(x for x in free.candidates if x.E == c.E).N.value
        assert c.D.value == pytest.approx(C / (6 * c.N.value))
    # The same limit in bytes: 2 bytes a parameter in BF16.
    b = decide_moe("joint_moe", C, params=TRUTH, experts=(1, 4, 16, 64), max_bytes=2 * cap, precision="bf16")
    assert [c.N_total for c in b.candidates] == [c.N_total for c in d.candidates]
    assert "GB of bf16 weights" in b.limit and "(memory-limited)" in str(b)


def test_experts_that_do_not_help_leave_no_margin():
    flat = {**TRUTH, "delta": 0.0, "gamma": 0.0, "omega": 0.0, "zeta": 0.0}
    d = decide_moe("joint_moe", C, params=flat, experts=(1, 8, 64))
    assert d.margin.value == pytest.approx(0.0, abs=1e-12)
    assert len({round(c.N.value) for c in d.candidates}) == 1  # the same model whatever E


def test_decisions_need_a_law_in_n_d_and_e():
    with pytest.raises(ValueError, match="needs a law in N, D and E"):
        decide_moe("chinchilla", C, params=dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28))
    with pytest.raises(ValueError, match="at the runs' own training length"):
        decide_moe("clark_routing", C, params=dict(a=-0.08, b=-0.1, c=0.01, d=1.1, E_start=2.0, E_max=300.0))
    with pytest.raises(ValueError, match="one memory limit"):
        decide_moe("joint_moe", C, params=TRUTH, max_params=1e10, max_bytes=1e10)
    with pytest.raises(ValueError, match="give the parameters"):
        decide_moe("joint_moe", C)


@pytest.mark.slow
def test_decision_from_a_fit_carries_intervals():
    """Noisy runs drawn from the known law at several N, D and E: the fit's bootstrap refits give the
    candidates' losses and the margin their intervals, and the one-run intervals come from predict."""
    rng = np.random.default_rng(0)
    N, D, E = (x.ravel() for x in np.meshgrid(np.geomspace(1e7, 1e9, 5), np.geomspace(2e8, 2e10, 4),
                                             [1.0, 4.0, 16.0, 64.0]))
    loss = JOINT.predict(TRUTH, N=N, D=D, E=E) * np.exp(0.003 * rng.standard_normal(len(N)))
    table = load_table(pd.DataFrame({"N": N, "D": D, "E": E, "loss": loss}), n_kind="active")
    # E <= 64 cannot show a saturation at E_max = 300: fitted free, E_max runs off (a degenerate fit),
    # so it is held at its value here.
    assert fit(table, "joint_moe").status == "degenerate"
    res = fit(table, "joint_moe[E_max=300]", bootstrap_resamples=30, seed=1)
    assert res.status == "converged"
    d = decide_moe(res, 1e20, experts=(1, 4, 16))
    print(f"\n{d}")
    for c in d.candidates:
        assert c.loss.ci is not None and c.loss.ci[0] <= c.loss.value <= c.loss.ci[1]
        assert c.interval[0] < c.loss.value < c.interval[1]
    true = decide_moe("joint_moe", 1e20, params=TRUTH, experts=(1, 4, 16))
    assert d.margin.ci is not None and d.margin.value > 0 and true.margin.value > 0
    assert abs(d.moe.loss.value / true.moe.loss.value - 1) < 0.01


def test_cli_plan_moe(capsys):
    from scalefit.cli import main

    args = ["plan", "--law", "joint_moe", "--compute", "1e22", "--moe", "--experts", "1,4,16",
            "--max-memory-gb", "80"]
    for k, v in TRUTH.items():
        args += ["--param", f"{k}={v}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    d = decide_moe("joint_moe", 1e22, params=TRUTH, experts=(1, 4, 16), max_bytes=80e9)
    assert "margin dense - MoE" in out and f"choose {d.best.name}" in out and "KV cache at 2,048" in out
    assert f"{d.moe.loss.value:.4f}" in out
