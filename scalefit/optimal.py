"""Decisions from a fitted law: compute-optimal and inference-aware allocation, model shape, cost.

Everything here works on plain inputs: a mapping of named law parameters
(``{"E", "A", "B", "alpha", "beta"}`` for the Chinchilla form) or any loss function ``L(N, D)``.
Conventions: N is whatever parameter count the law was fitted with (Chinchilla: total parameters,
embeddings included); C = k N D training FLOPs with k = 6 unless stated (forward + backward
matmuls, Kaplan et al. 2020 Sec. 2.1); loss in nats per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
from scipy.optimize import brentq, minimize_scalar

LossFn = Callable[[float, float], float]  # L(N, D) -> loss (nats/token)

CHINCHILLA_KEYS = ("E", "A", "B", "alpha", "beta")


@dataclass(frozen=True)
class Allocation:
    """One point (N, D) chosen for a budget, with what the law predicts there."""

    N: float  # parameters (same convention as the law's N)
    D: float  # training tokens
    C: float  # training FLOPs, = flops_per_param_token * N * D
    loss: float  # predicted loss at (N, D), nats/token
    tokens_per_param: float  # D / N
    method: str  # how it was found: "closed-form", "numeric", "inference-aware", ...
    notes: str = ""  # conventions and caveats, human readable
    C_inference: float = 0.0  # FLOPs spent serving D_inference tokens (2 N per token); 0 if not asked


def _require(params: Mapping[str, float], keys: tuple[str, ...]) -> dict[str, float]:
    missing = [k for k in keys if k not in params]
    if missing:
        raise KeyError(f"law parameters lack {missing}; expected keys {list(keys)}, got {sorted(params)}")
    out = {k: float(params[k]) for k in keys}
    bad = [k for k, v in out.items() if not math.isfinite(v) or (k != "E" and v <= 0)]
    if bad:
        raise ValueError(f"law parameters {bad} must be finite and > 0 (E finite); got {out}")
    return out


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def chinchilla_loss(params: Mapping[str, float], N, D):
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2). Vectorised over N, D."""
    p = _require(params, CHINCHILLA_KEYS)
    return p["E"] + p["A"] / np.power(N, p["alpha"]) + p["B"] / np.power(D, p["beta"])


def chinchilla_exponents(params: Mapping[str, float]) -> tuple[float, float]:
    """Compute-optimal exponents (a, b) with N_opt ~ C^a, D_opt ~ C^b.

    a = beta / (alpha + beta), b = alpha / (alpha + beta)  (Hoffmann et al. 2022, eq. 4); a + b = 1.
    """
    p = _require(params, CHINCHILLA_KEYS)
    s = p["alpha"] + p["beta"]
    return p["beta"] / s, p["alpha"] / s


def chinchilla_optimal(
    params: Mapping[str, float], C: float, flops_per_param_token: float = 6.0
) -> Allocation:
    """Closed-form compute-optimal allocation of the Chinchilla law (Hoffmann et al. 2022, eq. 4).

    Minimising E + A/N^alpha + B/D^beta subject to C = k N D (k = 6) gives
        G = (alpha A / (beta B))^(1 / (alpha + beta)),
        N_opt = G (C/k)^a,   D_opt = G^-1 (C/k)^b,   a = beta/(alpha+beta), b = alpha/(alpha+beta).
    """
    p = _require(params, CHINCHILLA_KEYS)
    C = _positive("C", C)
    k = _positive("flops_per_param_token", flops_per_param_token)
    a, b = chinchilla_exponents(p)
    G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1.0 / (p["alpha"] + p["beta"]))
    N = G * (C / k) ** a
    D = (C / k) ** b / G
    return Allocation(
        N=N, D=D, C=C, loss=float(chinchilla_loss(p, N, D)), tokens_per_param=D / N,
        method="closed-form", notes=f"Chinchilla law, C = {k:g} N D",
    )


def _argmin_log_n(f: Callable[[float], float], lo: float, hi: float, n_grid: int = 801) -> float:
    """Global minimiser of f over log N in [lo, hi]: a coarse grid, then Brent inside the best cell.

    The grid guards against kinks and flat tails (the data-constrained law has both) that a bare
    bounded Brent search can be led astray by.
    """
    xs = np.linspace(lo, hi, n_grid)
    vals = np.array([f(x) for x in xs])
    if not np.isfinite(vals).any():
        raise ValueError("loss function is not finite anywhere on the search interval")
    i = int(np.nanargmin(np.where(np.isfinite(vals), vals, np.inf)))
    if i in (0, n_grid - 1):
        raise ValueError(
            f"optimum at the edge of the search interval N in [{math.exp(lo):.3g}, {math.exp(hi):.3g}];"
            " widen n_bounds"
        )
    res = minimize_scalar(f, bounds=(xs[i - 1], xs[i + 1]), method="bounded", options={"xatol": 1e-10})
    return float(res.x) if res.fun <= vals[i] else float(xs[i])


