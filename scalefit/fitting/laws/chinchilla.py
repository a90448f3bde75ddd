"""Chinchilla: L = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2 and App. D.2).

theta = (a, b, e, alpha, beta) with A = exp(a), B = exp(b), E = exp(e):
    log L = LSE(a - alpha log N, b - beta log D, e).
"""

from __future__ import annotations

import numpy as np

import functools

from scalefit.fitting.laws.base import Law, lse, product, safe_log
from scalefit.fitting.laws.separable import PowerSum

PARAMS = ("E", "A", "B", "alpha", "beta")
# Exponents the variable projection scans: each of alpha, beta from -0.5 to 2.5 in steps of 0.1, 0 left out
# (that term would be a second E). Wider than Hoffmann's 0 .. 2 start grid, negative values included: a
# loss that rises with N or D must reach the optimum the multi-start finds there, which the fit then flags.
EXPONENT_AXIS = tuple(v for v in np.round(np.arange(-5, 26) * 0.1, 10) if v != 0)
# A / N^alpha (theta a, alpha), B / D^beta (theta b, beta), E (theta e).
POWER_SUM = PowerSum(coef=(0, 1, 2), powers=(((0, 3),), ((1, 4),), ()), exponent_grid=(EXPONENT_AXIS,) * 2)


def _log_loss(theta, logx):
    a, b, e, alpha, beta = theta
    return lse(a - alpha * logx[0], b - beta * logx[1], e)


def _to_params(theta):
    a, b, e, alpha, beta = np.moveaxis(np.asarray(theta, float), -1, 0)
    return np.stack([np.exp(e), np.exp(a), np.exp(b), alpha, beta], axis=-1)


def _from_params(p):
    E, A, B, alpha, beta = p
    return np.array([safe_log(A), safe_log(B), safe_log(E), alpha, beta])


def _grid(logx, logy):
    # Hoffmann's grid (App. D.2, as replicated by Besiroglu et al. 2024): 6 x 6 x 5 x 5 x 5 = 4,500 starts.
    return product(np.arange(0, 30, 5), np.arange(0, 30, 5), np.arange(-1, 1.5, 0.5),
                   np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))


def exponents(p):
    """Compute-optimal exponents N_opt ~ C^a, D_opt ~ C^b under C = 6ND (Hoffmann et al. 2022, eq. 4):
    a = beta / (alpha + beta), b = alpha / (alpha + beta)."""
    alpha, beta = np.asarray(p)[..., 3], np.asarray(p)[..., 4]
    return {"a": beta / (alpha + beta), "b": alpha / (alpha + beta)}


def split(E, A, B, alpha, beta, C, compute):
    """Closed-form compute-optimal (N, D) of the Chinchilla law under C = k N^gamma D; arrays broadcast.

    Setting d/dN [A N^-alpha + B (k N^gamma / C)^beta] = 0 gives
        N_opt = (alpha A / (gamma beta B))^(1 / (alpha + gamma beta)) (C/k)^(beta / (alpha + gamma beta)),
        D_opt = C / (k N_opt^gamma),
    which for k = 6, gamma = 1 is Hoffmann et al. 2022, eq. 4: N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b,
    G = (alpha A / (beta B))^(1/(alpha+beta)). E does not move the optimum.
    """
    if compute.m:
        raise ValueError(f"no closed form under {compute.describe()}")
    k, g = compute.k, compute.gamma
    s = alpha + g * beta
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # no optimum (an exponent <= 0): NaN
        N = (alpha * A / (g * beta * B)) ** (1.0 / s) * (np.asarray(C, float) / k) ** (beta / s)
        return N, np.asarray(C, float) / (k * N**g)


def _optimum(P, C, compute):
    """`split` for every row of params [B, K] and budget C [m] -> N, D [B, m]; None under a two-term
    compute model (no closed form)."""
    if compute.m:
        return None
    cols = [np.asarray(P, float)[:, [i]] for i in range(5)]  # 5 x [B, 1]
    return split(*cols, np.asarray(C, float)[None, :], compute)


def _ratio_law(r: float, label: str) -> Law:
    """Chinchilla with beta = r alpha: theta = (a, b, e, alpha), an affine restriction of CHINCHILLA.

    Under C = 6ND the compute-optimal exponent a = beta / (alpha + beta) = r / (1 + r) is then held:
    r = 1 ties the exponents (alpha = beta, a = 0.5: Muennighoff et al. 2023, Gadre et al. 2024).
    """
    M = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, r]], float)  # [5, 4]
    c = np.zeros(5)
    return Law(
        name=f"chinchilla[{label}]", formula=f"L = E + A/N^alpha + B/D^beta with beta = {r:.6g} alpha",
        inputs=("N", "D"), theta_names=("a", "b", "e", "alpha"), param_names=PARAMS,
        log_loss=lambda theta, logx: _log_loss(M @ theta, logx),
        to_params=lambda theta: _to_params(np.asarray(theta, float) @ M.T),
        from_params=lambda p: _from_params(p)[:4],
        grid=lambda logx, logy: np.unique(_grid(logx, logy)[:, :4], axis=0),
        bounds=CHINCHILLA.bounds, derived=exponents, optimum=_optimum,
        param_theta=(2, 0, 1, 3, None), collapse=("E",), affine=(CHINCHILLA, M, c))


@functools.lru_cache(maxsize=64)
def _pin_exponent(key: str, value: float) -> Law:
    if not 0 < value < 1:
        raise ValueError(f"chinchilla: {key} = {value:g} must lie strictly between 0 and 1 (a + b = 1)")
    r = value / (1 - value) if key == "a" else (1 - value) / value  # beta / alpha
    return _ratio_law(r, f"{key}={value:g}")


def _pin_derived(values: dict) -> Law:
    """a (N_opt ~ C^a) or b (D_opt ~ C^b, b = 1 - a) held: beta = alpha a / (1 - a)."""
    unknown = sorted(set(values) - {"a", "b"})
    if unknown:
        raise ValueError(f"law chinchilla has no parameter {unknown[0]!r} to fix; its parameters are "
                         f"{', '.join(PARAMS)} (and a or b, the compute-optimal exponents)")
    if len(values) == 2 and abs(values["a"] + values["b"] - 1) > 1e-12:
        raise ValueError(f"chinchilla: a + b = 1, so a = {values['a']:g} and b = {values['b']:g} cannot both hold")
    key = "a" if "a" in values else "b"
    return _pin_exponent(key, float(values[key]))


CHINCHILLA = Law(
    name="chinchilla",
    formula="L = E + A/N^alpha + B/D^beta",
    inputs=("N", "D"),
    theta_names=("a", "b", "e", "alpha", "beta"),
    param_names=PARAMS,
    log_loss=_log_loss,
    to_params=_to_params,
    from_params=_from_params,
    grid=_grid,
    bounds={"E": (0.0, np.inf), "A": (0.0, np.inf), "B": (0.0, np.inf), "alpha": (0.0, 3.0),
            "beta": (0.0, 3.0)},
    derived=exponents,
    optimum=_optimum,
    param_theta=(2, 0, 1, 3, 4),
    pin_derived=_pin_derived,
    collapse=("E",),
    separable=POWER_SUM,
)
