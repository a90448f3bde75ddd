"""The schedule a fitted curve law says is best: the non-increasing rate that minimises the predicted final loss.

Luo et al. 2025 (Sec. 5, src/optimization.py) optimise the multi-power law's L(T) over every rate after the
warmup, eta_t = eta_max - cumsum(delta), delta >= 0, by projected Adam. Here the rate after the warmup is
linear between K knots (dense towards the end, where the optimum bends), their values

    v_i = eta_min + (eta_max - eta_min) exp(-(y_1 + ... + y_i)),   y_i >= 0,

non-increasing from the peak by construction, and L-BFGS-B (box bounds y >= 0) minimises the law's log L(T)
with the gradient from JAX, through the exact step-by-step sums (no merging: the schedule is the variable).
The warmup and the peak are kept from a reference schedule (the one compared against, e.g. the cosine the
trainer would run). The result is a `Schedule` whose knots the trainer runs (`schedules.train_overrides`,
`scalefit train --schedule-file`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from scalefit.fitting.curvefit import CurveFit
from scalefit.fitting.predict import Intervals
from scalefit.fitting.schedules import Schedule, from_knots


def dense_arrays(rates, warmup: int, flat_warmup: bool, N=None) -> dict:
    """A curve law's arrays for the single point after all len(rates) updates, one node per step (jnp, so
    the rates can be differentiated)."""
    r = jnp.asarray(rates)
    if flat_warmup and warmup >= 2:
        r = r.at[:warmup].set(r[warmup - 1])
    T = r.shape[0]
    area = jnp.concatenate([jnp.zeros(1, r.dtype), jnp.cumsum(r)])  # [T + 1]
    k = jnp.arange(1, T)
    return {"N": jnp.full(1, jnp.nan if N is None else float(N)), "log_updates": jnp.log(jnp.full(1, float(T))),
            "log_area": jnp.log(area[T:T + 1]), "seg": jnp.zeros(T - 1, jnp.int32), "weight": r[:-1] - r[1:],
            "log_eta": jnp.log(jnp.maximum(r[1:], 1e-300)), "log_s": jnp.log(area[T] - area[1:T]),
            "log_steps": jnp.log((T - k).astype(r.dtype))}


@dataclass(frozen=True)
class Optimised:
    """An optimised schedule and what the law predicts for it."""

    schedule: Schedule  # the rate of every step (warmup kept from the reference)
    predicted: Intervals  # final loss, with the law's and one run's intervals
    reference: Schedule  # the schedule it was optimised against (warmup and peak taken from it)
    reference_predicted: Intervals  # the law's final loss for the reference
    iterations: int  # L-BFGS-B iterations
    converged: bool  # L-BFGS-B reported convergence


def optimise_schedule(fit: CurveFit, reference: Schedule, *, N: float | None = None, min_ratio: float = 1e-3,
                      n_knots: int = 64, max_iter: int = 500) -> Optimised:
    """The non-increasing schedule of len(reference) steps, with the reference's warmup and peak, whose final
    loss the fitted law predicts lowest (rates in [min_ratio x peak, peak] after the warmup)."""
    from scipy.optimize import minimize

    T, W = reference.steps, max(reference.warmup, 1)
    if T - W < 2:
        raise ValueError(f"reference schedule {reference.label!r}: nothing after its warmup ({W} of {T} steps) "
                         "to optimise")
    peak, lo = reference.peak, reference.peak * float(min_ratio)
    if not 0 < min_ratio < 1:
        raise ValueError(f"min_ratio must be in (0, 1), got {min_ratio}")
    # Knots from the warmup's end to the last step, spaced like (1 - u)^2: dense where the decay bends.
    u = np.linspace(0.0, 1.0, int(n_knots) + 1)
    knot_steps = np.unique(np.round(T - 1 - (T - W) * (1 - u) ** 2).astype(int))  # [K+1], from W-1 to T-1
    knot_steps = knot_steps[knot_steps >= W - 1]
    family = fit.family
    if family.reads_n and N is None:
        raise ValueError(f"{family.name} depends on the model size: give N")
    theta = family.from_params(fit.result.point()[0])  # every parameter, pinned ones included

    def rates_of(y):
        v = lo + (peak - lo) * jnp.exp(-jnp.cumsum(y))  # [K], non-increasing
        values = jnp.concatenate([jnp.full(1, peak), v])  # the first knot (end of warmup) at the peak
        return jnp.concatenate([warm, jnp.interp(steps_after, jnp.asarray(knot_steps, jnp.float64), values)])

    def objective(y):
        data = dense_arrays(rates_of(y), W, family.spec.flat_warmup, N)
        return family.log_loss(jnp.asarray(theta), data)[0]

    with jax.enable_x64(True):
        warm = jnp.asarray(reference.rates[:W], jnp.float64)
        steps_after = jnp.arange(W, T, dtype=jnp.float64)
        vg = jax.jit(jax.value_and_grad(objective))
        fun = lambda y: tuple(np.asarray(x, float) for x in vg(jnp.asarray(y, jnp.float64)))  # noqa: E731
        y0 = np.full(len(knot_steps) - 1, 1e-3)
        res = minimize(fun, y0, jac=True, method="L-BFGS-B", bounds=[(0.0, 50.0)] * len(y0),
                       options={"maxiter": int(max_iter), "ftol": 1e-15, "gtol": 1e-12})
        values = np.concatenate([[peak], lo + (peak - lo) * np.exp(-np.cumsum(res.x))])
    knots = [(s, float(r)) for s, r in enumerate(reference.rates[:W - 1])] + list(zip(knot_steps.tolist(), values))
    sched = from_knots(knots, T, warmup=reference.warmup, label=f"optimised for {fit.result.law.name} ({T} steps)")
    return Optimised(schedule=sched, predicted=fit.predict(sched, [T], N=N), reference=reference,
                     reference_predicted=fit.predict(reference, [T], N=N), iterations=int(res.nit),
                     converged=bool(res.success))


__all__ = ["Optimised", "dense_arrays", "optimise_schedule"]
