"""Runs drawn from a known law (scalefit.fitting.synthetic): the design and scatter they promise."""

import numpy as np
import pytest

from scalefit.fitting.laws import LAWS
from scalefit.fitting.synthetic import draw_runs

TRUE = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def test_runs_follow_the_design_and_the_scatter_asked_for():
    t = draw_runs(LAWS["chinchilla"], TRUE, 20_000, N=(1e6, 1e9), tokens_per_param=(10, 40), noise=0.02, seed=4)
    ratio = t.D / t.N
    assert t.N.between(1e6, 1e9).all() and ratio.between(10, 40).all()
    z = np.log(t.loss / LAWS["chinchilla"].predict(TRUE, N=t.N.to_numpy(), D=t.D.to_numpy()))
    assert abs(z.mean()) < 4 * 0.02 / np.sqrt(len(t)) and z.std() == pytest.approx(0.02, rel=0.03)
    # log-uniform: the median of log N sits midway between the ends
    assert np.median(np.log(t.N)) == pytest.approx(np.log(np.sqrt(1e6 * 1e9)), abs=0.1)
    assert draw_runs(LAWS["chinchilla"], TRUE, 50, seed=4).equals(draw_runs(LAWS["chinchilla"], TRUE, 50, seed=4))


def test_noise_free_runs_lie_on_the_law():
    t = draw_runs(LAWS["chinchilla"], TRUE, 100, noise=0.0)
    assert np.allclose(t.loss, LAWS["chinchilla"].predict(TRUE, N=t.N.to_numpy(), D=t.D.to_numpy()), rtol=1e-14)


@pytest.mark.parametrize("law, kw, message", [
    ("kaplan_n", {}, r"draws \(N, D\) designs; law kaplan_n takes \['N'\]"),
    ("chinchilla", dict(noise=-1.0), "noise >= 0"),
    ("chinchilla", dict(N=(1e9, 1e7)), "0 < low <= high"),
])
def test_what_it_cannot_draw_is_refused(law, kw, message):
    with pytest.raises(ValueError, match=message):
        draw_runs(LAWS[law], TRUE, 10, **kw)
