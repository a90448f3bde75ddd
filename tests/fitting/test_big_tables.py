"""Big tables: the starts are screened on a subsample and refined on every row (memory O(rows), not
O(rows x starts)), and the gradient tolerance is per unit of row weight, so a fit of 1e5 rows converges
to the law the rows were drawn from (the audit's F18, F19)."""

from __future__ import annotations

import numpy as np
import pytest

from scalefit.fitting.laws import CHINCHILLA
from scalefit.fitting.solver import GTOL_WEIGHT, SCREEN_ROWS, gtol_for, screening_rows
from scalefit.fitting.synthetic import draw_runs

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _rows(n, seed=0):
    return draw_runs(CHINCHILLA, TRUE, n, seed=seed)


def test_gradient_tolerance_is_per_unit_of_row_weight():
    assert gtol_for(1e-9, np.ones(100)) == pytest.approx(1e-9)  # small tables stop exactly where they did
    assert gtol_for(1e-9, np.ones(int(GTOL_WEIGHT) * 40)) == pytest.approx(4e-8)
    per_start = gtol_for(1e-9, np.stack([np.ones(10), np.full(10, GTOL_WEIGHT)]))  # [S, n] -> [S]
    assert per_start.shape == (2,) and per_start[1] == pytest.approx(1e-9 * 10)


def test_screening_rows_span_the_table_and_skip_weightless_rows():
    rng = np.random.default_rng(0)
    logx = np.log(np.stack([np.exp(rng.uniform(0, 20, 5000)), np.ones(5000)]))
    w = np.ones(5000)
    w[::7] = 0
    rows = screening_rows(logx, w)
    assert len(rows) == SCREEN_ROWS == len(np.unique(rows)) and np.all(w[rows] > 0)
    live = np.flatnonzero(w > 0)
    assert logx[0, rows].min() == logx[0, live].min() and logx[0, rows].max() == logx[0, live].max()
    assert screening_rows(logx[:, :SCREEN_ROWS], w[:SCREEN_ROWS]) is None  # small enough: every row


@pytest.mark.slow
def test_a_fit_of_1e5_rows_converges_to_the_law_they_were_drawn_from():
    import scalefit as sf

    r = sf.fit(sf.load_table(_rows(100_000)))
    assert r.status == "converged" and r.n_points == 100_000
    assert r.solver.grad_norm < r.solver.gtol == pytest.approx(1e-9 * 100_000 / GTOL_WEIGHT)
    for k, v in TRUE.items():
        assert r.values()[k] == pytest.approx(v, rel=0.02), k
