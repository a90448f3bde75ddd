"""Laws that are sums of power terms with nonnegative coefficients, evaluated in numpy.

A law of this form declares it (`Law.separable`, a `PowerSum`):

    L(x) = sum_k c_k prod_{(i, j) in term k} x_i^(-phi_j),    c_k = exp(theta[coef_k]) >= 0,

e.g. Chinchilla's E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2): terms A (N, alpha),
B (D, beta) and E (no power). In the log-sum-exp fit space log L = LSE_k(u_k) with
u_k = theta[coef_k] - sum_(i, j) theta[phi_j] log x_i, every u_k is linear in theta, so the value, the
Jacobian and the Hessian of log L have closed forms and need no compiled code; and at fixed exponents
phi, L is linear in the coefficients c, which is what variable projection solves for in closed form
(Golub & Pereyra 1973; `scalefit.fitting.varpro`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerSum:
    """The structure L = sum_k c_k prod x_i^(-phi_j) of a law, in the law's fit coordinates theta."""

    coef: tuple[int, ...]  # per term k: the theta index of log c_k
    powers: tuple[tuple[tuple[int, int], ...], ...]  # per term k: (input index i, theta index of phi_j) pairs
    # Per exponent (in the order of `exponents`): the values the variable projection scans.
    exponent_grid: tuple[tuple[float, ...], ...]

    def __post_init__(self):
        if len(self.powers) != len(self.coef):
            raise ValueError(f"PowerSum: {len(self.coef)} coefficients but {len(self.powers)} terms of powers")
        if len(self.exponent_grid) != len(self.exponents):
            raise ValueError(f"PowerSum: {len(self.exponents)} exponents but {len(self.exponent_grid)} grid axes")

    @property
    def exponents(self) -> tuple[int, ...]:
        """theta indices of the exponents, ascending."""
        return tuple(sorted({j for term in self.powers for _, j in term}))

    @property
    def n_theta(self) -> int:
        return 1 + max(self.coef + self.exponents)

    def grid(self) -> np.ndarray:
        """Every combination of the exponent axes: [G, Q]."""
        return np.array(list(itertools.product(*self.exponent_grid)), float).reshape(-1, len(self.exponents))

    def design(self, logx) -> np.ndarray:
        """U [K, P, n] with u_k = U_k^T theta for rows of log inputs `logx` [n_inputs, n]."""
        logx = np.atleast_2d(np.asarray(logx, float))
        U = np.zeros((len(self.coef), self.n_theta, logx.shape[1]))
        for k, (c, term) in enumerate(zip(self.coef, self.powers)):
            U[k, c] = 1.0
            for i, j in term:
                U[k, j] -= logx[i]
        return U

    def terms(self, theta, logx) -> np.ndarray:
        """u [S, K, n] for parameter rows `theta` [S, P] at `logx` [n_inputs, n] (shared) or
        [n_inputs, S, n] (row s of the inputs for parameter row s)."""
        theta = np.atleast_2d(np.asarray(theta, float))
        logx = np.asarray(logx, float)
        out = []
        for c, term in zip(self.coef, self.powers):
            u = np.broadcast_to(theta[:, c, None], (len(theta), logx.shape[-1])).copy()
            for i, j in term:
                with np.errstate(invalid="ignore"):  # an exponent of 0 on log x = -inf would be 0 * inf
                    u -= theta[:, j, None] * logx[i]
            out.append(u)
        return np.stack(out, axis=1)

    def log_loss(self, theta, logx) -> np.ndarray:
        """log L [S, n] (`terms` for the shapes)."""
        return lse(self.terms(theta, logx))

    def jacobian(self, theta, logx) -> np.ndarray:
        """d log L / d theta [n, P] at one parameter row `theta` [P], rows `logx` [n_inputs, n]."""
        u = self.terms(np.asarray(theta, float)[None, :], logx)[0]  # [K, n]
        return np.einsum("kn,kpn->np", softmax(u), self.design(logx))


def lse(u) -> np.ndarray:
    """log sum_k exp(u_k) over axis -2 of u [..., K, n], shifted by the maximum; a term of -inf adds 0."""
    m = np.max(u, axis=-2, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return (m + np.log(np.sum(np.exp(u - m), axis=-2, keepdims=True)))[..., 0, :]


def softmax(u) -> np.ndarray:
    """exp(u_k) / sum_k exp(u_k) over axis -2 of u [..., K, n]: each term's share of the loss."""
    m = np.max(u, axis=-2, keepdims=True)
    e = np.exp(u - np.where(np.isfinite(m), m, 0.0))
    return e / np.sum(e, axis=-2, keepdims=True)
