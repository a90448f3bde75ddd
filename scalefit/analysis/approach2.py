"""Compute-optimal exponents straight from runs: Chinchilla Approach 2 (IsoFLOP minima).

Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models", Sec. 3.2) train several
model sizes at each fixed FLOP budget C, locate the loss-minimising size N_opt(C) on each IsoFLOP
curve, and fit N_opt ~ C^a, D_opt ~ C^b. Two ways to find the minimum are offered:

* ``"parabola"`` (Hoffmann et al., the default, as most peers use): least-squares parabola of loss in
  log N, its vertex.
* ``"akima"`` (Porian et al. 2024, "Resolving Discrepancies in Compute-Optimal Scaling of Language
  Models", code formll/resolving-scaling-law-discrepancies): Akima interpolation of log loss in
  log N, minimised on a fine grid between the smallest and largest sampled sizes. No functional
  form is imposed, so an asymmetric IsoFLOP curve does not drag the minimum.

Choices that mirror Porian et al.'s released analysis (analysis.py, `interp_flop`,
`power_law_fit`) and reproduce their 15 published exponents to within 0.004:

* one point per (C, N): the lowest loss when several runs share a size (their groupby-min);
* interpolate ln loss against ln N (not against tokens per parameter), Akima's original scheme;
* evaluate it on (k - 1) * 25 points evenly spaced in ln N between the smallest and largest of the
  k sampled sizes, take the grid argmin, and drop the budget when that is an end point;
* fit ln N_opt on ln C by unweighted least squares over every remaining budget (their "basic" fit).

They report each budget's n* as the median over 1,000 noise-perturbed copies of the curve; we use
the minimum of the curve itself, which agrees with their n* to within their own bootstrap spread.

D_opt is the minimum of the same curve read in log D, found by the same method: the minimum's own D,
not D interpolated between sampled runs at N_opt. Under C = 6ND the two readings are mirror images
(log D = log C/6 - log N), so b = 1 - a exactly; under another count of C they differ, and b follows
the runs' own D. Each result also carries the other method's (`alternative`), and `disagreement` says
when their exponents differ beyond their intervals: neither minimum is then to be trusted blindly.

Approach 1 (training-curve envelope) lives in scalefit.analysis.approach1. Input is a validated
`FitTable` (its N, D, C, loss in whatever convention the table states; this module only takes logs of
them): one budget per distinct C.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator
from scipy.stats import norm

from scalefit.analysis.powerlaw import AllocationExponents, PowerLaw, fit_power_law
from scalefit.fitting.table import FitTable

METHODS = ("parabola", "akima")


# ---------------------------------------------------------------------------------------------
# One IsoFLOP curve -> its minimum


def akima_minimum(logN: np.ndarray, logL: np.ndarray, grid_per_interval: int = 25):
    """Minimum of the Akima interpolant of log loss over log N; returns (x_min, y_min, edge).

    The grid has (k - 1) * grid_per_interval points evenly spaced in log N between the smallest
    and largest of the k sampled sizes (Porian et al. use the same density). `edge` is "low" or
    "high" when the grid minimum is an end point (the true minimum may lie outside the sampled
    sizes), else "".
    """
    m = (len(logN) - 1) * grid_per_interval
    grid = np.linspace(logN[0], logN[-1], m)
    vals = Akima1DInterpolator(logN, logL)(grid)
    i = int(np.argmin(vals))
    edge = "low" if i == 0 else "high" if i == m - 1 else ""
    return float(grid[i]), float(vals[i]), edge


def parabola_minimum(logN: np.ndarray, loss: np.ndarray):
    """Vertex of the least-squares parabola loss = p0 (log N)^2 + p1 log N + p2 (Hoffmann et al. 2022).

    Returns (x_vertex, loss_at_vertex, problem): problem is "concave" when p0 <= 0 (no minimum),
    "low"/"high" when the vertex lies outside the sampled sizes, else "".
    """
    # Centre log N so the 3x3 normal equations stay well conditioned.
    x0 = logN.mean()
    p = np.polyfit(logN - x0, loss, 2)
    if p[0] <= 0:
        return float("nan"), float("nan"), "concave"
    xv = -p[1] / (2 * p[0])
    y = float(np.polyval(p, xv))
    xv += x0
    edge = "low" if xv < logN[0] else "high" if xv > logN[-1] else ""
    return float(xv), y, edge


def _minimum(method: str, logx: np.ndarray, loss: np.ndarray, grid_per_interval: int):
    """(x_min, loss there, edge) of one IsoFLOP curve sampled at increasing log x, by `method`."""
    if method == "akima":
        x, ylog, edge = akima_minimum(logx, np.log(loss), grid_per_interval)
        return x, float(np.exp(ylog)), edge
    return parabola_minimum(logx, loss)


_EDGE_REASON = {
    "low": "minimum at/below the smallest sampled N",
    "high": "minimum at/above the largest sampled N",
    "concave": "parabola opens downward (no minimum)",
    "repeat": "two sizes share one D: no curve in D to read D_opt from",
}


def isoflop_optima(table: FitTable | pd.DataFrame, method: str = "parabola",
                   grid_per_interval: int = 25) -> tuple[pd.DataFrame, dict]:
    """Per FLOP budget C: the loss-minimising N_opt, D_opt and loss, plus a flag and its reason.

    `table`: a `FitTable`, or the frame of one (its columns N, D, C, loss, already validated). Rows with
    the same (C, N) are collapsed to the lowest loss (the best of several learning rates or seeds, as
    Porian et al. do). D_opt is the minimum of the curve read in log D by the same method (its own
    fit, module docstring). Budgets with fewer than 3 sizes, or whose minimum is at or beyond an end of
    the sampled sizes (or tokens), are flagged. Returns (optima,
    excluded_rows) where excluded_rows counts left-out input rows by reason (the table's own exclusions
    included).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if grid_per_interval < 2:
        raise ValueError(f"grid_per_interval must be >= 2, got {grid_per_interval}")
    df = table.frame if isinstance(table, FitTable) else table
    excluded = dict(Counter(why for _, why in table.excluded)) if isinstance(table, FitTable) else {}
    rows = []
    for C, g in df.groupby("C", sort=True):
        best = g.sort_values("loss", kind="stable").drop_duplicates("N").sort_values("N")
        if len(best) < len(g):
            key = "duplicate (C, N): kept the lowest loss"
            excluded[key] = excluded.get(key, 0) + len(g) - len(best)
        logN = np.log(best["N"].to_numpy(float))
        loss = best["loss"].to_numpy(float)
        row = dict(C=float(C), n_points=len(best), N_min=float(best["N"].iloc[0]),
                   N_max=float(best["N"].iloc[-1]), N_opt=np.nan, D_opt=np.nan, loss_opt=np.nan,
                   flagged=False, reason="")
        if len(best) < 3:
            row.update(flagged=True, reason=f"only {len(best)} sizes (need >= 3)")
            rows.append(row)
            continue
        x, y, edge = _minimum(method, logN, loss, grid_per_interval)
        if edge:
            row.update(flagged=True, reason=_EDGE_REASON[edge])
        if edge != "concave":
            by_d = np.argsort(best["D"].to_numpy(float), kind="stable")
            logD = np.log(best["D"].to_numpy(float))[by_d]
            if np.all(np.diff(logD) > 0):
                xd, _, edge_d = _minimum(method, logD, loss[by_d], grid_per_interval)
            else:
                xd, edge_d = float("nan"), "repeat"
            if edge_d and not edge:
                row.update(flagged=True, reason=_EDGE_REASON[edge_d].replace(" N", " D"))
            row.update(N_opt=float(np.exp(x)), loss_opt=y, D_opt=float(np.exp(xd)))
        rows.append(row)
    return pd.DataFrame(rows), excluded


