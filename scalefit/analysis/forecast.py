"""Forecasts from a fitted law: the loss one run should reach at (N, D) or at a budget, with intervals.

Both intervals come from `FitResult.predict` (`scalefit.fitting.predict`): the law's bootstrap spread,
and the one-run interval that adds the scatter of single runs about it (widened with the distance beyond
the fitted runs when the fit is calibrated on its own leave-future-out errors: `fit(..., law="auto")` or
`calibrate=True`). A budget C is spent as the runs
counted theirs (`FitResult.compute`), compute-optimally unless N or D is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from scalefit.fitting.optimum import Allocation, allocate_many
from scalefit.fitting.predict import Intervals
from scalefit.fitting.result import FitResult


@dataclass(frozen=True)
class Forecast:
    """The loss one run should reach at given inputs or at a compute budget, with its intervals."""

    law: str  # name of the law the forecast comes from
    at: Mapping[str, float]  # where the law was evaluated: its inputs (N and D, or C, ...)
    compute: float | None  # the budget C asked for (None when the inputs were given directly)
    allocation: Allocation | None  # the compute-optimal split with bootstrap intervals, when chosen for C
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
    calibrated: bool = False  # the one-run interval is widened by the fit's leave-future-out calibration
    scale: float | None = None  # the one-run scale (log loss) used: sigma, or its calibrated widening

    def __str__(self) -> str:
        where = ", ".join(f"{k} = {v:.4g}" for k, v in self.at.items())
        if self.compute is None or "C" in self.at:
            head = where
        else:
            how = "compute-optimal" if self.allocation else "the other from the budget"
            head = f"C = {self.compute:.4g} FLOPs ({self.c_convention}), {how}: {where}"
        lines = [f"forecast ({self.law}) at {head}", f"  loss {self.loss:.4f} nats/token"]
        pct = f"{100 * self.level:g}%"
        if self.param_interval is not None:
            lines.append(f"  {pct} interval of the law (parameter uncertainty, {self.n_resamples} "
                         f"bootstrap refits): [{self.param_interval[0]:.4f}, {self.param_interval[1]:.4f}]")
        else:
            lines.append("  no bootstrap in the fit: the interval below leaves out parameter uncertainty "
                         "(refit with bootstrap resamples)")
        how = (f"calibrated on the fit's leave-future-out errors: scale {self.scale:.4f} in log loss here, "
               f"scatter sigma = {self.sigma:.4f}" if self.calibrated else
               f"+ scatter sigma = {self.sigma:.4f} in log loss; the law's form is assumed to hold")
        lines.append(f"  {pct} prediction interval for one run ({how}): [{self.interval[0]:.4f}, "
                     f"{self.interval[1]:.4f}]")
        if self.allocation is not None:
            for k in ("N", "D"):
                e = getattr(self.allocation, k)
                ci = "" if e.ci is None else f"  [{e.ci[0]:.4g}, {e.ci[1]:.4g}]"
                lines.append(f"  {k}_opt = {e.value:.4g}{ci}")
        lines.append(f"  conventions: N {self.n_kind}, C {self.c_kind}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def forecast(result: FitResult, *, N: float | None = None, D: float | None = None,
             C: float | None = None, level: float | None = None, **given: float) -> Forecast:
    """Forecast the loss of one run, from a fit.

    Laws in N and D: give N and D; or C alone for the compute-optimal split (`FitResult.allocate`:
    closed form of Hoffmann et al. 2022, eq. 4, for the Chinchilla law under C = 6ND; numeric
    otherwise), the forecast being the loss of the model one would then train (the point-estimate
    N_opt, D_opt) under every bootstrap refit; or C with one of N, D (the other from C = D F(N)).
    C is counted as the fitted runs counted theirs (`result.compute`). `given` holds the law's other
    inputs (e.g. U). Laws in one variable: give it (e.g. C).
    """
    law = result.law
    asked = {k: v for k, v in (("N", N), ("D", D), ("C", C), *given.items()) if v is not None}
    for k, v in asked.items():
        if not (isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{k} must be a finite number > 0, got {v!r}")
    alloc, notes = None, []
    if law.can_allocate:
        cm = result.compute
        if C is not None and N is None and D is None:
            alloc = result.allocate(C, **given)
            N, D = alloc.N.value, alloc.D.value
        elif C is not None and (N is None) != (D is None):
            N, D = (N, float(cm.tokens(C, N))) if N is not None else (cm.params_for(C, D), D)
        elif C is not None:
            raise ValueError("give C alone (compute-optimal), C with one of N or D, or N and D; not all three")
        if N is None or D is None:
            raise ValueError(f"law {law.name} forecasts at N and D (or at a budget C); got {sorted(asked)}")
        at = {"N": float(N), "D": float(D), **{k: float(v) for k, v in given.items()}}
        if C is not None:
            notes += [n for n in [compute_range_note(cm, N)] if n]
    else:
        at = {k: float(v) for k, v in asked.items()}
        missing = [c for c in law.inputs if c not in at]
        if missing:
            raise ValueError(f"law {law.name} ({law.formula}) needs {', '.join(law.inputs)}; got "
                             f"{sorted(asked) or 'nothing'}")
        extra = sorted(set(at) - set(law.inputs))
        if extra:
            raise ValueError(f"law {law.name} depends on {', '.join(law.inputs)} only; {extra} would be ignored")
    iv = result.predict(level, **at)
    f = lambda x: None if x is None else float(x)  # noqa: E731
    return Forecast(
        law=law.name, at=at, compute=None if C is None else float(C), allocation=alloc,
        loss=float(iv.loss), param_interval=None if iv.param_low is None else (f(iv.param_low), f(iv.param_high)),
        interval=(float(iv.low), float(iv.high)), level=iv.level, sigma=iv.sigma,
        n_resamples=len(result.finite_samples()), n_kind=result.n_kind.value, c_kind=result.c_kind.value,
        c_convention=result.compute.describe() if law.can_allocate else result.c_kind.value, notes=tuple(notes),
        calibrated=iv.calibrated, scale=None if iv.scale is None else float(np.ravel(iv.scale)[0]))


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


def allocation_curve(result: FitResult, C, level: float | None = None, **given: float) -> tuple[Allocation, ...]:
    """Compute-optimal allocations of a fit on a grid of budgets `C`, with bootstrap intervals: one
    `Allocation` per budget (`scalefit.fitting.optimum.allocate_many`, all budgets and refits at once)."""
    return allocate_many(result.law, result.point(), result.finite_samples(), C, result.compute,
                         level=result.ci_level if level is None else level, given=given)


def frontier_curve(result: FitResult, C, level: float | None = None) -> Intervals:
    """Loss of the compute-optimal run at each budget C, with both intervals.

    Laws in C alone are the frontier L(C) itself (Kaplan et al. 2020, eq. 1.4). For a law that
    allocates a budget it is L(N_opt(C), D_opt(C)) at the point-estimate allocation, under every
    bootstrap refit.
    """
    law = result.law
    if not law.has_frontier:
        raise ValueError(f"no loss-vs-compute frontier for law {law.name} ({law.formula}); "
                         "fit a law in N and D or a law in C")
    C = np.atleast_1d(np.asarray(C, float))
    if not law.can_allocate:  # a law in C alone is the frontier
        return result.predict(level, C=C)
    allocs = allocation_curve(result, C, level)
    return result.predict(level, N=np.array([a.N.value for a in allocs]), D=np.array([a.D.value for a in allocs]))
