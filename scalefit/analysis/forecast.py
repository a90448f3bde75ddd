"""Forecasts from a fitted law, with honest intervals, and backtests that check them on held-out runs.

A forecast of the loss of one future run has two sources of error:

* parameter uncertainty: the law's parameters are estimated from finitely many runs. The run-level
  bootstrap (`FitResult.samples`, one refit per resample) gives a distribution of predicted log
  losses log L(x; theta_b), b = 1..B.
* run-to-run scatter: a single run lands off the law by a residual epsilon (seed, data order,
  hyperparameters, the law's misfit). The fit measures it as `method["residual_scale"]`, the RMS of
  the log residuals, s. It is biased low by the parameters fitted, so we use
  sigma = s * sqrt(n / (n - k)) (n rows, k parameters; the usual degrees-of-freedom correction).

The prediction interval for a single run is the central `level` interval of the mixture

    log L_run = log L(x; theta_b) + epsilon,   b uniform on 1..B,   epsilon ~ Normal(0, sigma^2),

i.e. the quantiles q solve mean_b Phi((q - log L(x; theta_b)) / sigma) = (1 -/+ level) / 2; solved by
bisection. This keeps the bootstrap's asymmetry (percentile intervals, Efron & Tibshirani 1993) and
widens it by the scatter (the standard prediction interval of regression, e.g. Seber & Lee 2003,
Sec. 5.3, with the bootstrap standing in for the linearised parameter covariance). Without bootstrap
samples the interval is exp(+-z sigma) around the point.

A backtest (Hoffmann et al. 2022 check their law on Chinchilla itself; Besiroglu et al. 2024 and
Porian et al. 2024 argue for held-out checks) refits on all but the largest-compute runs and scores
the forecasts of the runs it left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from scalefit.fitting.laws import get_law
from scalefit.fitting.result import Estimate, FitResult


def residual_sigma(result: FitResult) -> float:
    """Scatter of a single run about the law in log loss: RMS log residual * sqrt(n / (n - k))."""
    s = float(result.method.get("residual_scale", float("nan")))
    if not math.isfinite(s):
        raise ValueError(f"fit result of law {result.law} has no residual_scale; refit with this version")
    n, k = result.n_points, len(result.params)
    return s * math.sqrt(n / (n - k)) if n > k else s


def _mixture_quantiles(log_draws: np.ndarray, sigma: float, probs, iters: int = 80) -> np.ndarray:
    """Quantiles of mean_b Normal(log_draws[b], sigma^2), per column; log_draws [B, n] -> [len(probs), n]."""
    lo = np.nanmin(log_draws, axis=0) - 10 * sigma  # [n]
    hi = np.nanmax(log_draws, axis=0) + 10 * sigma  # [n]
    out = []
    for p in probs:
        a, b = lo.copy(), hi.copy()
        for _ in range(iters):  # bisection: the mixture CDF is monotone; 80 halvings exhaust float64
            mid = 0.5 * (a + b)
            cdf = np.nanmean(ndtr((mid[None, :] - log_draws) / sigma), axis=0)  # [n]
            below = cdf < p
            a, b = np.where(below, mid, a), np.where(below, b, mid)
        out.append(0.5 * (a + b))
    return np.array(out)


@dataclass(frozen=True)
class Intervals:
    """Point predictions with both intervals, as arrays of the inputs' shape."""

    loss: np.ndarray  # point prediction from the full-data fit, nats/token
    param_low: np.ndarray | None  # bootstrap percentile interval of the law's value (None: no samples)
    param_high: np.ndarray | None
    low: np.ndarray  # prediction interval for one run: parameters + run-to-run scatter
    high: np.ndarray
    level: float  # coverage both intervals aim at
    sigma: float  # run-to-run scatter used, in log loss


