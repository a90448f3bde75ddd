"""The data-constrained law of Muennighoff et al. 2023, a `Law` in (N, D, U) like any other.

"Scaling Data-Constrained Language Models" (NeurIPS 2023), reference code huggingface/datablations
(utils/parametric_fit.ipynb). Repeated tokens are worth less than fresh ones, and parameters beyond
what the unique data can use are worth less than useful ones; both decay exponentially in the number
of repetitions (eq. 5):

    L(N, D, U) = E + A / N'^alpha + B / D'^beta
    D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)),   U_D = min(U, D),   R_D = D / U_D - 1
    N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)),   U_N = min(N, N_opt(U_D)),  R_N = N / U_N - 1

N_opt(U_D) is the parameter count for which U_D tokens are compute-optimal under the Chinchilla law with
the same E, A, B, alpha, beta: N_opt(D) = G (G D)^(beta/alpha), G = (alpha A / (beta B))^(1/(alpha+beta)).
With fresh data (D <= U) it is the Chinchilla law. U is a condition of an allocation: a budget C is
split into N and D for a given number of unique tokens.

theta = (a, b, e, alpha, beta, r_d, r_n) with A, B, E, R_D*, R_N* = exp(a, b, e, r_d, r_n).
"""

from __future__ import annotations

import numpy as np

from scalefit.fitting.laws.base import Law, lse, product, safe_log
from scalefit.fitting.lazy import jnp

PARAMS = ("E", "A", "B", "alpha", "beta", "R_D_star", "R_N_star")


def _log_effective(log_unique, log_total, log_r_star):
    """log of U + U R* (1 - exp(-R / R*)), R = total / unique - 1: the repeats' worth saturates at R* U."""
    repeats = jnp.exp(log_total - log_unique) - 1.0
    r_star = jnp.exp(log_r_star)
    return log_unique + jnp.log1p(r_star * -jnp.expm1(-repeats / r_star))


def _log_loss(theta, logx):
    a, b, e, alpha, beta, r_d, r_n = theta
    log_n, log_d, log_u = logx
    log_ud = jnp.minimum(log_u, log_d)
    log_g = (jnp.log(alpha) + a - jnp.log(beta) - b) / (alpha + beta)
    log_n_opt = log_g + (beta / alpha) * (log_g + log_ud)  # N_opt(U_D) = G (G U_D)^(beta/alpha)
    log_un = jnp.minimum(log_n, log_n_opt)
    return lse(a - alpha * _log_effective(log_un, log_n, r_n), b - beta * _log_effective(log_ud, log_d, r_d), e)


def _to_params(theta):
    a, b, e, alpha, beta, r_d, r_n = np.moveaxis(np.asarray(theta, float), -1, 0)
    return np.stack([np.exp(e), np.exp(a), np.exp(b), alpha, beta, np.exp(r_d), np.exp(r_n)], axis=-1)


def _from_params(p):
    E, A, B, alpha, beta, rd, rn = p
    return np.array([safe_log(A), safe_log(B), safe_log(E), alpha, beta, safe_log(rd), safe_log(rn)])


def _grid(logx, logy):
    # Hoffmann's a, b, e with exponents above 0 (N_opt needs log alpha, log beta), and the repeat
    # scales R* from a few epochs to hundreds (Muennighoff et al. grid over 0..20).
    return product(np.arange(0, 30, 5), np.arange(0, 30, 5), np.array([-1.0, 0.0, 1.0]),
                   np.array([0.25, 0.5, 1.0]), np.array([0.25, 0.5, 1.0]), np.log([1.0, 5.0, 25.0]),
                   np.log([1.0, 5.0, 25.0]))


DATA_CONSTRAINED = Law(
    name="data_constrained",
    formula="L = E + A/N'^alpha + B/D'^beta (N', D' effective under repetition, Muennighoff et al. 2023)",
    inputs=("N", "D", "U"),
    theta_names=("a", "b", "e", "alpha", "beta", "r_d", "r_n"),
    param_names=PARAMS,
    log_loss=_log_loss,
    to_params=_to_params,
    from_params=_from_params,
    grid=_grid,
    bounds={"E": (0.0, np.inf), "A": (0.0, np.inf), "B": (0.0, np.inf), "alpha": (0.0, 3.0),
            "beta": (0.0, 3.0), "R_D_star": (0.0, np.inf), "R_N_star": (0.0, np.inf)},
    param_theta=(2, 0, 1, 3, 4, 5, 6),
    collapse=("E",),
)


# ---- the same quantities in numpy, from named parameters (for plans and checks) ---------------------


def params_for_tokens(params, D):
    """N_opt(D): the Chinchilla-optimal parameter count for D training tokens, G (G D)^(beta/alpha)."""
    p = {k: float(params[k]) for k in PARAMS[:5]}
    G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1.0 / (p["alpha"] + p["beta"]))
    return G * np.power(G * np.asarray(D, dtype=float), p["beta"] / p["alpha"])


def _effective(unique, repeats, r_star):
    return unique + unique * r_star * (1.0 - np.exp(-repeats / r_star))


def effective_data(params, D, U):
    """D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)) with U_D = min(U, D), R_D = D / U_D - 1."""
    D, U = np.asarray(D, dtype=float), np.asarray(U, dtype=float)
    U_D = np.minimum(U, D)
    return _effective(U_D, D / U_D - 1.0, float(params["R_D_star"]))


def effective_params(params, N, D, U):
    """N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*)) with U_N = min(N, N_opt(U_D)), R_N = N / U_N - 1."""
    N = np.asarray(N, dtype=float)
    U_D = np.minimum(np.asarray(U, dtype=float), np.asarray(D, dtype=float))
    U_N = np.minimum(N, params_for_tokens(params, U_D))
    return _effective(U_N, N / U_N - 1.0, float(params["R_N_star"]))
