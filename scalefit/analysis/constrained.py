"""The data-constrained scaling law of Muennighoff et al. 2023 and its compute-optimal allocation.

"Scaling Data-Constrained Language Models" (NeurIPS 2023), reference code huggingface/datablations
(README and utils/parametric_fit.ipynb). Repeated tokens are worth less than fresh ones and
parameters beyond what the unique data can use are worth less than useful ones; both decay
exponentially in the number of repetitions:

    L(N, D, U) = E + A / N'^alpha + B / D'^beta
    D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)),   U_D = min(U, D),   R_D = D / U_D - 1
    N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)),   U_N = min(N, N_opt(U_D)),  R_N = N / U_N - 1

N_opt(U_D) is the parameter count for which U_D tokens are compute-optimal under the base
Chinchilla law with the same E, A, B, alpha, beta: from D_opt = G^-1 (C/6)^b and N_opt = G (C/6)^a,
N_opt(D) = G (G D)^(beta/alpha) with G = (alpha A / (beta B))^(1/(alpha+beta)).
Parameter keys: E, A, B, alpha, beta, R_D_star, R_N_star.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from scalefit.fitting.compute import SIX_ND, ComputeModel
from scalefit.analysis.allocate import Allocation, _positive, _require, optimal_allocation

CONSTRAINED_KEYS = ("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star")


def _G(p: Mapping[str, float]) -> float:
    return (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1.0 / (p["alpha"] + p["beta"]))


def params_for_tokens(params: Mapping[str, float], D):
    """N_opt(D): the Chinchilla-optimal parameter count for D training tokens, G (G D)^(beta/alpha)."""
    p = _require(params, CONSTRAINED_KEYS[:5])
    G = _G(p)
    return G * np.power(G * np.asarray(D, dtype=float), p["beta"] / p["alpha"])


def _effective(unique, repeats, r_star):
    # Each repetition is worth exp(-1/r_star) of the previous; the geometric-like sum saturates at
    # unique * (1 + r_star) no matter how often the data is repeated.
    return unique + unique * r_star * (1.0 - np.exp(-repeats / r_star))


def effective_data(params: Mapping[str, float], D, U):
    """D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)) with U_D = min(U, D), R_D = D / U_D - 1."""
    p = _require(params, CONSTRAINED_KEYS)
    D, U = np.asarray(D, dtype=float), np.asarray(U, dtype=float)
    U_D = np.minimum(U, D)
    return _effective(U_D, D / U_D - 1.0, p["R_D_star"])


def effective_params(params: Mapping[str, float], N, D, U):
    """N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)) with U_N = min(N, N_opt(U_D)), R_N = N / U_N - 1."""
    p = _require(params, CONSTRAINED_KEYS)
    N = np.asarray(N, dtype=float)
    U_D = np.minimum(np.asarray(U, dtype=float), np.asarray(D, dtype=float))
    U_N = np.minimum(N, params_for_tokens(p, U_D))
    return _effective(U_N, N / U_N - 1.0, p["R_N_star"])


def data_constrained_loss(params: Mapping[str, float], N, D, U):
    """L(N, D, U) = E + A / N'^alpha + B / D'^beta (Muennighoff et al. 2023, eq. 5). Vectorised.

    With the published C4 fit (E = exp(0.6254804), A = exp(6.255414), B = exp(7.3049974),
    alpha = beta = 0.3526596, R_D* = 15.387756, R_N* = 5.309743) L(6.34e9, 242e9, 25e9) = 2.225644.
    """
    p = _require(params, CONSTRAINED_KEYS)
    Np = effective_params(p, N, D, U)
    Dp = effective_data(p, D, U)
    return p["E"] + p["A"] / np.power(Np, p["alpha"]) + p["B"] / np.power(Dp, p["beta"])


def data_constrained_optimal(
    params: Mapping[str, float], C: float, unique_tokens: float, compute: ComputeModel = SIX_ND
) -> Allocation:
    """Compute-optimal (N, D) under C = 6 N D (or `compute`) when only `unique_tokens` distinct tokens exist.

    No closed form (the authors use a grid search); we minimise L(N, C/(6N), U) over log N
    numerically. Published check (Muennighoff et al. 2023, C = 1e22, U = 25e9): N = 7.02e9,
    D = 2.373e11 = 9.49 epochs.
    """
    p = _require(params, CONSTRAINED_KEYS)
    U = _positive("unique_tokens", unique_tokens)
    alloc = optimal_allocation(
        lambda N, D: float(data_constrained_loss(p, N, D, U)), C, compute,
        method="data-constrained",
    )
    epochs = alloc.D / U
    return Allocation(
        N=alloc.N, D=alloc.D, C=alloc.C, loss=alloc.loss, tokens_per_param=alloc.tokens_per_param,
        method="data-constrained",
        notes=f"U = {U:.4g} unique tokens, {epochs:.3g} epochs; {alloc.notes}",
    )


def epochs(allocation: Allocation, unique_tokens: float) -> float:
    """Passes over the unique data that an allocation implies, D / U."""
    return allocation.D / _positive("unique_tokens", unique_tokens)


__all__ = [
    "CONSTRAINED_KEYS", "data_constrained_loss", "data_constrained_optimal", "effective_data",
    "effective_params", "epochs", "params_for_tokens",
]