def predict_intervals(result: FitResult, level: float | None = None, **inputs) -> Intervals:
    """Loss at `inputs` (the law's columns, arrays broadcast) with parameter and prediction intervals.

    See the module docstring for how the two sources of error combine.
    """
    level = result.ci_level if level is None else float(level)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    law = get_law(result.law)
    missing = [c for c in law.inputs if c not in inputs]
    if missing:
        raise ValueError(f"law {result.law} needs inputs {list(law.inputs)}; missing {missing}")
    for c in law.inputs:
        v = np.asarray(inputs[c], float)
        if not np.all(np.isfinite(v) & (v > 0)):
            raise ValueError(f"input {c} must be finite and > 0, got {inputs[c]!r}")
    sigma = residual_sigma(result)
    point = np.asarray(law.predict(result.values(), **{c: inputs[c] for c in law.inputs}), float)
    shape = point.shape
    q = (1 - level) / 2
    if result.samples is None or len(result.samples) < 2:
        z = float(ndtri(1 - q))
        return Intervals(point, None, None, point * math.exp(-z * sigma), point * math.exp(z * sigma),
                         level, sigma)
    draws = law.predict_many(result.samples, **{c: inputs[c] for c in law.inputs})  # [B, *shape]
    logd = np.log(draws.reshape(len(draws), -1))  # [B, n]
    plo, phi = np.exp(np.nanpercentile(logd, [100 * q, 100 * (1 - q)], axis=0))  # [n] each
    lo, hi = np.exp(_mixture_quantiles(logd, max(sigma, 1e-12), (q, 1 - q)))  # [n] each
    # The point is the full-data fit, not the bootstrap median; an interval must still contain it.
    flat = point.ravel()
    plo, phi = np.minimum(plo, flat), np.maximum(phi, flat)
    lo, hi = np.minimum(lo, plo), np.maximum(hi, phi)
    r = lambda x: x.reshape(shape)  # noqa: E731
    return Intervals(point, r(plo), r(phi), r(lo), r(hi), level, sigma)


