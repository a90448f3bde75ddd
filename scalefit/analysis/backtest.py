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
    cutoff_C: float  # split by C: every held-out run has C > cutoff_C >= every training run's C; else the largest training C
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
    holdout_by: str = "C"  # the split (`SPLITS`): C, N, D, run or curve-tail
    # (nominal, empirical) coverage of the one-run intervals at COVERAGE_LEVELS and `level`
    coverages: tuple[tuple[float, float], ...] = ()

    def __str__(self) -> str:
        fitted = (f"fit on {self.n_fit_runs} runs with C <= {self.cutoff_C:.3g}" if self.holdout_by == "C" else
                  f"fit on {self.fit.n_points} rows of {self.n_fit_runs} runs")
        lines = [f"backtest ({self.law}): {self.rule}",
                 f"  {fitted}; forecast {len(self.rows)} held-out rows of {self.n_held_runs} runs "
                 f"up to {self.extrapolation:.3g}x the largest fitted C",
                 f"  |relative error| mean {self.mean_abs_rel_err:.2%}, max {self.max_abs_rel_err:.2%}; "
                 f"signed mean {self.mean_rel_err:+.2%} (> 0: forecast too high)",
                 f"  {self.coverage:.0%} of held-out rows inside their {100 * self.level:g}% prediction interval"
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


def _top_runs(frame: pd.DataFrame, col: str, holdout, cutoff, what: str) -> tuple[np.ndarray, str, float]:
    """Hold out the runs of largest `col` (a run's value: the largest of its rows), ties together:
    a fraction in (0, 1) or a count >= 1 of runs, or every run above `cutoff`."""
    per_run = frame.groupby("run", sort=False)[col].max().sort_values(kind="stable")  # per run
    n_runs = len(per_run)
    if cutoff is not None:
        rule, held = f"held out the runs with {col} > {cutoff:.3g}", per_run.index[per_run > cutoff]
    else:
        k = _count(holdout, n_runs)
        edge = per_run.iloc[n_runs - k]
        held = per_run.index[per_run >= edge]
        cutoff = float(per_run[per_run < edge].max()) if (per_run < edge).any() else float("nan")
        rule = (f"held out the top {holdout:.0%} of runs by {what}" if holdout < 1 else
                f"held out the {k} runs of largest {what}")
    if len(held) == 0 or len(held) == n_runs:
        raise ValueError(f"{rule}: {len(held)} of {n_runs} runs held out; need some on each side")
    return frame["run"].isin(held).to_numpy(), rule, float(cutoff)


def _count(holdout, n_runs: int) -> int:
    """Runs to hold out: ceil(fraction x runs) (at least one) for a fraction, the count itself for >= 1."""
    if isinstance(holdout, (bool, np.bool_)) or not holdout > 0:
        raise ValueError(f"holdout must be a fraction in (0, 1) or a run count >= 1, got {holdout!r}")
    if holdout >= 1 and not float(holdout).is_integer():
        raise ValueError(f"holdout >= 1 must be a whole number of runs, got {holdout!r}")
    k = max(1, math.ceil(holdout * n_runs)) if holdout < 1 else int(holdout)
    if k >= n_runs:
        raise ValueError(f"holding out {k} of {n_runs} runs leaves nothing to fit")
    return k


def _split_run(frame: pd.DataFrame, holdout, cutoff) -> tuple[np.ndarray, str, float]:
    """Exactly the `holdout` largest runs, ranked by C, then N (no ties added): `holdout=1` is the
    single largest run."""
    if cutoff is not None:
        raise ValueError("holdout_by='run' holds out a number or share of runs; a cutoff needs C, N or D")
    per_run = frame.groupby("run", sort=False)[["C", "N"]].max().sort_values(["C", "N"], kind="stable")
    k = _count(holdout, len(per_run))
    held = per_run.index[len(per_run) - k:]
    rule = "held out the largest run (by C, then N)" if k == 1 else f"held out the {k} largest runs (by C, then N)"
    return frame["run"].isin(held).to_numpy(), rule, float(per_run["C"].iloc[:len(per_run) - k].max())


def _split_curve_tail(frame: pd.DataFrame, holdout, cutoff) -> tuple[np.ndarray, str, float]:
    """The last part of every training curve: the checkpoints with D > (1 - holdout) x their run's final
    D (or D > cutoff x it), never a run's first checkpoint. The fit sees the early part of every run and
    forecasts its end, so a handful of long curves is enough."""
    frac = 1 - float(holdout) if cutoff is None else float(cutoff)
    if not 0 < frac < 1:
        raise ValueError("holdout_by='curve-tail' takes holdout as a fraction in (0, 1) of each run's tokens "
                         f"(or cutoff in (0, 1)), got holdout={holdout!r}, cutoff={cutoff!r}")
    runs = frame.groupby("run", sort=False)["D"]
    if not (runs.size() > 1).any():
        raise ValueError("holdout_by='curve-tail' needs a curve table (several checkpoints per run); every run "
                         "has one row here (read the curves with checkpoints='all', --checkpoints all)")
    D = frame["D"].to_numpy(float)
    held = (D > frac * runs.transform("max").to_numpy(float)) & (D > runs.transform("min").to_numpy(float))
    if not held.any():
        raise ValueError(f"no checkpoint lies past {frac:g} of its run's tokens: nothing to hold out")
    return held, f"held out the checkpoints past {frac:.0%} of each run's tokens (the curves' tails)", \
        float(frame.loc[~held, "C"].max())


# How a backtest can hold out rows: name -> (frame, holdout, cutoff) -> (held-out row mask, rule, cutoff).
SPLITS = {
    "C": lambda frame, holdout, cutoff: holdout_split(frame, holdout, cutoff),
    "N": lambda frame, holdout, cutoff: _top_runs(frame, "N", holdout, cutoff, "N (the largest models)"),
    "D": lambda frame, holdout, cutoff: _top_runs(frame, "D", holdout, cutoff, "D (the most tokens)"),
    "run": _split_run,
    "curve-tail": _split_curve_tail,
}


def split(frame: pd.DataFrame, holdout_by: str = "C", holdout: float | int = 0.15,
          cutoff: float | None = None) -> tuple[np.ndarray, str, float]:
    """The rows a backtest holds out under the split `holdout_by` (`SPLITS`)."""
    if holdout_by not in SPLITS:
        raise ValueError(f"holdout_by must be one of {', '.join(SPLITS)}, got {holdout_by!r}")
    return SPLITS[holdout_by](frame, holdout, cutoff)


def backtest(table: FitTable, law="chinchilla", *, holdout: float | int = 0.15, cutoff_C: float | None = None,
             bootstrap_resamples: int = 100, seed: int = 0, level: float = 0.95, holdout_by: str = "C",
             **fit_options) -> Backtest:
    """Refit `law` without the largest-compute runs of `table` and score its forecasts of them.

    holdout_by: which rows are held out (`SPLITS`): "C" (default, the runs of largest compute), "N" (the
    largest models), "D" (the runs of most tokens), "run" (exactly the `holdout` largest runs) or
    "curve-tail" (the last `holdout` share of every curve's tokens); `cutoff_C` is then the cutoff in
    that split's own unit (N, D, or a fraction of each run's tokens).

    Relative error of each held-out row is (L_pred - L_obs) / L_obs, L_pred the point forecast at the
    row's own inputs. Coverage counts rows inside the one-run prediction interval of
    `FitResult.predict`. `fit_options` go to `scalefit.fitting.fitter.fit` (e.g. objective).
    """
    frame = table.frame
    held, rule, cut = split(frame, holdout_by, holdout, cutoff_C)
    if holdout_by != "C":
        cut = float(frame.loc[~held, "C"].max())
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
                    rows=rows, fit=res, holdout_by=holdout_by, coverages=tuple(coverages))


