"""Backtests: refit a law on all but the largest-compute runs and score its forecasts of those it left out.

Hoffmann et al. 2022 check their law on Chinchilla itself; Besiroglu et al. 2024 and Porian et al. 2024
argue for held-out checks. A backtest is the honest measure of a forecast: the error and the coverage of
the one-run intervals on runs the fit never saw, at 80, 90 and 95% nominal (and the level asked for).
With law="auto" the choice of law, and the calibration of its intervals, are made on the fitted part only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scalefit.fitting.fitter import fit
from scalefit.fitting.laws import get_law
from scalefit.fitting.result import FitResult
from scalefit.fitting.choice import forms
from scalefit.fitting.table import FitTable

COVERAGE_LEVELS = (0.8, 0.9, 0.95)  # nominal levels every backtest reports the empirical coverage of


@dataclass(frozen=True, eq=False)
class Backtest:
    """Forecasts of held-out largest-compute runs from a fit on the rest, and how wrong they were."""

    law: str  # law refitted on the training part
    rule: str  # how runs were held out, in words
    cutoff_C: float  # every held-out run has C > cutoff_C >= every training run's C
    n_fit_runs: int  # runs the law was refitted on
    n_held_runs: int  # runs held out
    extrapolation: float  # largest held-out C / largest training C
    mean_abs_rel_err: float  # mean over held-out rows of |pred - obs| / obs
    max_abs_rel_err: float  # the worst one
    mean_rel_err: float  # signed mean: > 0 means the law forecast too high a loss (too pessimistic)
    coverage: float  # share of held-out rows inside their prediction interval
    level: float  # the prediction intervals' nominal coverage
    rows: pd.DataFrame = field(repr=False)  # per held-out row: run, N, D, C, loss, pred, low, high, rel_err
    fit: FitResult = field(repr=False)  # the refit on the training part
    # (nominal, empirical) coverage of the one-run intervals at COVERAGE_LEVELS and `level`
    coverages: tuple[tuple[float, float], ...] = ()

    def __str__(self) -> str:
        lines = [f"backtest ({self.law}): {self.rule}",
                 f"  fit on {self.n_fit_runs} runs with C <= {self.cutoff_C:.3g}; forecast {self.n_held_runs} "
                 f"held-out runs up to {self.extrapolation:.3g}x the largest fitted C",
                 f"  |relative error| mean {self.mean_abs_rel_err:.2%}, max {self.max_abs_rel_err:.2%}; "
                 f"signed mean {self.mean_rel_err:+.2%} (> 0: forecast too high)",
                 f"  {self.coverage:.0%} of held-out runs inside their {100 * self.level:g}% prediction interval"
                 + (" (calibrated on the fitted part's own leave-future-out errors)" if self.fit.calibration else ""),
                 "  coverage, nominal -> empirical: " + ", ".join(f"{100 * p:g}% -> {c:.0%}" for p, c in self.coverages)]
        for r in self.rows.head(12).itertuples():
            lines.append(f"  {r.run}: C = {r.C:.3g}, loss {r.loss:.4f}, forecast {r.pred:.4f} "
                         f"[{r.low:.4f}, {r.high:.4f}], error {r.rel_err:+.2%}")
        if len(self.rows) > 12:
            lines.append(f"  ... {len(self.rows) - 12} more held-out rows")
        return "\n".join(lines)


def holdout_split(frame: pd.DataFrame, holdout: float | int = 0.15,
                  cutoff_C: float | None = None) -> tuple[np.ndarray, str, float]:
    """Which rows to hold out: the runs of largest compute (a run's C = the largest C of its rows).

    holdout: a fraction in (0, 1) of the runs (rounded up, at least one), or a count >= 1 of runs;
    cutoff_C instead holds out every run with C > cutoff_C. Runs tied with the last one held out
    are held out too, so the split is a clean cut in C. Returns (held-out row mask, rule, cutoff).
    """
    run_C = frame.groupby("run", sort=False)["C"].max().sort_values(kind="stable")  # per run
    n_runs = len(run_C)
    if cutoff_C is not None:
        rule = f"held out the runs with C > {cutoff_C:.3g}"
        held_runs = run_C.index[run_C > cutoff_C]
    else:
        if isinstance(holdout, (bool, np.bool_)) or not holdout > 0:
            raise ValueError(f"holdout must be a fraction in (0, 1) or a run count >= 1, got {holdout!r}")
        if holdout < 1:
            k, rule = max(1, math.ceil(holdout * n_runs)), f"held out the top {holdout:.0%} of runs by C"
        elif float(holdout).is_integer():
            k, rule = int(holdout), f"held out the {int(holdout)} largest-C runs"
        else:
            raise ValueError(f"holdout >= 1 must be a whole number of runs, got {holdout!r}")
        if k >= n_runs:
            raise ValueError(f"holding out {k} of {n_runs} runs leaves nothing to fit")
        edge = run_C.iloc[n_runs - k]
        held_runs = run_C.index[run_C >= edge]
        cutoff_C = float(run_C[run_C < edge].max())
    if len(held_runs) == 0 or len(held_runs) == n_runs:
        raise ValueError(f"{rule}: {len(held_runs)} of {n_runs} runs held out; need some on each side")
    return frame["run"].isin(held_runs).to_numpy(), rule, float(cutoff_C)


def backtest(table: FitTable, law="chinchilla", *, holdout: float | int = 0.15, cutoff_C: float | None = None,
             bootstrap_resamples: int = 100, seed: int = 0, level: float = 0.95, **fit_options) -> Backtest:
    """Refit `law` without the largest-compute runs of `table` and score its forecasts of them.

    Relative error of each held-out row is (L_pred - L_obs) / L_obs, L_pred the point forecast at the
    row's own inputs. Coverage counts rows inside the one-run prediction interval of
    `FitResult.predict`. `fit_options` go to `scalefit.fitting.fitter.fit` (e.g. objective).
    """
    frame = table.frame
    held, rule, cut = holdout_split(frame, holdout, cutoff_C)
    train = table.subset(~held, f"backtest: {rule} ({int(held.sum())} rows)")
    res = fit(train, law, bootstrap_resamples=bootstrap_resamples, seed=seed, ci_level=level, **fit_options)
    test = frame[held]
    if res.n_kind != table.n_kind:  # law="auto" chose another N column of the table
        test = table.with_n(res.n_kind.store_column, res.n_kind).frame[held]
    inputs = {c: test[c].to_numpy(float) for c in res.law.inputs}
    iv = res.predict(level, **inputs)
    obs = test["loss"].to_numpy(float)
    coverages = []
    for p in sorted(set(COVERAGE_LEVELS) | {float(level)}):
        band = res.predict(p, **inputs)
        coverages.append((p, float(np.mean((obs >= band.low) & (obs <= band.high)))))
    rel = (iv.loss - obs) / obs
    rows = pd.DataFrame({"run": test["run"].to_numpy(), "N": test["N"].to_numpy(), "D": test["D"].to_numpy(),
                         "C": test["C"].to_numpy(), "loss": obs, "pred": iv.loss, "low": iv.low,
                         "high": iv.high, "rel_err": rel}).sort_values("C", kind="stable").reset_index(drop=True)
    inside = (obs >= iv.low) & (obs <= iv.high)
    return Backtest(law=res.law.name, rule=rule, cutoff_C=cut, n_fit_runs=res.n_runs,
                    n_held_runs=int(test["run"].nunique()),
                    extrapolation=float(test["C"].max() / frame.loc[~held, "C"].max()),
                    mean_abs_rel_err=float(np.mean(np.abs(rel))), max_abs_rel_err=float(np.max(np.abs(rel))),
                    mean_rel_err=float(np.mean(rel)), coverage=float(np.mean(inside)), level=level,
                    rows=rows, fit=res, coverages=tuple(coverages))


MIN_BACKTEST_SPAN = 4.0  # least C_max / C_min of the runs left to fit: two doublings of compute


def can_backtest(table: FitTable, law, holdout) -> str:
    """'' when a backtest is meaningful, else why not: enough runs left to fit (>= 2x the law's
    parameters) spanning at least a factor MIN_BACKTEST_SPAN of compute. A factor 4-8 is far from the
    decades of a production sweep, but the forecast of the next budget from it is still a real test of
    the fitted exponents; the report says how far the fitted runs reach and how far the forecast goes."""
    frame = table.frame
    try:
        held, _, _ = holdout_split(frame, holdout)
    except ValueError as e:
        return str(e)
    k = min_free_parameters(table, law)
    train = frame[~held]
    if train["run"].nunique() < 2 * k:
        return f"only {train['run'].nunique()} runs left to fit a {k}-parameter law (need {2 * k})"
    span = train["C"].max() / train["C"].min()
    if span < MIN_BACKTEST_SPAN:
        return (f"the runs left to fit span only a factor {span:.3g} of compute "
                f"(need {MIN_BACKTEST_SPAN:g})")
    return ""


def min_free_parameters(table: FitTable, law) -> int:
    """The parameters a backtest's refit needs runs for: the law's, or for "auto" the smallest candidate's."""
    if isinstance(law, str) and law.strip() == "auto":
        return min(f.n_free for f in forms(table))
    return get_law(law).n_free
