"""Every figure draws something, on the axes it is given, from real fits."""

import math

import numpy as np
import pandas as pd
import pytest

from scalefit.report import plots
from scalefit.analysis.approach2 import isoflop_optima
from scalefit.fitting.fitter import fit
from scalefit.analysis.allocate import chinchilla_loss, chinchilla_optimal

TRUE = {"E": 1.8, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.31}


@pytest.fixture(scope="module")
def runs():
    rng = np.random.default_rng(0)
    rows = []
    for C in np.geomspace(1e17, 1e20, 7):
        for N in chinchilla_optimal(TRUE, C).N * np.geomspace(1 / 6, 6, 6):
            D = C / (6 * N)
            rows.append((N, D, C, float(chinchilla_loss(TRUE, N, D)) * math.exp(0.004 * rng.standard_normal())))
    df = pd.DataFrame(rows, columns=["N", "D", "C", "loss"])
    df["run"] = [f"r{i}" for i in range(len(df))]
    return df


@pytest.fixture(scope="module")
def result(runs):
    return fit(runs, "chinchilla", bootstrap_resamples=30, seed=0)


def _check(fig, ax, returned, path):
    assert returned is ax
    fig.savefig(path)
    assert path.stat().st_size > 1000
    assert not plots.is_blank(path)


def test_is_blank_detects_an_empty_figure(tmp_path):
    fig, ax = plots.figure()
    ax.set_axis_off()
    fig.savefig(tmp_path / "empty.png")
    assert plots.is_blank(tmp_path / "empty.png")


def test_isoflop_curves(runs, tmp_path):
    fig, ax = plots.figure()
    optima, _ = isoflop_optima(runs)
    _check(fig, ax, plots.isoflop_curves(ax, runs, optima), tmp_path / "iso.png")
    # One line per budget plus the minima markers.
    assert len(ax.lines) >= runs["C"].nunique() + 1


def test_loss_vs_compute_with_held_out(runs, result, tmp_path):
    fig, ax = plots.figure()
    held = runs[runs["C"] == runs["C"].max()]
    out = plots.loss_vs_compute(ax, runs[runs["C"] < runs["C"].max()], result, extrapolate_to=1e23, held_out=held)
    _check(fig, ax, out, tmp_path / "lc.png")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "extrapolation" in labels and "held-out runs" in labels


def test_contours_residuals_allocation(runs, result, tmp_path):
    for name, draw in [("contours", lambda ax: plots.loss_contours(ax, result, runs)),
                       ("residuals", lambda ax: plots.residuals(ax, runs, result)),
                       ("allocation", lambda ax: plots.allocation(ax, result, (1e17, 1e23),
                                                                  optima=isoflop_optima(runs)[0]))]:
        fig, ax = plots.figure()
        _check(fig, ax, draw(ax), tmp_path / f"{name}.png")


def test_plot_errors(runs, result):
    c_fit = fit(runs.groupby("C", as_index=False)["loss"].min().assign(N=1.0, D=1.0), "kaplan_c")
    fig, ax = plots.figure()
    with pytest.raises(ValueError, match="chinchilla"):
        plots.loss_contours(ax, c_fit, C_range=(1e17, 1e20))
    with pytest.raises(ValueError, match="residuals against 'U'"):
        plots.residuals(ax, runs, result, against="U")