def _default_bounds(C: float, k: float) -> tuple[float, float]:
    # D/N between e^-24 and e^24 (~4e-11 .. 3e10) brackets every sensible optimum.
    mid = 0.5 * math.log(C / k)
    return mid - 12.0, mid + 12.0


def optimal_allocation(
    loss_fn: LossFn,
    C: float,
    flops_per_param_token: float = 6.0,
    n_bounds: tuple[float, float] | None = None,
    method: str = "numeric",
) -> Allocation:
    """Compute-optimal (N, D) for any loss L(N, D) under C = k N D, found numerically.

    Substituting D = C / (k N) leaves a 1-D problem min_x L(e^x, C / (k e^x)) over x = log N, solved
    by a grid plus scipy's bounded Brent search. For the Chinchilla law it matches the closed form
    of Hoffmann et al. (2022) to solver precision.
    """
    C = _positive("C", C)
    k = _positive("flops_per_param_token", flops_per_param_token)
    lo, hi = (math.log(n_bounds[0]), math.log(n_bounds[1])) if n_bounds else _default_bounds(C, k)

    def f(x: float) -> float:
        N = math.exp(x)
        return float(loss_fn(N, C / (k * N)))

    N = math.exp(_argmin_log_n(f, lo, hi))
    D = C / (k * N)
    return Allocation(
        N=N, D=D, C=C, loss=float(loss_fn(N, D)), tokens_per_param=D / N, method=method,
        notes=f"minimised L(N, C/({k:g} N)) over log N",
    )


def tokens_for_loss(loss_fn: LossFn, N: float, target_loss: float, d_max: float = 1e30) -> float:
    """Training tokens D with L(N, D) = target_loss (L decreasing in D); inf if unreachable at this N."""
    g = lambda x: float(loss_fn(N, math.exp(x))) - target_loss  # noqa: E731
    hi = math.log(d_max)
    if g(hi) >= 0:
        return math.inf
    lo = 0.0  # one token
    if g(lo) <= 0:
        return 1.0
    return math.exp(brentq(g, lo, hi, xtol=1e-12, rtol=1e-12))


def inference_aware_optimal(
    loss_fn: LossFn,
    target_loss: float,
    inference_tokens: float,
    n_bounds: tuple[float, float] = (1e3, 1e16),
    train_flops_per_param_token: float = 6.0,
    inference_flops_per_param_token: float = 2.0,
) -> Allocation:
    """Cheapest (N, D_train) reaching a target loss when the model will also serve D_inf tokens.

    Sardana et al. 2023, "Beyond Chinchilla-Optimal: Accounting for Inference in Language Model
    Scaling Laws": minimise total FLOPs 6 N D_train + 2 N D_inf subject to L(N, D_train) = target.
    For each N the constraint fixes D_train(N) (root of L(N, D) = target), leaving a 1-D search over
    log N. With D_inf = 0 this is the Chinchilla-optimal point for the compute that reaches the
    target; more inference tokens shift the optimum to a smaller N trained on more tokens.
    """
    target_loss = float(target_loss)
    if not math.isfinite(target_loss):
        raise ValueError(f"target_loss must be finite, got {target_loss!r}")
    d_inf = float(inference_tokens)
    if not math.isfinite(d_inf) or d_inf < 0:
        raise ValueError(f"inference_tokens must be finite and >= 0, got {inference_tokens!r}")
    kt, ki = train_flops_per_param_token, inference_flops_per_param_token
    lo, hi = math.log(n_bounds[0]), math.log(n_bounds[1])
    if math.isinf(tokens_for_loss(loss_fn, math.exp(hi), target_loss)):
        raise ValueError(
            f"target loss {target_loss} is unreachable even with N = {n_bounds[1]:.3g} and unlimited data"
        )
    # Smallest N that can reach the target with unlimited data: below it D_train is infinite.
    if math.isinf(tokens_for_loss(loss_fn, math.exp(lo), target_loss)):
        feasible = lambda x: math.isfinite(tokens_for_loss(loss_fn, math.exp(x), target_loss))  # noqa: E731
        a, b = lo, hi
        for _ in range(200):
            m = 0.5 * (a + b)
            a, b = (a, m) if feasible(m) else (m, b)
        lo = b + 1e-9

    def log_total(x: float) -> float:
        N = math.exp(x)
        D = tokens_for_loss(loss_fn, N, target_loss)
        return math.log(kt * N * D + ki * N * d_inf) if math.isfinite(D) else math.inf

    N = math.exp(_argmin_log_n(log_total, lo, hi))
    D = tokens_for_loss(loss_fn, N, target_loss)
    return Allocation(
        N=N, D=D, C=kt * N * D, loss=float(loss_fn(N, D)), tokens_per_param=D / N,
        method="inference-aware",
        notes=(f"min {kt:g} N D_train + {ki:g} N D_inf s.t. L(N, D_train) = {target_loss:g}; "
               f"D_inf = {d_inf:.3g} tokens"),
        C_inference=ki * N * d_inf,
    )


