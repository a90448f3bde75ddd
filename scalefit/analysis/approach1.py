"""Chinchilla Approach 1: the lower envelope of training curves.

Approach 1 (Hoffmann et al. 2022, Sec. 3.1): for a family of model sizes, each trained on many
tokens, take the lower envelope of loss against FLOPs over all training curves; at each FLOP
level the curve that attains it says which N (and D) is compute-optimal there. Fitting those
points gives N_opt ~ C^a and D_opt ~ C^b.

Input: the curves as a `FitTable` (one row per logged point: run, N, D tokens so far, C FLOPs so far,
loss), e.g. `scalefit.fitting.sources.store_curves` of a run store, or the frame of one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from scalefit.analysis.powerlaw import AllocationExponents, PowerLaw, fit_power_law
from scalefit.fitting.table import FitTable


@dataclass(frozen=True, eq=False)
class EnvelopeResult(AllocationExponents):
    """Approach 1 outcome: the envelope on a FLOP grid and the power laws fitted to it."""

    envelope: pd.DataFrame  # per FLOP level: C, loss, run, N, D, edge (winner is the smallest/largest N)
    N_fit: PowerLaw  # N_opt = coef * C^a over non-edge FLOP levels
    D_fit: PowerLaw  # D_opt = coef * C^b over non-edge FLOP levels
    n_edge: int  # FLOP levels left out of the fits because the winner is the smallest or largest N
    excluded_rows: Mapping[str, int] = field(default_factory=dict)  # input rows dropped, by reason


def _curves_on_grid(df: pd.DataFrame, grid_logC: np.ndarray, excluded: dict):
    """Each run's log loss and log D interpolated (linearly in log C) onto the grid.

    Returns (runs, N per run, logL [runs, grid], logD [runs, grid]); NaN where a run's logged FLOPs
    do not reach a grid level, so a run only competes where it was actually measured.
    """
    runs, Ns, logL, logD = [], [], [], []
    for run, g in df.groupby("run", sort=True):
        n_vals = g["N"].unique()
        if len(n_vals) != 1:
            raise ValueError(f"training-curve table: run {run!r} has several N values {sorted(n_vals)[:4]}")
        # Repeated C in one run (e.g. a resumed log): keep the lowest loss, as the envelope would.
        best = g.sort_values("loss", kind="stable").drop_duplicates("C").sort_values("C")
        if len(best) < len(g):
            key = "duplicate (run, C): kept the lowest loss"
            excluded[key] = excluded.get(key, 0) + len(g) - len(best)
        if len(best) < 2:
            key = "run with < 2 distinct FLOP values"
            excluded[key] = excluded.get(key, 0) + len(best)
            continue
        lc = np.log(best["C"].to_numpy(float))
        runs.append(run)
        Ns.append(float(n_vals[0]))
        logL.append(np.interp(grid_logC, lc, np.log(best["loss"].to_numpy(float)), left=np.nan, right=np.nan))
        logD.append(np.interp(grid_logC, lc, np.log(best["D"].to_numpy(float)), left=np.nan, right=np.nan))
    if len(runs) < 2:
        raise ValueError(f"training-curve table: need >= 2 usable runs, got {len(runs)}")
    return runs, np.array(Ns), np.array(logL), np.array(logD)


def approach1(curves: FitTable | pd.DataFrame, n_grid: int = 1500,
              c_range: tuple[float, float] | None = None) -> EnvelopeResult:
    """Chinchilla Approach 1: lower envelope of loss vs FLOPs over training curves, then N_opt ~ C^a.

    Columns: run, N, D (tokens seen so far), C (FLOPs so far), loss. The envelope is evaluated on
    `n_grid` log-spaced FLOP levels (Hoffmann et al. use 1,500) spanning `c_range` (default: the
    whole range of C in the table); each run's loss is interpolated linearly in log-log between its
    logged points. Levels whose winner is the smallest or largest N of the family are marked `edge`
    and left out of the fit: there the true optimum may lie beyond the sizes trained.

    Accuracy: with sizes spaced by a factor r, the winner at each level is one of the two sizes
    that bracket the true N_opt (the IsoFLOP curve is unimodal), so |ln N_hat - ln N_opt| <= ln r,
    and the fitted a is off by at most ln r * sum|x - x_mean| / sum (x - x_mean)^2 (x = ln C over
    the fitted levels); `envelope_exponent_bound` computes it. The regression's standard error
    treats the levels as independent, which they are not (a staircase), so it understates the
    uncertainty.
    """
    if n_grid < 10:
        raise ValueError(f"n_grid must be >= 10, got {n_grid}")
    df = curves.frame if isinstance(curves, FitTable) else curves
    excluded: dict[str, int] = {}
    lo, hi = c_range if c_range is not None else (df["C"].min(), df["C"].max())
    if not 0 < lo < hi:
        raise ValueError(f"c_range must satisfy 0 < low < high, got ({lo}, {hi})")
    grid = np.linspace(np.log(lo), np.log(hi), n_grid)
    runs, Ns, logL, logD = _curves_on_grid(df, grid, excluded)
    covered = np.isfinite(logL).any(axis=0)
    if not covered.all():
        excluded["FLOP levels no run reaches"] = int((~covered).sum())
    grid, logL, logD = grid[covered], logL[:, covered], logD[:, covered]
    win = np.nanargmin(np.where(np.isfinite(logL), logL, np.inf), axis=0)
    cols = np.arange(len(grid))
    env = pd.DataFrame({
        "C": np.exp(grid), "loss": np.exp(logL[win, cols]), "run": [runs[i] for i in win],
        "N": Ns[win], "D": np.exp(logD[win, cols]),
    })
    env["edge"] = (env["N"] == Ns.min()) | (env["N"] == Ns.max())
    ok = env[~env["edge"]]
    if len(ok) < 3 or ok["N"].nunique() < 2:
        raise ValueError("the envelope is attained by the smallest or largest model almost everywhere; "
                         "train sizes that bracket the optimum over the FLOP range")
    return EnvelopeResult(envelope=env, N_fit=fit_power_law(ok["C"], ok["N"]),
                          D_fit=fit_power_law(ok["C"], ok["D"]), n_edge=int(env["edge"].sum()),
                          excluded_rows=excluded)


def envelope_exponent_bound(result: EnvelopeResult, size_ratio: float) -> float:
    """Worst-case error of Approach 1's exponent a from the discreteness of the size ladder.

    If every winner is within a factor `size_ratio` of the true N_opt, an OLS slope on
    x = ln C moves by at most ln(size_ratio) * sum|x - x_mean| / sum (x - x_mean)^2.
    """
    x = np.log(result.envelope.loc[~result.envelope["edge"], "C"].to_numpy())
    dx = x - x.mean()
    return float(np.log(size_ratio) * np.abs(dx).sum() / (dx**2).sum())
