"""Decisions from a fitted law: compute-optimal and inference-aware allocation, model shape, cost.

Everything here works on plain inputs: a mapping of named law parameters
(``{"E", "A", "B", "alpha", "beta"}`` for the Chinchilla form) or any loss function ``L(N, D)``.
Conventions: N is whatever parameter count the law was fitted with (Chinchilla: total parameters,
embeddings included); C = D F(N) training FLOPs with F(N) = 6N unless a `ComputeModel` says otherwise
(forward + backward matmuls, Kaplan et al. 2020 Sec. 2.1; `scalefit.fitting.compute`); loss in nats per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from scalefit.conventions import NKind
from scalefit.fitting.compute import SIX_ND, ComputeModel

LossFn = Callable[[float, float], float]  # L(N, D) -> loss (nats/token)

CHINCHILLA_KEYS = ("E", "A", "B", "alpha", "beta")


@dataclass(frozen=True)
class Allocation:
    """One point (N, D) chosen for a budget, with what the law predicts there."""

    N: float  # parameters (same convention as the law's N)
    D: float  # training tokens
    C: float  # training FLOPs, = D F(N) under the allocation's ComputeModel
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


def chinchilla_split(E, A, B, alpha, beta, C, compute: ComputeModel = SIX_ND):
    """Closed-form compute-optimal (N, D) of the Chinchilla law under C = k N^gamma D; arrays broadcast.

    Setting d/dN [A N^-alpha + B (k N^gamma / C)^beta] = 0 gives
        N_opt = (alpha A / (gamma beta B))^(1 / (alpha + gamma beta)) (C/k)^(beta / (alpha + gamma beta)),
        D_opt = C / (k N_opt^gamma),
    which for k = 6, gamma = 1 is Hoffmann et al. 2022, eq. 4: N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b,
    G = (alpha A / (beta B))^(1/(alpha+beta)), a = beta/(alpha+beta), b = alpha/(alpha+beta).
    E does not move the optimum; it is taken so every law parameter goes in by name.
    """
    if compute.m:
        raise ValueError(f"no closed form under {compute.describe()}; use optimal_split")
    k, g = compute.k, compute.gamma
    s = alpha + g * beta
    N = (alpha * A / (g * beta * B)) ** (1.0 / s) * (np.asarray(C, float) / k) ** (beta / s)
    return N, np.asarray(C, float) / (k * N**g)


def chinchilla_optimal(params: Mapping[str, float], C: float, compute: ComputeModel = SIX_ND) -> Allocation:
    """Compute-optimal allocation of the Chinchilla law for a budget C (`chinchilla_split`; numeric
    when the compute model has a second term)."""
    p = _require(params, CHINCHILLA_KEYS)
    C = _positive("C", C)
    if compute.m:
        return optimal_allocation(lambda N, D: chinchilla_loss(p, N, D), C, compute, method="numeric")
    N, D = (float(x) for x in chinchilla_split(*(p[k] for k in CHINCHILLA_KEYS), C, compute))
    return Allocation(
        N=N, D=D, C=C, loss=float(chinchilla_loss(p, N, D)), tokens_per_param=D / N,
        method="closed-form", notes=f"Chinchilla law, {compute.describe()}",
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


def _default_bounds(C):
    # D/N between e^-24 and e^24 (~4e-11 .. 3e10) at 6 FLOPs per parameter-token brackets every
    # sensible optimum; the convention's own F(N) moves it by far less than e^12.
    mid = 0.5 * np.log(np.asarray(C, float) / 6.0)
    return mid - 12.0, mid + 12.0


def optimal_allocation(
    loss_fn: LossFn,
    C: float,
    compute: ComputeModel = SIX_ND,
    n_bounds: tuple[float, float] | None = None,
    method: str = "numeric",
) -> Allocation:
    """Compute-optimal (N, D) for any loss L(N, D) under C = D F(N) (F(N) = 6N by default), numerically.

    Substituting D = C / F(N) leaves a 1-D problem min_x L(e^x, C / F(e^x)) over x = log N, solved
    by a grid plus scipy's bounded Brent search. For the Chinchilla law it matches the closed form
    of Hoffmann et al. (2022) to solver precision.
    """
    C = _positive("C", C)
    lo, hi = (math.log(n_bounds[0]), math.log(n_bounds[1])) if n_bounds else (float(x) for x in _default_bounds(C))

    def f(x: float) -> float:
        N = math.exp(x)
        return float(loss_fn(N, float(compute.tokens(C, N))))

    N = math.exp(_argmin_log_n(f, lo, hi))
    D = float(compute.tokens(C, N))
    return Allocation(
        N=N, D=D, C=C, loss=float(loss_fn(N, D)), tokens_per_param=D / N, method=method,
        notes=f"minimised L(N, D) over log N subject to {compute.describe()}",
    )


def optimal_split(law, params: np.ndarray, C, compute: ComputeModel = SIX_ND, n_grid: int = 241,
                  iters: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Compute-optimal (N, D) for every row of law parameters `params` [B, K] and budget in `C` [m].

    `law` is a `scalefit.fitting.laws.Law` in (N, D). The Chinchilla law under a single-power compute model
    takes the closed form (`chinchilla_split`); any other pair is minimised over x = log N on an
    `n_grid`-point grid per budget (all rows at once), then by golden-section search inside the best
    cell (`iters` steps shrink it by 0.618^iters). Returns N, D [B, m]; NaN where the grid's minimum
    lies on its edge (the optimum is outside D/N in e^-24..e^24).
    """
    P = np.atleast_2d(np.asarray(params, float))  # [B, K]
    C = np.atleast_1d(np.asarray(C, float))  # [m]
    if law.name == "chinchilla" and not compute.m:
        cols = [P[:, [law.param_names.index(k)]] for k in CHINCHILLA_KEYS]  # 5 x [B, 1]
        return chinchilla_split(*cols, C[None, :], compute)
    lo, hi = _default_bounds(C)  # [m] each
    t = np.linspace(0.0, 1.0, n_grid)
    x = lo[:, None] + (hi - lo)[:, None] * t[None, :]  # [m, G]
    N = np.exp(x)
    L = law.predict_many(P, N=N, D=compute.tokens(C[:, None], N))  # [B, m, G]
    i = np.argmin(np.where(np.isfinite(L), L, np.inf), axis=-1)  # [B, m]
    edge = (i == 0) | (i == n_grid - 1)
    step = (hi - lo)[None, :] / (n_grid - 1)  # [1, m]
    a, b = x[None, :, 0] + (i - 1) * step, x[None, :, 0] + (i + 1) * step  # [B, m] bracket

    def f(z):  # z [B, m] -> L [B, m], row b of P at row b of z
        n = np.exp(z)
        return law.predict_paired(P, N=n, D=compute.tokens(C[None, :], n))

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
    compute: ComputeModel = SIX_ND,
    inference_fraction: float = 1.0 / 3.0,
) -> Allocation:
    """Cheapest (N, D_train) reaching a target loss when the model will also serve D_inf tokens.

    Sardana et al. 2023, "Beyond Chinchilla-Optimal: Accounting for Inference in Language Model
    Scaling Laws": minimise total FLOPs 6 N D_train + 2 N D_inf subject to L(N, D_train) = target.
    Under another count of training FLOPs, C_train = D_train F(N) (`compute`), a served token costs
    `inference_fraction` F(N): the forward pass, 2N of 6N.
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
    if not 0 <= inference_fraction <= 1:
        raise ValueError(f"inference_fraction must be in [0, 1], got {inference_fraction!r}")
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
        if not math.isfinite(D):
            return math.inf
        return math.log(float(compute.per_token(N)) * (D + inference_fraction * d_inf))

    N = math.exp(_argmin_log_n(log_total, lo, hi))
    D = tokens_for_loss(loss_fn, N, target_loss)
    F = float(compute.per_token(N))
    return Allocation(
        N=N, D=D, C=F * D, loss=float(loss_fn(N, D)), tokens_per_param=D / N,
        method="inference-aware",
        notes=(f"min F(N) (D_train + {inference_fraction:.3g} D_inf) s.t. L(N, D_train) = {target_loss:g}, "
               f"{compute.describe()}; D_inf = {d_inf:.3g} tokens"),
        C_inference=inference_fraction * F * d_inf,
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
    max_d_model: int = 65536, n_kind: str = "total",
) -> ModelShape:
    """The shape on a simple ladder whose parameter count is closest to N_target (in log N).

    n_kind says which count N_target is: "total" (embedding included) or "non-embedding" / "active"
    (a dense shape's non-embedding count).

    Ladder: d_model = head_dim * k (k = 1, 2, ...), n_layer = max(1, round(d_model / aspect_ratio)),
    n_head = k. Kaplan et al. (2020, Fig. 5) found loss nearly flat for aspect ratios d_model/n_layer
    between about 20 and 200, so the exact ratio matters little; 64 keeps small models deep enough.
    """
    N_target = _positive("N_target", N_target)
    n_kind = NKind.parse(n_kind)
    best = None
    for d in range(head_dim, max_d_model + 1, head_dim):
        L = max(1, round(d / aspect_ratio))
        n = shape_params(d, L, vocab_size) if n_kind is NKind.TOTAL else 12 * L * d * d
        err = abs(math.log(n / N_target))
        if best is None or err < best[0]:
            best = (err, d, L, n)
        if n > 2 * N_target:
            break
    _, d, L, _ = best
    return ModelShape(d_model=d, n_layer=L, n_head=d // head_dim, vocab_size=vocab_size,
                      N=shape_params(d, L, vocab_size), N_non_embedding=12 * L * d * d)


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