# ---------------------------------------------------------------------------------------------
# Model shape and cost


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer shape and its parameter count under the stated convention."""

    d_model: int  # residual width, a multiple of head_dim
    n_layer: int  # transformer blocks
    n_head: int  # attention heads, d_model // head_dim
    vocab_size: int  # tokenizer vocabulary (tied input/output embedding)
    N: int  # 12 n_layer d_model^2 + vocab_size d_model (embedding included)
    N_non_embedding: int  # 12 n_layer d_model^2 (Kaplan et al. 2020 convention)


def shape_params(d_model: int, n_layer: int, vocab_size: int) -> int:
    """Parameters of a GPT block stack: 12 L d^2 (attention 4 d^2 + MLP 8 d^2 with 4d hidden) plus a
    tied vocab x d embedding. Biases, norms and position embeddings are ignored (< 1% at scale)."""
    return 12 * n_layer * d_model**2 + vocab_size * d_model


def model_shape(
    N_target: float, vocab_size: int = 50257, aspect_ratio: float = 64.0, head_dim: int = 64,
    max_d_model: int = 65536,
) -> ModelShape:
    """The shape on a simple ladder whose parameter count is closest to N_target (in log N).

    Ladder: d_model = head_dim * k (k = 1, 2, ...), n_layer = max(1, round(d_model / aspect_ratio)),
    n_head = k. Kaplan et al. (2020, Fig. 5) found loss nearly flat for aspect ratios d_model/n_layer
    between about 20 and 200, so the exact ratio matters little; 64 keeps small models deep enough.
    """
    N_target = _positive("N_target", N_target)
    best = None
    for d in range(head_dim, max_d_model + 1, head_dim):
        L = max(1, round(d / aspect_ratio))
        n = shape_params(d, L, vocab_size)
        err = abs(math.log(n / N_target))
        if best is None or err < best[0]:
            best = (err, d, L, n)
        if n > 2 * N_target:
            break
    _, d, L, n = best
    return ModelShape(d_model=d, n_layer=L, n_head=d // head_dim, vocab_size=vocab_size, N=n,
                      N_non_embedding=12 * L * d * d)


# Vendor datasheet peak dense (no sparsity) BF16 tensor throughput, FLOP/s per accelerator:
# NVIDIA H100 SXM5 989 TFLOP/s, H200 SXM 989 TFLOP/s, A100 SXM4 312 TFLOP/s, Google TPU v5e 197 TFLOP/s.
PEAK_BF16_FLOPS = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "tpu-v5e": 197e12}


def accelerator_hours(C: float, hardware: str = "h100", mfu: float = 0.4,
                      peak_flops: float | None = None) -> float:
    """Accelerator-hours to spend C FLOPs: C / (peak_flops * mfu * 3600).

    mfu is model FLOPs utilisation (Chowdhery et al. 2022, PaLM, App. B): the fraction of the peak
    that the 6ND model FLOPs actually achieve; 0.3-0.5 is typical for well-tuned dense training.
    """
    C = _positive("C", C)
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu!r}")
    if peak_flops is None:
        if hardware not in PEAK_BF16_FLOPS:
            raise KeyError(f"unknown hardware {hardware!r}; known: {sorted(PEAK_BF16_FLOPS)} "
                           "(or pass peak_flops)")
        peak_flops = PEAK_BF16_FLOPS[hardware]
    return C / (_positive("peak_flops", peak_flops) * mfu * 3600.0)
