"""Compute-optimal allocation of a fitted law: the (N, D) a budget C buys, and the `Allocation` result.

A budget is spent as the runs counted theirs: C = D F(N) under the fit's `ComputeModel`
(`scalefit.fitting.compute`; F(N) = 6N for C = 6ND). For each budget the optimum minimises
L(N, C / F(N), *conditions) over N. A law with a closed form declares it (`Law.optimum`; the Chinchilla
law, Hoffmann et al. 2022, eq. 4); any other law in N and D is searched numerically, for every bootstrap
refit at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from scalefit.fitting.compute import SIX_ND, ComputeModel
from scalefit.fitting.estimate import Estimate
from scalefit.fitting.laws import Law


@dataclass(frozen=True)
class Allocation:
    """The point (N, D) chosen for a budget, with what the law predicts there; every number an `Estimate`
    (with bootstrap intervals when the fit has them)."""

    N: Estimate  # parameters, in the fit's N kind
    D: Estimate  # training tokens
    loss: Estimate  # predicted loss at (N, D), nats/token (each refit at its own optimum)
    tokens_per_param: Estimate  # D / N
    C: float  # training FLOPs, = D F(N) under `compute`
    compute: str  # how C maps to (N, D), e.g. "C = 6 N D"
    method: str  # "closed-form", "numeric", "inference-aware", ...
    given: Mapping[str, float] = field(default_factory=dict)  # conditions held fixed (e.g. U)
    notes: tuple[str, ...] = ()  # conventions and caveats, one sentence each
    C_inference: float = 0.0  # FLOPs spent serving tokens after training (inference-aware plans)

    def __str__(self) -> str:
        given = "".join(f", {k} = {v:.4g}" for k, v in self.given.items())
        return (f"{self.method}: N = {self.N:.4g}, D = {self.D:.4g} tokens ({self.tokens_per_param.value:.1f} "
                f"tokens/param), C = {self.C:.4g} FLOPs ({self.compute}{given}), predicted loss "
                f"{self.loss:.4f} nats/token")


def default_bounds(C):
    """log N search interval per budget: D/N between e^-24 and e^24 (~4e-11 .. 3e10) at 6 FLOPs per
    parameter-token brackets every sensible optimum; a fitted F(N) moves it by far less than e^12."""
    mid = 0.5 * np.log(np.asarray(C, float) / 6.0)
    return mid - 12.0, mid + 12.0


def optimal_split(law: Law, params, C, compute: ComputeModel = SIX_ND, given: Mapping[str, float] | None = None,
                  n_grid: int = 241, iters: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Compute-optimal (N, D) for every row of reported parameters `params` [B, K] and budget `C` [m].

    The law's closed form when it has one under `compute` (`Law.optimum`); otherwise min over
    x = log N of L(e^x, C / F(e^x), *given) on an `n_grid`-point grid per budget (all rows at once),
    then golden-section search inside the best cell (`iters` steps shrink it by 0.618^iters).
    `given` holds the law's conditions (`Law.conditions`, e.g. U). Returns N, D [B, m]; NaN where the
    grid's minimum lies on its edge (the optimum is outside D/N in e^-24..e^24).
    """
    if not law.can_allocate:
        raise ValueError(f"allocation needs a law in N and D; {law.name} ({law.formula}) reads "
                         f"{', '.join(law.inputs)}")
    given = dict(given or {})
    missing = [c for c in law.conditions if c not in given]
    if missing:
        raise ValueError(f"law {law.name} also reads {', '.join(missing)}: give {missing[0]}=... to allocate")
    extra = sorted(set(given) - set(law.conditions))
    if extra:
        raise ValueError(f"law {law.name} does not read {', '.join(extra)}")
    P = np.atleast_2d(np.asarray(params, float))  # [B, K]
    C = np.atleast_1d(np.asarray(C, float))  # [m]
    if law.optimum is not None and not law.conditions:
        closed = law.optimum(P, C, compute)
        if closed is not None:
            return closed
    lo, hi = default_bounds(C)  # [m] each
    t = np.linspace(0.0, 1.0, n_grid)
    x = lo[:, None] + (hi - lo)[:, None] * t[None, :]  # [m, G]
    N = np.exp(x)
    L = law.predict_many(P, N=N, D=compute.tokens(C[:, None], N), **given)  # [B, m, G]
    i = np.argmin(np.where(np.isfinite(L), L, np.inf), axis=-1)  # [B, m]
    edge = (i == 0) | (i == n_grid - 1)
    step = (hi - lo)[None, :] / (n_grid - 1)  # [1, m]
    a, b = x[None, :, 0] + (i - 1) * step, x[None, :, 0] + (i + 1) * step  # [B, m] bracket

    def f(z):  # z [B, m] -> L [B, m], row b of P at row b of z
        n = np.exp(z)
        return law.predict_paired(P, N=n, D=compute.tokens(C[None, :], n), **given)

    r = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        left = fc < fd  # the minimum lies in [a, d]
        a, b = np.where(left, a, c), np.where(left, d, b)
        c_new, d_new = b - r * (b - a), a + r * (b - a)
        new = f(np.where(left, c_new, d_new))
        c, d, fc, fd = (np.where(left, c_new, d), np.where(left, c, d_new),
                        np.where(left, new, fd), np.where(left, fc, new))
    Nopt = np.where(edge, np.nan, np.exp(0.5 * (a + b)))
    return Nopt, compute.tokens(C[None, :], Nopt)


