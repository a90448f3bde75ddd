"""Fit a curve law to a `CurveTable` with the one fitter, and forecast the curve of any schedule.

`fit_curves(curves, "multipower")` binds the law to the table's points (`CurveLaw.bind`) and calls
`scalefit.fitting.fitter.fit` on the table's fit view: the same Huber objective on log residuals,
multi-start damped Newton, run-level bootstrap (a curve is a run: its points are resampled together).
It refuses a design that cannot identify the law (no decay for the loss-drop terms; too few sizes for a
joint law's N-dependence) unless the parameters concerned are pinned ("multipower[gamma=0.6]").

Every evaluation of a curve law sums the schedule terms of every point, so the start grid is screened on a
smaller table where the curves' sums have more than SCREEN_NODES nodes: every k-th point of each curve (its
last kept), the grid run to convergence there, and the best POLISH_STARTS optima refined on every point by
the same objective. The optimum is the full table's; only the search for it is cheaper.

`CurveFit.predict(schedule, steps)` is the loss after `steps` updates of a schedule never run, with the
bootstrap interval of the law and the interval of one curve's point (`scalefit.fitting.predict`): the law is
bound to that schedule's sums and evaluated with the fitted parameters and every bootstrap draw.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from scalefit.fitting.curves import CurveTable
from scalefit.fitting.fitter import fit
from scalefit.fitting.laws import CurveLaw, Law, get_curve_law, split_pins
from scalefit.fitting.laws.curves import POINT
from scalefit.fitting.laws.sums import build_points
from scalefit.fitting.predict import Intervals, intervals
from scalefit.fitting.result import FitError, FitResult
from scalefit.fitting.schedules import Schedule
from scalefit.fitting.solver import POLISH_STARTS, Objective, multistart

# Above this many schedule-sum nodes a fit screens its start grid on every k-th point of each curve (a table
# of about this many nodes; each curve's last point kept) and refines the best POLISH_STARTS optima there on
# every point: the grid then costs the same for three curves or thirty, and only the finish reads them all.
SCREEN_NODES = 16384


def resolve(law) -> tuple[CurveLaw, dict[str, float]]:
    """(curve law, pins) from a name ("multipower", "tissue[lam=0.999]") or a CurveLaw."""
    if isinstance(law, CurveLaw):
        return law, {}
    base, pins = split_pins(str(law))
    return get_curve_law(base), pins


@dataclass(frozen=True)
class CurveFit:
    """A fitted curve law: the fit (`FitResult`, its law bound to the fitted points) and how to bind it again."""

    result: FitResult  # parameters, intervals, status, warnings: as any fit
    family: CurveLaw  # the curve law, unbound
    pins: tuple[tuple[str, float], ...] = ()  # parameters held fixed in the fit

    def bound(self, points) -> Law:
        """The fitted law bound to other points (same parameters and pins)."""
        law = self.family.bind(points)
        return law.with_fixed(**dict(self.pins)) if self.pins else law

    def params(self) -> dict[str, float]:
        return self.result.values()

    def predict(self, schedule: Schedule, steps, N: float | None = None, level: float | None = None) -> Intervals:
        """Loss after `steps` updates (1 .. len(schedule); array) of `schedule` for a model of N parameters
        (joint laws need it), with the law's bootstrap interval and one curve point's interval."""
        steps = np.atleast_1d(np.asarray(steps, dtype=np.int64))
        return self.predict_each([schedule] * steps.size, steps, None if N is None else np.full(steps.size, N), level)

    def predict_each(self, schedules, steps, N=None, level: float | None = None) -> Intervals:
        """Loss after steps[i] updates of schedules[i] (model size N[i]), all bound and evaluated at once (one
        compilation however many schedules)."""
        steps = np.asarray(steps, dtype=np.int64).reshape(-1)
        if self.family.reads_n and (N is None or not np.all(np.isfinite(np.asarray(N, float)))):
            raise ValueError(f"{self.family.name} depends on the model size: give N (parameters, "
                             f"{self.result.n_kind} as fitted)")
        uniq = list(dict.fromkeys(schedules))
        idx = np.array([uniq.index(s) for s in schedules], np.int64)
        pts = build_points(uniq, idx, steps, None if N is None else np.asarray(N, float), self.family.spec)
        return self._intervals(pts, level)

    def predict_table(self, curves: CurveTable, level: float | None = None) -> Intervals:
        """Loss at every point of `curves` (its row order)."""
        return self._intervals(curves.points(self.family.spec), level)

    def _intervals(self, pts, level) -> Intervals:
        r = self.result
        return intervals(self.bound(pts), r.point(), r.finite_samples(), r.sigma,
                         r.ci_level if level is None else level, {POINT: np.arange(1, len(pts) + 1, dtype=float)})

    def errors(self, curves: CurveTable) -> pd.DataFrame:
        """Per curve of `curves`: points, mean and worst relative error |L_pred - L| / L of the point prediction."""
        law = self.bound(curves.points(self.family.spec))
        pred = law.predict_many(self.result.point(), **{POINT: np.arange(1, len(curves) + 1, dtype=float)})
        return curve_errors(curves, pred[0])

    def save(self, path) -> Path:
        """The fit as JSON (`FitResult.save`); `load_curve_fit` reads it back."""
        return self.result.save(path)


def curve_errors(curves: CurveTable, predicted) -> pd.DataFrame:
    """Per curve: points, mean and worst relative error of `predicted` (row order of `curves`)."""
    f = curves.frame
    rel = np.abs(np.asarray(predicted, float) - f["loss"].to_numpy(float)) / f["loss"].to_numpy(float)
    out = pd.DataFrame({"curve": f["curve"].to_numpy(), "rel": rel}).groupby("curve", sort=False)["rel"]
    return pd.DataFrame({"points": out.size(), "mean_err": out.mean(), "worst_err": out.max()}).reset_index()


def fit_curves(curves: CurveTable, law="multipower", *, objective: Objective = Objective(),
               bootstrap_resamples: int = 0, seed: int = 0, ci_level: float = 0.95, starts=None,
               gtol: float = 1e-9, progress: bool = False) -> CurveFit:
    """Fit a curve law (a name, "name[K=V]" to pin parameters, or a `CurveLaw`) to every point of `curves`.

    FitError when the curves cannot identify the law's free parameters (the reasons `CurveLaw.unidentified`
    gives, unless each concerns only pinned parameters). Other options as `scalefit.fitting.fitter.fit`.
    """
    family, pins = resolve(law)
    points = curves.points(family.spec)
    problems = [why for why, params in family.unidentified(points) if not set(params) <= set(pins)]
    if problems:
        raise FitError(f"{curves.source}: " + "; ".join(problems))
    bound = family.bind(points)
    bound = bound.with_fixed(**pins) if pins else bound
    screen = _screen(curves, family, pins, objective, gtol) if starts is None else None
    if screen is not None:
        starts = screen[0].finalists[:POLISH_STARTS]
    result = fit(curves.fit_table(), bound, objective=objective, bootstrap_resamples=bootstrap_resamples, seed=seed,
                 ci_level=ci_level, starts=starts, gtol=gtol, progress=progress)
    if screen is not None:
        ms, k, n_sub = screen
        result = replace(result, solver=replace(result.solver, n_starts=ms.n_starts, share_at_best=ms.share_at_best),
                         notes=(*result.notes, f"the {ms.n_starts} starts were screened on one point in {k} of each "
                                f"curve ({n_sub} of {len(curves)} points; share at best as there), the best "
                                f"{min(POLISH_STARTS, len(ms.finalists))} refined on every point"))
    return CurveFit(result=result, family=family, pins=tuple(sorted(pins.items())))


def _screen(curves: CurveTable, family: CurveLaw, pins: dict, objective: Objective, gtol: float):
    """(multistart on every k-th point of each curve, k, points kept) when the curves' sums have more than
    SCREEN_NODES nodes, else None."""
    nodes = len(curves.points(family.spec).weight)
    if nodes <= SCREEN_NODES:
        return None
    k = math.ceil(nodes / SCREEN_NODES)
    f = curves.frame
    back = f.groupby("curve", sort=False)["step"].rank(ascending=False, method="first").to_numpy() - 1
    sub = curves.subset(mask=back % k == 0, note=f"one point in {k} of each curve")
    law = family.bind(sub.points(family.spec))
    law = law.with_fixed(**pins) if pins else law
    frame = sub.fit_table().frame
    ms = multistart(law, np.log(frame[[POINT]].to_numpy(float).T), np.log(frame["loss"].to_numpy(float)),
                    frame["weight"].to_numpy(float), objective=objective, gtol=gtol)
    return ms, k, len(sub)


def load_curve_fit(path, family: CurveLaw | None = None) -> CurveFit:
    """A `CurveFit` saved by `CurveFit.save`; `family` resolves a curve law outside the registry."""
    path = Path(path)
    try:
        name = json.loads(path.read_text())["law"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a saved fit ({e})") from None
    if family is None:
        family, pins = resolve(name)
    else:
        base, pins = split_pins(name)
        if base != family.name:
            raise ValueError(f"{path} holds a fit of {name!r}, not of curve law {family.name!r}")
    unbound = family.law().with_fixed(**pins) if pins else family.law()
    return CurveFit(result=FitResult.load(path, law=unbound), family=family, pins=tuple(sorted(pins.items())))


__all__ = ["CurveFit", "curve_errors", "fit_curves", "load_curve_fit", "resolve"]
