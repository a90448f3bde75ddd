"""The loss-vs-compute frontier of Kaplan et al. 2020 (eq. 1.4, Fig. 1): L_min(C) = (C_c / C)^alpha_C,
optionally + E (Henighan et al. 2020), fitted to the runs no cheaper run beats."""

from __future__ import annotations

import numpy as np

from scalefit.fitting.fitter import fit
from scalefit.fitting.laws import kaplan
from scalefit.fitting.result import FitResult
from scalefit.fitting.table import FitTable


def pareto_frontier(C, loss) -> np.ndarray:
    """Indices of the runs on the loss-vs-compute frontier: lower loss than every run of smaller C.

    With one final point per run this is the compute-efficient frontier Kaplan et al. 2020 (Fig. 1)
    fit L(C) to; ties in C keep the lowest loss.
    """
    C, L = np.asarray(C, dtype=float), np.asarray(loss, dtype=float)
    order = np.lexsort((L, C))
    keep, best = [], np.inf
    for i in order:
        if L[i] < best:
            keep.append(i)
            best = L[i]
    return np.array(keep, dtype=int)


def fit_frontier(table: FitTable, irreducible: bool = False, **fit_options) -> FitResult:
    """Kaplan's L(C) (+ E if `irreducible`) fitted, by the same fitter as every law, to the table's
    Pareto-frontier runs (`pareto_frontier`); `fit_options` go to `scalefit.fitting.fitter.fit`."""
    frame = table.frame
    on = np.zeros(len(frame), bool)
    on[pareto_frontier(frame["C"], frame["loss"])] = True
    front = table.subset(on, f"loss-vs-compute frontier: {int(on.sum())} of {len(frame)} rows lower than "
                             "every row of less compute")
    return fit(front, kaplan("C", irreducible), **fit_options)
