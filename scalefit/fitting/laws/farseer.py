"""Farseer (Li et al. 2025, "Predictable Scale: Part II, Farseer: A Refined Scaling Law in Large Language
Models", arXiv:2506.10972): a loss surface whose data term's coefficient and exponent both depend on N,

    L(N, D) = exp(a3 N^gamma + b3) + exp(a2 N^beta + b2) * D^(-exp(a1 N^alpha + b1)),

so the data exponent A(N) = exp(a1 N^alpha + b1) and coefficient B(N) = exp(a2 N^beta + b2) are
stretched exponentials in N, and the N-only part E + U(N) is exp(a3 N^gamma + b3) (which tends to
E + A' N^gamma for gamma < 0 and a small reducible part). Nine parameters: it needs many runs per model
size; with few it is the candidate cross-validation is there to reject.

theta = (a1, b1, alpha, a2, b2, beta, a3, b3, gamma) are the reported parameters themselves:
    log L = LSE(a3 N^gamma + b3, a2 N^beta + b2 - exp(a1 N^alpha + b1) log D).
"""

from __future__ import annotations

import itertools

import numpy as np

from scalefit.fitting.laws.base import Law, lse
from scalefit.fitting.lazy import jnp

PARAMS = ("a1", "b1", "alpha", "a2", "b2", "beta", "a3", "b3", "gamma")


def _log_loss(theta, logx):
    a1, b1, alpha, a2, b2, beta, a3, b3, gamma = theta
    log_n, log_d = logx
    data_exponent = jnp.exp(a1 * jnp.exp(alpha * log_n) + b1)
    return lse(a3 * jnp.exp(gamma * log_n) + b3, a2 * jnp.exp(beta * log_n) + b2 - data_exponent * log_d)


def _identity(theta):
    return np.asarray(theta, float)


def _grid(logx, logy):
    """Starts that put the surface near a Chinchilla-like one at the data's median size: data exponent
    beta_c, N-exponent -gamma, an irreducible share of the smallest loss, the reducible loss split
    between the two terms, and a weak N-dependence (+-0.1 at the median) of the data term."""
    n_mid, d_mid = float(np.median(logx[0])), float(np.median(logx[1]))
    y_min, y_mid = float(np.exp(np.min(logy))), float(np.exp(np.median(logy)))
    rows = []
    for beta_c, g, e_share, split, s_alpha, s_beta in itertools.product(
            (0.15, 0.3, 0.5), (-0.2, -0.4), (0.6, 0.9), (0.3, 0.7), (-0.1, 0.1), (-0.1, 0.1)):
        E = e_share * y_min
        reducible = max(y_mid - E, 1e-3 * y_mid)
        # data exponent exp(a1 N^alpha + b1) = beta_c at the median N, with a1 N^alpha = 0.1
        alpha = s_alpha
        a1 = 0.1 * np.exp(-alpha * n_mid)
        b1 = np.log(beta_c) - 0.1
        # data term exp(a2 N^beta + b2) D^-beta_c = (1 - split) * reducible at the medians
        beta = s_beta
        a2 = 0.1 * np.exp(-beta * n_mid)
        b2 = np.log((1 - split) * reducible) + beta_c * d_mid - 0.1
        # N term exp(a3 N^gamma + b3) = E + split * reducible at the median N
        a3 = np.log1p(split * reducible / E) * np.exp(-g * n_mid)
        b3 = np.log(E)
        rows.append((a1, b1, alpha, a2, b2, beta, a3, b3, g))
    return np.array(rows)


FARSEER = Law(
    name="farseer",
    formula="L = exp(a3 N^gamma + b3) + exp(a2 N^beta + b2) D^(-exp(a1 N^alpha + b1)) (Li et al. 2025)",
    inputs=("N", "D"),
    theta_names=PARAMS,
    param_names=PARAMS,
    log_loss=_log_loss,
    to_params=_identity,
    from_params=_identity,
    grid=_grid,
    param_theta=tuple(range(9)),
)
