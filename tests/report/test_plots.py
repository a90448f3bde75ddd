"""Every figure draws something, on the axes it is given, from real fits."""

import math

import numpy as np
import pandas as pd
import pytest

from scalefit.analysis.approach2 import isoflop_optima
from scalefit.fitting.fitter import fit
from scalefit.fitting.laws import CHINCHILLA
from scalefit.fitting.optimum import allocate
from scalefit.fitting.table import load_table
from scalefit.report import plots

TRUE = {"E": 1.8, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.31}


@pytest.fixture(scope="module")
def runs():
    rng = np.random.default_rng(0)
    rows = []
    for C in np.geomspace(1e17, 1e20, 7):
        for N in allocate(CHINCHILLA, TRUE, None, C).N.value * np.geomspace(1 / 6, 6, 6):
            D = C / (6 * N)
            rows.append((N, D, C, float(CHINCHILLA.predict(TRUE, N=N, D=D)) * math.exp(0.004 * rng.standard_normal())))
    df = pd.DataFrame(rows, columns=["N", "D", "C", "loss"])
    df["run"] = [f"r{i}" for i in range(len(df))]
    return load_table(df)


@pytest.fixture(scope="module")
def result(runs):
    return fit(runs, "chinchilla", bootstrap_resamples=30, seed=0)


@pytest.fixture
def check(is_blank):
    def check(fig, ax, returned, path):
        assert returned is ax
        fig.savefig(path)
        assert path.stat().st_size > 1000
        assert not is_blank(path)

    return check


def test_is_blank_detects_an_empty_figure(tmp_path, is_blank):
    fig, ax = plots.figure()
    ax.set_axis_off()
    fig.savefig(tmp_path / "empty.png")
    assert is_blank(tmp_path / "empty.png")


def test_isoflop_curves(runs, tmp_path, check):
    fig, ax = plots.figure()
    optima, _ = isoflop_optima(runs)
    check(fig, ax, plots.isoflop_curves(runs, optima, ax=ax), tmp_path / "iso.png")
    # One line per budget plus the minima markers.
    assert len(ax.lines) >= runs.frame["C"].nunique() + 1


def test_every_plot_makes_its_own_axes_when_given_none(runs, result):
    for ax in (plots.isoflop_curves(runs), plots.residuals(result, runs), plots.allocation(result, runs)):
        assert ax.figure is not None and ax.has_data()


def test_loss_vs_compute_with_held_out(runs, result, tmp_path, check):
    fig, ax = plots.figure()
    df = runs.frame
    held = df[df["C"] == df["C"].max()]
    out = plots.loss_vs_compute(result, df[df["C"] < df["C"].max()], ax=ax, extrapolate_to=1e23, held_out=held)
    check(fig, ax, out, tmp_path / "lc.png")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "extrapolation" in labels and "held-out runs" in labels


def test_contours_residuals_allocation(runs, result, tmp_path, check):
    for name, draw in [("contours", lambda ax: plots.loss_contours(result, runs, ax=ax)),
                       ("residuals", lambda ax: plots.residuals(result, runs, ax=ax)),
                       ("allocation", lambda ax: plots.allocation(result, ax=ax, C_range=(1e17, 1e23),
                                                                  optima=isoflop_optima(runs)[0]))]:
        fig, ax = plots.figure()
        check(fig, ax, draw(ax), tmp_path / f"{name}.png")


def test_plot_errors(runs, result):
    best = runs.frame.groupby("C", as_index=False)["loss"].min().assign(N=1.0, D=1.0)
    c_fit = fit(load_table(best), "kaplan_c")
    fig, ax = plots.figure()
    with pytest.raises(ValueError, match="a law in N and D"):
        plots.loss_contours(c_fit, ax=ax, C_range=(1e17, 1e20))
    with pytest.raises(ValueError, match="residuals against 'U'"):
        plots.residuals(result, runs, ax=ax, against="U")