MIN_BACKTEST_SPAN = 4.0  # least C_max / C_min of the runs left to fit: two doublings of compute


def can_backtest(table: FitTable, law, holdout, holdout_by: str = "C") -> str:
    """'' when a backtest is meaningful, else why not: enough runs left to fit (>= 2x the law's
    parameters) spanning at least a factor MIN_BACKTEST_SPAN of compute. A factor 4-8 is far from the
    decades of a production sweep, but the forecast of the next budget from it is still a real test of
    the fitted exponents; the report says how far the fitted runs reach and how far the forecast goes.
    A curve-tail split keeps every run in the fit: it needs as many checkpoints (>= 2x the parameters)
    of at least two runs, spanning that factor of compute."""
    frame = table.frame
    try:
        held, _, _ = split(frame, holdout_by, holdout)
    except ValueError as e:
        return str(e)
    k = min_free_parameters(table, law)
    train = frame[~held]
    if holdout_by == "curve-tail":
        if len(train) < 2 * k or train["run"].nunique() < 2:
            return (f"only {len(train)} checkpoints of {train['run'].nunique()} runs left to fit a {k}-parameter "
                    f"law (need {2 * k} of at least 2 runs)")
        train = train.assign(run=np.arange(len(train)))  # the span check below counts checkpoints
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
