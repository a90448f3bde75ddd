"""Inference-aware allocation: the cheapest model that reaches a loss when it will also serve tokens.

Works on any loss function L(N, D), vectorised over arrays (a fitted law:
`lambda N, D: law.predict(params, N=N, D=D)`). Conventions: N is whatever parameter count the law was
fitted with; training FLOPs C = D F(N) with F(N) = 6N unless a `ComputeModel` says otherwise
(`scalefit.fitting.compute`); loss in nats per token.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from scalefit.fitting.compute import SIX_ND, ComputeModel
from scalefit.fitting.estimate import Estimate
from scalefit.fitting.optimum import Allocation

LossFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # L(N, D) -> loss (nats/token), arrays broadcast


def tokens_for_loss(loss_fn: LossFn, N, target_loss: float, d_max: float = 1e30, iters: int = 200):
    """Training tokens D with L(N, D) = target_loss (L decreasing in D), for each N (arrays broadcast);
    inf where the target is out of reach at that N even with `d_max` tokens.

    Bisection in log D between one token and `d_max`, every N at once.
    """
    N = np.asarray(N, float)
    lo, hi = np.zeros_like(N), np.full_like(N, math.log(d_max))
    g = lambda x: np.asarray(loss_fn(N, np.exp(x)), float) - target_loss  # noqa: E731
    reach, one = g(hi) < 0, g(lo) <= 0
    for _ in range(iters):  # 200 halvings of a 69-wide interval reach float64 resolution
        mid = 0.5 * (lo + hi)
        above = g(mid) > 0
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    D = np.where(one, 1.0, np.exp(0.5 * (lo + hi)))
    D = np.where(reach, D, np.inf)
    return float(D) if D.ndim == 0 else D


def inference_aware_optimal(
    loss_fn: LossFn,
    target_loss: float,
    inference_tokens: float,
    n_bounds: tuple[float, float] = (1e3, 1e16),
    compute: ComputeModel = SIX_ND,
    inference_fraction: float = 1.0 / 3.0,
    n_grid: int = 801,
    passes: int = 3,
) -> Allocation:
    """Cheapest (N, D_train) reaching a target loss when the model will also serve D_inf tokens.

    Sardana et al. 2023, "Beyond Chinchilla-Optimal: Accounting for Inference in Language Model
    Scaling Laws": minimise total FLOPs 6 N D_train + 2 N D_inf subject to L(N, D_train) = target.
    Under another count of training FLOPs, C_train = D_train F(N) (`compute`), a served token costs
    `inference_fraction` F(N): the forward pass, 2N of 6N.
    For each N the constraint fixes D_train(N) (`tokens_for_loss`), leaving a 1-D search over log N:
    an `n_grid`-point grid, refined `passes` times inside the best cell (all points at once). With
    D_inf = 0 this is the Chinchilla-optimal point for the compute that reaches the target; more
    inference tokens shift the optimum to a smaller N trained on more tokens.
    """
    target_loss = float(target_loss)
    if not math.isfinite(target_loss):
        raise ValueError(f"target_loss must be finite, got {target_loss!r}")
    d_inf = float(inference_tokens)
    if not math.isfinite(d_inf) or d_inf < 0:
        raise ValueError(f"inference_tokens must be finite and >= 0, got {inference_tokens!r}")
    if not 0 <= inference_fraction <= 1:
        raise ValueError(f"inference_fraction must be in [0, 1], got {inference_fraction!r}")
    lo, hi = math.log(n_bounds[0]), math.log(n_bounds[1])
    if math.isinf(tokens_for_loss(loss_fn, math.exp(hi), target_loss)):
        raise ValueError(
            f"target loss {target_loss} is unreachable even with N = {n_bounds[1]:.3g} and unlimited data")

    def log_total(x):  # x [G] log N -> log lifetime FLOPs [G]; inf where the target is out of reach
        N = np.exp(x)
        D = tokens_for_loss(loss_fn, N, target_loss)
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(D), np.log(compute.per_token(N) * (D + inference_fraction * d_inf)), np.inf)

    for _ in range(passes):
        xs = np.linspace(lo, hi, n_grid)
        i = int(np.argmin(log_total(xs)))
        lo, hi = xs[max(i - 1, 0)], xs[min(i + 1, n_grid - 1)]
    N = math.exp(0.5 * (lo + hi))
    D = tokens_for_loss(loss_fn, N, target_loss)
    F = float(compute.per_token(N))
    return Allocation(
        N=Estimate(N), D=Estimate(D), loss=Estimate(float(loss_fn(N, D))), tokens_per_param=Estimate(D / N),
        C=F * D, compute=compute.describe(), method="inference-aware",
        notes=(f"min F(N) (D_train + {inference_fraction:.3g} D_inf) s.t. L(N, D_train) = {target_loss:g}, "
               f"{compute.describe()}; D_inf = {d_inf:.3g} tokens",),
        C_inference=inference_fraction * F * d_inf,
    )
