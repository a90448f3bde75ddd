"""Do Chinchilla's three approaches agree? The compute-optimal exponents a, b from each, side by side.

Hoffmann et al. 2022 (Table 2) estimate N_opt ~ C^a, D_opt ~ C^b three ways: the envelope of
training curves (Approach 1), IsoFLOP minima (Approach 2) and the fitted parametric law (Approach 3,
a = beta / (alpha + beta)). They reported a = 0.50, 0.49, 0.46; Besiroglu et al. 2024 showed the
third disagreed with the others through a fitting error. Disagreement beyond the intervals is a
sign that the law's form, the fit or the runs are off, so it is flagged, not averaged away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm, t as student_t

from scalefit.analysis.approach1 import approach1
from scalefit.analysis.approach2 import approach2
from scalefit.fitting.fitter import fit
from scalefit.fitting.result import FitResult
from scalefit.fitting.table import FitTable


def snap_budgets(frame: pd.DataFrame, rtol: float = 0.1) -> pd.DataFrame:
    """Group runs into FLOP budgets: C values within a factor (1 + rtol) of a group's smallest join it.

    Runs read off a figure (the Chinchilla points) or logged with exact FLOP counts scatter around
    the nominal budget; an IsoFLOP analysis needs one C per budget. Each group's C becomes the
    geometric mean of its members; the original is kept in column C_raw. rtol = 0 groups exact ties.
    """
    if rtol < 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    df = frame.copy()
    order = np.argsort(df["C"].to_numpy(float), kind="stable")
    logc = np.log(df["C"].to_numpy(float))[order]
    group = np.zeros(len(df), int)
    start, g = logc[0] if len(logc) else 0.0, 0
    for i, x in enumerate(logc):
        if x - start > math.log1p(rtol):
            g, start = g + 1, x
        group[order[i]] = g
    df["C_raw"] = df["C"]
    raw = pd.Series(df["C_raw"].to_numpy(float))
    mean = np.exp(np.log(raw).groupby(group).transform("mean").to_numpy())
    # A budget whose runs share one C keeps it bit for bit (exp(mean(log)) would round it).
    df["C"] = np.where(raw.groupby(group).transform("nunique").to_numpy() == 1, raw.to_numpy(), mean)
    return df


def isoflop_method(snapped: pd.DataFrame) -> str:
    """Which IsoFLOP minimum suits the budgets: "akima" (Porian et al. 2024) when every budget had one
    exact C, "parabola" (Hoffmann et al. 2022) when `snap_budgets` merged nearby C values: then sizes
    within a budget can nearly coincide, and an interpolant through noisy, nearly coincident points
    swings wildly where a least-squares parabola averages them."""
    merged = "C_raw" in snapped.columns and bool((snapped["C_raw"] != snapped["C"]).any())
    return "parabola" if merged else "akima"


def isoflop_structure(frame: pd.DataFrame, min_sizes: int = 3, min_budgets: int = 3) -> bool:
    """True when at least `min_budgets` values of C each have `min_sizes` or more distinct N."""
    sizes = frame.groupby("C")["N"].nunique()
    return int((sizes >= min_sizes).sum()) >= min_budgets


def has_curves(frame: pd.DataFrame) -> bool:
    """True when some run has several rows at different C (a training curve, for Approach 1)."""
    return bool((frame.groupby("run")["C"].nunique() > 1).any())


@dataclass(frozen=True)
class ApproachEstimate:
    """Compute-optimal exponents from one approach."""

    approach: str  # "1 (envelope)", "2 (IsoFLOP)", "3 (parametric fit)"
    a: float  # N_opt ~ C^a
    a_se: float | None  # its standard error (regression or bootstrap); None when unknown
    a_ci: tuple[float, float] | None  # interval at the comparison's level
    b: float  # D_opt ~ C^b
    b_se: float | None
    b_ci: tuple[float, float] | None
    note: str  # what went in (budgets, levels, resamples)


@dataclass(frozen=True)
class Comparison:
    """Exponents of every approach the data allow, and the pairs whose difference is significant."""

    estimates: tuple[ApproachEstimate, ...]  # one per approach run
    disagreements: tuple[str, ...]  # human-readable, one per disagreeing pair and exponent
    skipped: tuple[str, ...]  # approaches and disagreement tests not run, with the reason
    level: float  # interval level

    def __str__(self) -> str:
        pct = f"{100 * self.level:g}% CI"
        lines = [f"{'approach':<22}{'a':>8}  {pct:<20}{'b':>8}  {pct:<20}note"]
        for e in self.estimates:
            ci = lambda c: "" if c is None else f"[{c[0]:.3f}, {c[1]:.3f}]"  # noqa: E731
            lines.append(f"{e.approach:<22}{e.a:>8.3f}  {ci(e.a_ci):<20}{e.b:>8.3f}  {ci(e.b_ci):<20}{e.note}")
        lines += [f"skipped {s}" for s in self.skipped]
        lines += [f"DISAGREE: {d}" for d in self.disagreements] or [self.verdict()]
        return "\n".join(lines)

    def verdict(self) -> str:
        """One sentence for a comparison without disagreements."""
        if len(self.estimates) < 2:
            return "only one approach could run here: nothing to compare it with"
        return "the approaches agree within their intervals"


def _from_power(name: str, res, level: float, note: str) -> ApproachEstimate:
    q = student_t.ppf(0.5 + level / 2, max(res.N_fit.n_points - 2, 1))
    ci = lambda v, se: (v - q * se, v + q * se)  # noqa: E731
    return ApproachEstimate(name, res.a, res.N_fit.exponent_se, ci(res.a, res.N_fit.exponent_se),
                            res.b, res.D_fit.exponent_se, ci(res.b, res.D_fit.exponent_se), note)


def compare_approaches(table: FitTable, result: FitResult | None = None, *, curves: FitTable | None = None,
                       bootstrap_resamples: int = 100, seed: int = 0, level: float = 0.95,
                       budget_rtol: float = 0.1, method: str | None = None) -> Comparison:
    """Approach 3 (`result`, a fit of any law that splits a budget into N and D; by default a new
    Chinchilla fit), 2 (if the runs form IsoFLOP budgets after `snap_budgets(rtol=budget_rtol)`; minimum
    by `method`, default `isoflop_method`) and 1 (if runs are training curves: `curves`, or the table
    itself when its runs have several rows) on one table.

    Two estimates of an exponent disagree when |x_i - x_j| > z sqrt(se_i^2 + se_j^2) at `level`
    (a two-sided test treating them as independent, which, from the same runs, they are not: the
    flag is conservative in that it fires less often than it should).
    """
    frame = table.frame
    if result is None:
        result = fit(table, "chinchilla", bootstrap_resamples=bootstrap_resamples, seed=seed, ci_level=level)
    if not (result.law.can_allocate and not result.law.conditions):
        raise ValueError(f"Approach 3 exponents need a law that splits a budget into N and D, not "
                         f"{result.law.name} ({result.law.formula})")
    est, skipped = [], []
    if curves is None and has_curves(frame):
        curves = table
    # Every approach is measured over the compute the runs were trained to: Approach 3's slopes span
    # it, Approach 2's budgets are it, and Approach 1's envelope is taken over it too. Below the
    # smallest run's final C every curve point is early or mid-schedule: warmup, the first drop where
    # models of every size reach about the same loss (so the smallest, cheapest, wins), a cosine rate
    # not yet decayed (Hoffmann et al. 2022, App. A). On the quickstart's runs the whole-curve
    # envelope gives a = 0.14 against 0.71 over this range (tests/test_quickstart_runs.py).
    final_C = frame.groupby("run")["C"].max()
    c_range = (float(final_C.min()), float(final_C.max()))
    if curves is not None:
        try:
            r1 = approach1(curves, c_range=c_range if c_range[0] < c_range[1] else None)
            est.append(_from_power("1 (envelope)", r1, level, f"{len(r1.envelope) - r1.n_edge} FLOP levels "
                                   f"over C {c_range[0]:.3g} to {c_range[1]:.3g}"))
        except ValueError as e:
            skipped.append(f"approach 1 (envelope): {e}")
    else:
        skipped.append("approach 1 (envelope): no training curves (one row per run)")
    snapped = snap_budgets(frame, budget_rtol)
    if isoflop_structure(snapped):
        method = method or isoflop_method(snapped)
        try:
            r2 = approach2(snapped, method=method)
            est.append(_from_power("2 (IsoFLOP)", r2, level,
                                   f"{r2.N_fit.n_points} budgets used, {len(r2.flagged)} flagged, {method}"))
        except ValueError as e:
            skipped.append(f"approach 2 (IsoFLOP): {e}")
    else:
        skipped.append(f"approach 2 (IsoFLOP): fewer than 3 budgets with >= 3 sizes (budgets within {budget_rtol:.0%})")
    note = f"{result.bootstrap.n_resamples} bootstrap resamples"
    own = {"a", "b"} <= set(result.derived)  # the law's own exponents, constants under C = 6ND
    if own and (result.compute.is_6nd or not c_range[0] < c_range[1]):
        d = result.derived
    else:
        # Approaches 1 and 2 see C as the runs counted it; so must 3, or a and b are not comparable.
        span = c_range if c_range[0] < c_range[1] else (c_range[0] / 10, c_range[0] * 10)
        d = result.exponents(span)
        note += f"; slopes over C {span[0]:.3g} to {span[1]:.3g} under {result.compute.describe()}"
    est.append(ApproachEstimate("3 (parametric fit)", d["a"].value, d["a"].se, d["a"].ci, d["b"].value,
                                d["b"].se, d["b"].ci, note))
    z = norm.ppf(0.5 + level / 2)
    flags = []
    for i in range(len(est)):
        for j in range(i + 1, len(est)):
            for k in ("a", "b"):
                x, y = getattr(est[i], k), getattr(est[j], k)
                si, sj = getattr(est[i], f"{k}_se"), getattr(est[j], f"{k}_se")
                if si is None or sj is None:
                    missing = est[i].approach if si is None else est[j].approach
                    skipped.append(f"test of {k} between {est[i].approach} and {est[j].approach}: approach "
                                   f"{missing} has no standard error (fit with bootstrap resamples)")
                    continue
                if abs(x - y) > z * math.hypot(si, sj):
                    flags.append(f"{k}: approach {est[i].approach} gives {x:.3f}, approach {est[j].approach} "
                                 f"gives {y:.3f} (difference {x - y:+.3f} > {z:.2f} x combined SE "
                                 f"{math.hypot(si, sj):.3f})")
    return Comparison(tuple(est), tuple(flags), tuple(skipped), level)
