"""No false success: degenerate and unidentifiable fits say so, and the CLI exits non-zero for them."""

import numpy as np
import pandas as pd
import pytest

from scalefit import cli
from scalefit.fitting import datasets
from scalefit.fitting.diagnose import diagnose, flat_directions
from scalefit.fitting.fitter import fit
from scalefit.fitting.laws import CHINCHILLA, DATA_CONSTRAINED
from scalefit.fitting.result import FitResult, FitStatus
from scalefit.fitting.table import load_table

EPOCH = dict(E=1.817, A=482.0, B=2085.4, alpha=0.3478, beta=0.3658)


def _one_ratio_rows():
    # Five runs, every one at D = 100 N: the example ("converge" to beta = -2.8, exit 0).
    N = np.geomspace(1e7, 1e9, 5)
    L = CHINCHILLA.predict(EPOCH, N=N, D=100 * N) * np.exp(np.random.default_rng(0).normal(0, 0.005, 5))
    return pd.DataFrame({"N": N, "D": 100 * N, "loss": L})


def test_one_tokens_per_parameter_ratio_is_unidentifiable():
    r = fit(_one_ratio_rows(), "chinchilla")
    assert r.status == FitStatus.UNIDENTIFIABLE and not r.status.ok
    assert any("D/N varies only from 100 to 100" in why for why in r.reasons)
    assert "UNIDENTIFIABLE" in r.report()


def test_cli_exits_non_zero_unless_asked_to_keep(tmp_path, capsys):
    src = tmp_path / "runs.csv"
    _one_ratio_rows().to_csv(src, index=False)
    out = tmp_path / "fit.json"
    assert cli.main(["fit", str(src), "--holdout", "0", "--out", str(out)]) == 3
    assert "unidentifiable" in capsys.readouterr().err and not out.exists()
    assert cli.main(["fit", str(src), "--holdout", "0", "--out", str(out), "--keep-degenerate"]) == 0
    assert FitResult.load(out).status == "unidentifiable"


def test_collapsed_irreducible_loss_is_degenerate():
    # A sum of two power laws with no floor: E has nothing to fit and falls towards 0.
    rng = np.random.default_rng(1)
    N = np.repeat(np.geomspace(1e7, 3e9, 6), 5)
    D = N * np.tile(np.geomspace(5, 200, 5), 6)
    L = (406.4 * N ** -0.34 + 410.7 * D ** -0.28) * np.exp(rng.normal(0, 0.003, N.size))
    r = fit(pd.DataFrame({"N": N, "D": D, "loss": L}), "chinchilla")
    assert r.status == FitStatus.DEGENERATE
    assert any(why.startswith("E = ") and "collapsed to 0" in why for why in r.reasons)


def test_negative_exponent_is_degenerate():
    # Loss that rises with more data: the fit's beta goes negative.
    N = np.repeat(np.geomspace(1e7, 3e9, 6), 5)
    D = N * np.tile(np.geomspace(5, 200, 5), 6)
    L = 1.8 + 406.4 * N ** -0.34 + 0.02 * (D / 1e9) ** 0.1
    r = fit(pd.DataFrame({"N": N, "D": D, "loss": L}), "chinchilla")
    assert r.status == FitStatus.DEGENERATE
    assert any("beta" in why and "negative" in why for why in r.reasons)


def test_a_parameter_that_ran_off_is_degenerate():
    # The free data-constrained fit on the published datablations runs sends R_N* to ~1e130 (fitting it
    # from the whole grid takes a minute; the check itself is on that optimum).
    df = datasets.load("datablations")
    frame = load_table(df[df["in_published_fit"].astype(bool)]).frame
    theta = np.array([3.99, 10.03, 0.605, 0.2124, 0.4663, np.log(25.17), 304.0])  # a, b, e, alpha, beta, r_d, r_n
    logx = np.log(np.stack([frame[c].to_numpy(float) for c in DATA_CONSTRAINED.inputs]))
    degenerate, unidentifiable = diagnose(DATA_CONSTRAINED, frame, theta, DATA_CONSTRAINED.to_params(theta), logx,
                                          frame["weight"].to_numpy(), 0.17)
    assert any(why.startswith("R_N_star = ") and "ran off" in why for why in degenerate), degenerate
    assert not unidentifiable


def test_a_well_posed_fit_has_no_flat_direction():
    table = load_table("chinchilla")
    r = fit(table, "chinchilla")
    assert r.status == "converged" and r.reasons == ()
    f = table.frame
    logx = np.log(np.stack([f["N"].to_numpy(), f["D"].to_numpy()]))
    assert flat_directions(CHINCHILLA, CHINCHILLA.from_params(r.point()[0]), logx, f["weight"].to_numpy(),
                           r.solver.residual_scale) == []


@pytest.mark.parametrize("status", list(FitStatus))
def test_status_values_read_back(status):
    assert FitStatus(status.value) is status