def allocate(law: Law, point, samples, C: float, compute: ComputeModel = SIX_ND, *, level: float = 0.95,
             given: Mapping[str, float] | None = None) -> Allocation:
    """The compute-optimal `Allocation` at budget C for parameters `point` ([K], [1, K], or a mapping by
    name), with bootstrap intervals from `samples` [B, K] (None or empty: point values only).

    Each refit is allocated at its own optimum, so the interval of N_opt is the spread of the optimum
    itself, and `loss` is each refit's optimal loss.
    """
    return allocate_many(law, point, samples, [C], compute, level=level, given=given)[0]


def allocate_many(law: Law, point, samples, C, compute: ComputeModel = SIX_ND, *, level: float = 0.95,
                  given: Mapping[str, float] | None = None) -> tuple[Allocation, ...]:
    """`allocate` at every budget in `C` [m], all budgets and refits solved together."""
    C = np.atleast_1d(np.asarray(C, float))  # [m]
    if not np.all(np.isfinite(C) & (C > 0)):
        raise ValueError(f"C must be finite numbers > 0, got {C.tolist()}")
    given = {k: _positive(k, v) for k, v in (given or {}).items()}
    point = _as_row(law, point)  # [1, K]
    N0, D0 = (x[0] for x in optimal_split(law, point, C, compute, given))  # [m] each
    bad = ~np.isfinite(N0)
    if bad.any():
        odd = [f"{k} = {v:g} is outside the law's range [{lo:g}, {hi:g}]" for k, v in zip(law.param_names, point[0])
               for lo, hi in [law.bounds.get(k, (-np.inf, np.inf))] if not lo <= v <= hi]
        raise ValueError(f"the optimum of {law.name} at C = {C[bad][0]:.3g} lies outside D/N in e^-24..e^24"
                         + (f" (law parameter {odd[0]})" if odd else ""))
    L0 = law.predict_paired(np.repeat(point, len(C), axis=0), N=N0, D=D0, **given)  # [m]
    rows = np.empty((0, point.shape[1])) if samples is None else np.atleast_2d(np.asarray(samples, float))
    if len(rows):
        Ns, Ds = optimal_split(law, rows, C, compute, given)  # [B, m]
        Ls = law.predict_paired(rows, N=Ns, D=Ds, **given)  # [B, m]
    closed = law.optimum is not None and not law.conditions and law.optimum(point, C[:1], compute) is not None
    out = []
    for j, c in enumerate(C):
        draws = (lambda x: None) if not len(rows) else (lambda x: x[:, j])  # noqa: E731
        est = {"N": Estimate.of(N0[j], draws(Ns) if len(rows) else None, level),
               "D": Estimate.of(D0[j], draws(Ds) if len(rows) else None, level),
               "loss": Estimate.of(L0[j], draws(Ls) if len(rows) else None, level),
               "tokens_per_param": Estimate.of(D0[j] / N0[j], draws(Ds / Ns) if len(rows) else None, level)}
        out.append(Allocation(**est, C=float(c), compute=compute.describe(),
                              method="closed-form" if closed else "numeric", given=given))
    return tuple(out)


def _as_row(law: Law, point) -> np.ndarray:
    """Parameters as one row [1, K] in the law's order; a mapping is checked by name."""
    if isinstance(point, Mapping):
        missing = [k for k in law.param_names if k not in point]
        if missing:
            raise ValueError(f"law parameters lack {missing}; law {law.name} needs {list(law.param_names)}, "
                             f"got {sorted(point)}")
        point = [float(point[k]) for k in law.param_names]
        for k, v in zip(law.param_names, point):
            lo, hi = law.bounds.get(k, (-np.inf, np.inf))
            if not (math.isfinite(v) and lo <= v <= hi):
                raise ValueError(f"law parameter {k} = {v!r} is outside the law's range [{lo:g}, {hi:g}]")
    row = np.atleast_2d(np.asarray(point, float))
    if row.shape != (1, len(law.param_names)) or not np.all(np.isfinite(row)):
        raise ValueError(f"law {law.name} needs {len(law.param_names)} finite parameters "
                         f"({', '.join(law.param_names)}), got {row.tolist()}")
    return row


def _positive(name: str, value) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value
