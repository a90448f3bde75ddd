"""The one prediction path: the loss a law predicts, with a parameter interval and a one-run interval.

A forecast of the loss of one future run has two sources of error:

* parameter uncertainty: the law's parameters are estimated from finitely many runs. The run-level
  bootstrap (one refit per resample) gives a distribution of predicted log losses log L(x; theta_b).
* run-to-run scatter: a single run lands off the law by a residual epsilon (seed, data order,
  hyperparameters, the law's misfit). The fit measures it as the RMS of the log residuals, s. It is
  biased low by the parameters fitted, so sigma = s * sqrt(n / (n - k)) (n rows, k free parameters;
  the usual degrees-of-freedom correction).

The prediction interval for a single run is the central `level` interval of the mixture

    log L_run = log L(x; theta_b) + epsilon,   b uniform on 1..B,   epsilon ~ Normal(0, sigma^2),

i.e. the quantiles q solve mean_b Phi((q - log L(x; theta_b)) / sigma) = (1 -/+ level) / 2, by
bisection. This keeps the bootstrap's asymmetry (percentile intervals, Efron & Tibshirani 1993) and
widens it by the scatter (the prediction interval of regression, e.g. Seber & Lee 2003, Sec. 5.3, with
the bootstrap standing in for the linearised parameter covariance). Without bootstrap samples the
interval is exp(+-z sigma) around the point.

Neither term knows whether the law's form holds beyond the fitted rows. A fit calibrated on its own
rows' leave-future-out errors (`scalefit.fitting.calibrate`) replaces sigma at a target x lying a log
distance d(x) beyond the fitted range by m_p sqrt(sigma^2 + tau^2 d(x)^2), tau the growth of the form's
error with distance and m_p the split-conformal multiplier at the level (over the Normal quantile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from scalefit.fitting.calibrate import Calibration
from scalefit.fitting.laws import Law


def residual_sigma(residual_scale: float, n_points: int, n_free: int) -> float:
    """Scatter of a single run about the law in log loss: RMS log residual * sqrt(n / (n - k))."""
    s = float(residual_scale)
    if not math.isfinite(s):
        raise ValueError("the fit has no residual scale; refit with this version")
    return s * math.sqrt(n_points / (n_points - n_free)) if n_points > n_free else s


def _mixture_quantiles(log_draws: np.ndarray, sigma, probs, iters: int = 80) -> np.ndarray:
    """Quantiles of mean_b Normal(log_draws[b], sigma^2), per column; log_draws [B, n], sigma scalar or
    [n] -> [len(probs), n]."""
    sigma = np.broadcast_to(np.asarray(sigma, float), log_draws.shape[1:])  # [n]
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
    # the one-run scale actually used per point (log loss): sigma, or its calibrated widening; None: sigma
    scale: np.ndarray | None = None
    calibrated: bool = False  # True when the one-run interval is the calibrated one


def intervals(law: Law, point, samples, sigma: float, level: float, inputs: dict,
              calibration: Calibration | None = None) -> Intervals:
    """Loss of `law` at `inputs` (its columns, arrays broadcast) for parameters `point` [K], with the
    parameter interval from bootstrap `samples` [B, K] (None or fewer than 2: none) and the one-run
    interval widened by `sigma`, or by its calibrated growth beyond the fitted range (module docstring)."""
    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    missing = [c for c in law.inputs if c not in inputs]
    if missing:
        raise ValueError(f"law {law.name} needs inputs {list(law.inputs)}; missing {missing}")
    extra = sorted(set(inputs) - set(law.inputs))
    if extra:
        raise ValueError(f"law {law.name} ({law.formula}) does not read {', '.join(extra)}")
    for c in law.inputs:
        v = np.asarray(inputs[c], float)
        if not np.all(np.isfinite(v) & (v > 0)):
            raise ValueError(f"input {c} must be finite and > 0, got {inputs[c]!r}")
    point_row = np.atleast_2d(np.asarray(point, float))  # [1, K]
    loss = np.asarray(law.predict_many(point_row, **inputs)[0], float)
    shape = loss.shape
    q = (1 - level) / 2
    scale = (np.full(loss.size, float(sigma)) if calibration is None
             else calibration.sigma(sigma, calibration.distance(inputs), level))  # [n]
    extra = dict(scale=scale.reshape(shape), calibrated=calibration is not None)
    if samples is None or len(samples) < 2:
        z = float(ndtri(1 - q))
        s = scale.reshape(shape)
        return Intervals(loss, None, None, loss * np.exp(-z * s), loss * np.exp(z * s), level, sigma, **extra)
    draws = law.predict_many(samples, **inputs)  # [B, *shape]
    logd = np.log(draws.reshape(len(draws), -1))  # [B, n]
    plo, phi = np.exp(np.nanpercentile(logd, [100 * q, 100 * (1 - q)], axis=0))  # [n] each
    lo, hi = np.exp(_mixture_quantiles(logd, np.maximum(scale, 1e-12), (q, 1 - q)))  # [n] each
    # The point is the full-data fit, not the bootstrap median; an interval must still contain it.
    flat = loss.ravel()
    plo, phi = np.minimum(plo, flat), np.maximum(phi, flat)
    lo, hi = np.minimum(lo, plo), np.maximum(hi, phi)
    r = lambda x: x.reshape(shape)  # noqa: E731
    return Intervals(loss, r(plo), r(phi), r(lo), r(hi), level, sigma, **extra)