@dataclass(frozen=True, eq=False)
class IsoFlopResult(AllocationExponents):
    """Approach 2 outcome: per-budget optima and the power laws fitted to the unflagged ones."""

    method: str  # "parabola" or "akima"
    optima: pd.DataFrame  # one row per budget: C, n_points, N_min, N_max, N_opt, D_opt, loss_opt, flagged, reason
    N_fit: PowerLaw  # N_opt = coef * C^a over unflagged budgets
    D_fit: PowerLaw  # D_opt = coef * C^b over unflagged budgets
    flagged: tuple[float, ...]  # budgets left out of the fits (reasons in optima.reason)
    excluded_rows: Mapping[str, int] = field(default_factory=dict)  # input rows dropped, by reason
    alternative: IsoFlopResult | None = None  # the same runs by the other method (None: not run or no fit)
    disagreement: str = ""  # how the two methods' exponents differ beyond their intervals ('' when they agree)


def approach2(table: FitTable | pd.DataFrame, method: str = "parabola", grid_per_interval: int = 25,
              cross_check: bool = True, level: float = 0.95) -> IsoFlopResult:
    """Chinchilla Approach 2: IsoFLOP minima per budget, then N_opt ~ C^a and D_opt ~ C^b.

    Hoffmann et al. 2022, Sec. 3.2: the "parabola" minimum is theirs (the default); the "akima" minimum
    and the unweighted log-log fit over all budgets whose minimum is interior follow Porian et al. 2024
    (see the module docstring), and reproduce their published a to within 0.004 on all 15 of their
    configurations. Flagged budgets are kept in `optima` with their reason but left out of both fits.
    With `cross_check` the other method runs too (`alternative`); `disagreement` says when a or b of
    the two differ by more than z sqrt(se_1^2 + se_2^2), z the normal quantile of `level` (the
    regression errors of `scalefit.analysis.powerlaw`).
    """
    res = _approach2(table, method, grid_per_interval)
    if not cross_check:
        return res
    other = next(m for m in METHODS if m != method)
    try:
        alt = _approach2(table, other, grid_per_interval)
    except ValueError:
        return res  # the other method finds too few interior minima: nothing to compare
    return replace(res, alternative=alt, disagreement=method_disagreement(res, alt, level))