@dataclass(frozen=True)
class Forecast:
    """The loss one run should reach at a given (N, D) or compute budget, with its intervals."""

    law: str  # law of the fit the forecast comes from
    at: Mapping[str, float]  # where the law was evaluated: N and D (or C for laws in C alone)
    compute: float | None  # the budget C asked for (None when N, D were given directly)
    allocation: Mapping[str, Estimate]  # N_opt, D_opt (with bootstrap intervals) when chosen for C
    loss: float  # point forecast, nats/token
    param_interval: tuple[float, float] | None  # where the law itself lies (bootstrap); None without
    interval: tuple[float, float]  # prediction interval for one run (parameters + scatter)
    level: float  # coverage of both intervals
    sigma: float  # run-to-run scatter in log loss used for `interval`
    n_resamples: int  # bootstrap refits behind `param_interval` (0: none)
    n_kind: str  # which N the law counts
    c_kind: str  # how C was counted in the fitted data
    c_convention: str = "C = 6 N D"  # how a budget C was turned into N and D (the fit's ComputeModel)
    notes: tuple[str, ...] = ()  # caveats: e.g. N beyond the sizes the compute model was fitted on

    def __str__(self) -> str:
        where = ", ".join(f"{k} = {v:.4g}" for k, v in self.at.items())
        if self.compute is None or "C" in self.at:
            head = where
        else:
            how = "compute-optimal" if self.allocation else "the other from the budget"
            head = f"C = {self.compute:.4g} FLOPs ({self.c_convention}), {how}: {where}"
        lines = [f"forecast ({self.law}) at {head}",
                 f"  loss {self.loss:.4f} nats/token"]
        pct = f"{100 * self.level:g}%"
        if self.param_interval is not None:
            lines.append(f"  {pct} interval of the law (parameter uncertainty, {self.n_resamples} "
                         f"bootstrap refits): [{self.param_interval[0]:.4f}, {self.param_interval[1]:.4f}]")
        else:
            lines.append("  no bootstrap in the fit: the interval below leaves out parameter uncertainty "
                         "(refit with bootstrap resamples)")
        lines.append(f"  {pct} prediction interval for one run (+ scatter sigma = {self.sigma:.4f} in "
                     f"log loss): [{self.interval[0]:.4f}, {self.interval[1]:.4f}]")
        for k, e in self.allocation.items():
            ci = "" if e.ci is None else f"  [{e.ci[0]:.4g}, {e.ci[1]:.4g}]"
            lines.append(f"  {k} = {e.value:.4g}{ci}")
        lines.append(f"  conventions: N {self.n_kind}, C {self.c_kind}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def forecast(result: FitResult, *, N: float | None = None, D: float | None = None,
             C: float | None = None, level: float | None = None) -> Forecast:
    """Forecast the loss of one run, from a fit.

    Laws in (N, D): give N and D; or C alone for the compute-optimal split (`FitResult.allocate`:
    closed form of Hoffmann et al. 2022, eq. 4, for the Chinchilla law under C = 6ND; numeric
    otherwise), the forecast being the loss of the model one would then train (the point-estimate
    N_opt, D_opt) under every bootstrap refit; or C with one of N, D (the other from C = D F(N)).
    C is counted as the fitted runs counted theirs (`result.compute`). Laws in C alone: give C.
    """
    law = get_law(result.law)
    given = {k: v for k, v in (("N", N), ("D", D), ("C", C)) if v is not None}
    for k, v in given.items():
        if not (isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{k} must be a finite number > 0, got {v!r}")
    alloc: dict[str, Estimate] = {}
    notes = []
    if law.inputs == ("N", "D"):
        cm = result.compute
        if C is not None and N is None and D is None:
            a = result.allocate(C)
            alloc = {"N_opt": a["N"], "D_opt": a["D"]}
            N, D = alloc["N_opt"].value, alloc["D_opt"].value
        elif C is not None and (N is None) != (D is None):
            N, D = (N, float(cm.tokens(C, N))) if N is not None else (cm.params_for(C, D), D)
        elif C is not None:
            raise ValueError("give C alone (compute-optimal), C with one of N or D, or N and D; not all three")
        if N is None or D is None:
            raise ValueError(f"law {result.law} forecasts at N and D (or at a budget C); got {sorted(given)}")
        at = {"N": float(N), "D": float(D)}
        if C is not None:
            notes += [n for n in [compute_range_note(cm, N)] if n]
    else:
        (var,) = law.inputs
        if var not in given:
            raise ValueError(f"law {result.law} ({result.formula}) needs {var}; got {sorted(given) or 'nothing'}")
        extra = sorted(set(given) - {var})
        if extra:
            raise ValueError(f"law {result.law} depends on {var} only; {extra} would be ignored")
        at = {var: float(given[var])}
    iv = predict_intervals(result, level, **at)
    f = lambda x: None if x is None else float(x)  # noqa: E731
    return Forecast(
        law=result.law, at=at, compute=None if C is None else float(C), allocation=alloc,
        loss=float(iv.loss), param_interval=None if iv.param_low is None else (f(iv.param_low), f(iv.param_high)),
        interval=(float(iv.low), float(iv.high)), level=iv.level, sigma=iv.sigma,
        n_resamples=0 if result.samples is None else len(result.samples),
        n_kind=result.n_kind, c_kind=result.c_kind,
        c_convention=result.compute.describe() if law.inputs == ("N", "D") else result.c_kind,
        notes=tuple(notes))


def compute_range_note(compute, N: float, tolerance: float = 1.5) -> str:
    """A caveat when N lies beyond the sizes a fitted compute model saw by more than `tolerance`x:
    its F(N) is then an extrapolation, and so is the C the allocation stands at."""
    if compute.n_range is None:
        return ""
    lo, hi = compute.n_range
    if lo / tolerance <= N <= hi * tolerance:
        return ""
    factor = N / hi if N > hi else lo / N
    return (f"N = {N:.3g} is {factor:.3g}x {'beyond the largest' if N > hi else 'below the smallest'} N the "
            f"compute model was fitted on ({lo:.3g} to {hi:.3g}): C there is its extrapolation")


# ---- backtest ------------------------------------------------------------------------------------


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

    def __str__(self) -> str:
        lines = [f"backtest ({self.law}): {self.rule}",
                 f"  fit on {self.n_fit_runs} runs with C <= {self.cutoff_C:.3g}; forecast {self.n_held_runs} "
                 f"held-out runs up to {self.extrapolation:.3g}x the largest fitted C",
                 f"  |relative error| mean {self.mean_abs_rel_err:.2%}, max {self.max_abs_rel_err:.2%}; "
                 f"signed mean {self.mean_rel_err:+.2%} (> 0: forecast too high)",
                 f"  {self.coverage:.0%} of held-out runs inside their {100 * self.level:g}% prediction interval"]
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


def backtest(data, law="chinchilla", *, holdout: float | int = 0.15, cutoff_C: float | None = None,
             bootstrap_resamples: int = 100, seed: int = 0, level: float = 0.95, **fit_kwargs) -> Backtest:
    """Refit `law` without the largest-compute runs and score its forecasts of them.

    data: anything `scalefit.fitting.fitter.fit` takes (FitTable, DataFrame, path, dataset name; column
    keywords in fit_kwargs). Relative error of each held-out row is (L_pred - L_obs) / L_obs, L_pred
    the point forecast at the row's own inputs. Coverage counts rows inside the prediction interval
    of `predict_intervals`.
    """
    from scalefit.fitting.fitter import fit
    from scalefit.fitting.table import FitTable, load_table

    table_kw = {k: fit_kwargs.pop(k) for k in list(fit_kwargs) if k.endswith("_col") or k in ("n_kind", "c_kind", "keep")}
    table = data if isinstance(data, FitTable) else load_table(data, **table_kw)
    frame = table.frame
    held, rule, cut = holdout_split(frame, holdout, cutoff_C)
    train = FitTable(frame=frame[~held].reset_index(drop=True), excluded=table.excluded,
                     notes=(*table.notes, f"backtest: {rule} ({int(held.sum())} rows)"),
                     source=table.source, n_kind=table.n_kind, c_kind=table.c_kind,
                     fingerprint=table.fingerprint + f":train<=C{cut:.6g}")
    res = fit(train, law, bootstrap_resamples=bootstrap_resamples, seed=seed, ci_level=level, **fit_kwargs)
    test = frame[held]
    lw = get_law(res.law)
    iv = predict_intervals(res, level, **{c: test[c].to_numpy(float) for c in lw.inputs})
    obs = test["loss"].to_numpy(float)
    rel = (iv.loss - obs) / obs
    rows = pd.DataFrame({"run": test["run"].to_numpy(), "N": test["N"].to_numpy(), "D": test["D"].to_numpy(),
                         "C": test["C"].to_numpy(), "loss": obs, "pred": iv.loss, "low": iv.low,
                         "high": iv.high, "rel_err": rel}).sort_values("C", kind="stable").reset_index(drop=True)
    inside = (obs >= iv.low) & (obs <= iv.high)
    return Backtest(law=res.law, rule=rule, cutoff_C=cut, n_fit_runs=res.n_runs,
                    n_held_runs=int(test["run"].nunique()),
                    extrapolation=float(test["C"].max() / frame.loc[~held, "C"].max()),
                    mean_abs_rel_err=float(np.mean(np.abs(rel))), max_abs_rel_err=float(np.max(np.abs(rel))),
                    mean_rel_err=float(np.mean(rel)), coverage=float(np.mean(inside)), level=level,
                    rows=rows, fit=res)


def allocation_curve(result: FitResult, C, level: float | None = None) -> dict[str, np.ndarray]:
    """Compute-optimal N_opt(C), D_opt(C) of a fit in (N, D) on a grid of budgets, with bootstrap bands.

    `scalefit.analysis.allocate.optimal_split` under the fit's compute model, vectorised over budgets and
    bootstrap refits (closed form of Hoffmann et al. 2022, eq. 4, for the Chinchilla law under 6ND).
    Returns arrays of len(C): C, N, N_low, N_high, D, D_low, D_high (without bootstrap samples the
    band collapses onto the point).
    """
    from scalefit.analysis.allocate import optimal_split

    law = get_law(result.law)
    if law.inputs != ("N", "D"):
        raise ValueError(f"allocation curves need a law in N and D, not {result.law} ({result.formula})")
    level = result.ci_level if level is None else level
    C = np.atleast_1d(np.asarray(C, float))  # [m]
    N0, D0 = (x[0] for x in optimal_split(law, result.point(), C, result.compute))  # [m] each
    out = {"C": C, "N": N0, "D": D0}
    rows = result.finite_samples()
    if len(rows) > 1:
        Ns, Ds = optimal_split(law, rows, C, result.compute)  # [B, m] each
        q = 100 * (1 - level) / 2
        for key, s, p0 in (("N", Ns, N0), ("D", Ds, D0)):
            lo, hi = np.nanpercentile(s, [q, 100 - q], axis=0)
            out[f"{key}_low"], out[f"{key}_high"] = np.minimum(lo, p0), np.maximum(hi, p0)
    else:
        out.update(N_low=N0, N_high=N0, D_low=D0, D_high=D0)
    return out


def frontier_curve(result: FitResult, C, level: float | None = None) -> Intervals:
    """Loss of the compute-optimal run at each budget C, with both intervals.

    Laws in C alone are the frontier L(C) itself (Kaplan et al. 2020, eq. 1.4). For a law in N and D
    it is L(N_opt(C), D_opt(C)) at the point-estimate allocation, under every bootstrap refit.
    """
    law = get_law(result.law)
    C = np.atleast_1d(np.asarray(C, float))
    if law.inputs == ("C",):
        return predict_intervals(result, level, C=C)
    if law.inputs == ("N", "D"):
        a = allocation_curve(result, C, level)
        return predict_intervals(result, level, N=a["N"], D=a["D"])
    raise ValueError(f"no loss-vs-compute frontier for law {result.law} ({result.formula}); "
                     "fit a law in N and D or a law in C")