def method_disagreement(one: IsoFlopResult, two: IsoFlopResult, level: float = 0.95) -> str:
    """'' when the exponents a and b of two Approach-2 results agree within z sqrt(se_1^2 + se_2^2),
    else the differences in words. Both come from the same runs, so their errors are positively
    correlated and this test is conservative: a flagged difference is a real one."""
    z = float(norm.ppf(0.5 + level / 2))
    out = []
    for k, f1, f2 in (("a", one.N_fit, two.N_fit), ("b", one.D_fit, two.D_fit)):
        tol = z * math.hypot(f1.exponent_se, f2.exponent_se)
        if abs(f1.exponent - f2.exponent) > tol:
            out.append(f"{k}: {one.method} {f1.exponent:.4f} +- {f1.exponent_se:.4f}, {two.method} "
                       f"{f2.exponent:.4f} +- {f2.exponent_se:.4f}, differ by {abs(f1.exponent - f2.exponent):.3f} "
                       f"> {tol:.3f} ({100 * level:g}% interval of the difference)")
    return "; ".join(out)


def _approach2(table: FitTable | pd.DataFrame, method: str, grid_per_interval: int) -> IsoFlopResult:
    optima, excluded = isoflop_optima(table, method, grid_per_interval)
    ok = optima[~optima["flagged"]]
    if len(ok) < 3:
        raise ValueError(f"only {len(ok)} budgets have an interior minimum (need >= 3); flagged: "
                         + "; ".join(f"C={r.C:.3g}: {r.reason}" for r in optima[optima.flagged].itertuples()))
    return IsoFlopResult(
        method=method, optima=optima,
        N_fit=fit_power_law(ok["C"], ok["N_opt"]), D_fit=fit_power_law(ok["C"], ok["D_opt"]),
        flagged=tuple(float(c) for c in optima.loc[optima["flagged"], "C"]), excluded_rows=excluded,
    )


def approach2_by(table: FitTable, by: str, **kwargs) -> dict:
    """`approach2` for each value of the grouping column `by` (kept from the source with
    `load_table(..., keep=[by])`, e.g. a configuration id)."""
    if by not in table.frame.columns:
        raise ValueError(f"{table.source}: no grouping column {by!r} in the table (load it with keep=[{by!r}]); "
                         f"columns: {list(table.frame.columns)}")
    return {key: approach2(table.subset(table.frame[by] == key, f"{by} = {key}"), **kwargs)
            for key in sorted(table.frame[by].unique())}
