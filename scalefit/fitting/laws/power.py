"""Single-variable laws: Kaplan et al. 2020's L(X) = (X_c / X)^alpha_X (eqs. 1.1-1.3), optionally + E,
and the saturating power law L = E + A / X^alpha, for X in N, D or C."""

from __future__ import annotations

import itertools

import numpy as np

from scalefit.fitting.laws.base import Law, lse, product, safe_log
from scalefit.fitting.laws.separable import PowerSum

# The saturating law as a power sum: A / x^alpha (theta a, alpha) + E (theta e); alpha scanned from -0.5 to 3
# in steps of 0.02 (0 left out: a second E), finer than a start grid needs: a 1-D projection costs little.
POWER_SUM = PowerSum(coef=(0, 1), powers=(((0, 2),), ()),
                     exponent_grid=(tuple(v for v in np.round(np.arange(-25, 151) * 0.02, 10) if v != 0),))

# ---- saturating power law: theta = (a, e, alpha), log y = LSE(a - alpha log x, e) -------------------


def _power_log_loss(theta, logx):
    a, e, alpha = theta
    return lse(a - alpha * logx[0], e)


def _power_to_params(theta):
    a, e, alpha = np.moveaxis(np.asarray(theta, float), -1, 0)
    return np.stack([np.exp(e), np.exp(a), alpha], axis=-1)


def _power_from_params(p):
    E, A, alpha = p
    return np.array([safe_log(A), safe_log(E), alpha])


def _power_grid(logx, logy):
    # a must put A x^-alpha near the loss scale at the data: a ~ log y + alpha log x.
    alphas = np.array([0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5])
    x_mid = float(np.median(logx[0]))
    y_lo = float(np.min(logy))
    rows = []
    for alpha, frac, e_shift in itertools.product(alphas, (0.1, 0.5, 0.9), (-3.0, -1.0, -0.3, -0.05)):
        e = y_lo + e_shift
        a = np.log(max(np.exp(float(np.median(logy))) * frac, 1e-12)) + alpha * x_mid
        rows.append((a, e, alpha))
    return np.array(rows)


def saturating_power(var: str) -> Law:
    """y = E + A * x^-alpha in one input column `var` ("N", "D" or "C")."""
    return Law(
        name=f"power_{var.lower()}",
        formula=f"L = E + A/{var}^alpha",
        inputs=(var,),
        theta_names=("a", "e", "alpha"),
        param_names=("E", "A", "alpha"),
        log_loss=_power_log_loss,
        to_params=_power_to_params,
        from_params=_power_from_params,
        grid=_power_grid,
        bounds={"E": (0.0, np.inf), "A": (0.0, np.inf), "alpha": (0.0, 3.0)},
        param_theta=(1, 0, 2),
        collapse=("E",),
        separable=POWER_SUM,
    )


# ---- Kaplan: theta = (alpha, log X_c) [+ e]: log L = alpha (log X_c - log X) or LSE(that, e) ----------


def _kaplan_log_loss(theta, logx):
    return theta[0] * (theta[1] - logx[0])


def _kaplan_e_log_loss(theta, logx):
    return lse(theta[0] * (theta[1] - logx[0]), theta[2])


def _kaplan_to_params(theta):
    t = np.moveaxis(np.asarray(theta, float), -1, 0)
    out = [t[0], np.exp(t[1])] + ([np.exp(t[2])] if len(t) == 3 else [])
    return np.stack(out, axis=-1)


def _kaplan_from_params(p):
    return np.array([p[0], safe_log(p[1])] + ([safe_log(p[2])] if len(p) == 3 else []))


def _kaplan_grid_for(with_e: bool):
    def grid(logx, logy):
        alphas = np.array([0.02, 0.05, 0.1, 0.2, 0.4, 0.8])
        x_max = float(np.max(logx[0]))
        # X_c sits where the law would reach L = 1: far beyond the data for small exponents.
        log_xc = x_max + np.array([0.0, 3.0, 10.0, 20.0, 35.0])
        if not with_e:
            return product(alphas, log_xc)
        es = float(np.min(logy)) + np.array([-3.0, -1.0, -0.3, -0.05])
        return product(alphas, log_xc, es)

    return grid


def kaplan(var: str, irreducible: bool = False) -> Law:
    """Kaplan's single-variable law L = (X_c/X)^alpha_X (+ E if `irreducible`), X in N, D, C."""
    names = (f"alpha_{var}", f"{var}_c") + (("E",) if irreducible else ())
    return Law(
        name=f"kaplan_{var.lower()}" + ("_e" if irreducible else ""),
        formula=(f"L = ({var}_c/{var})^alpha_{var}" + (" + E" if irreducible else "")),
        inputs=(var,),
        theta_names=(f"alpha_{var}", f"log_{var}_c") + (("e",) if irreducible else ()),
        param_names=names,
        log_loss=_kaplan_e_log_loss if irreducible else _kaplan_log_loss,
        to_params=_kaplan_to_params,
        from_params=_kaplan_from_params,
        grid=_kaplan_grid_for(irreducible),
        bounds={f"alpha_{var}": (0.0, 3.0), f"{var}_c": (0.0, np.inf), "E": (0.0, np.inf)},
        param_theta=tuple(range(len(names))),
        collapse=("E",) if irreducible else (),
    )


# ---- Kaplan joint: L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan et al. 2020, eq. 1.5) --
# theta = (alpha_N, alpha_D, log N_c, log D_c):
#   log L = alpha_D * LSE((alpha_N/alpha_D)(log N_c - log N), log D_c - log D).


def _kaplan_nd_log_loss(theta, logx):
    alpha_n, alpha_d, lnc, ldc = theta
    return alpha_d * lse((alpha_n / alpha_d) * (lnc - logx[0]), ldc - logx[1])


def _kaplan_nd_to_params(theta):
    t = np.moveaxis(np.asarray(theta, float), -1, 0)
    return np.stack([t[0], t[1], np.exp(t[2]), np.exp(t[3])], axis=-1)


def _kaplan_nd_from_params(p):
    return np.array([p[0], p[1], safe_log(p[2]), safe_log(p[3])])


def _kaplan_nd_grid(logx, logy):
    alphas = np.array([0.03, 0.08, 0.2, 0.5])
    lnc = float(np.max(logx[0])) + np.array([0.0, 5.0, 15.0, 30.0])
    ldc = float(np.max(logx[1])) + np.array([0.0, 5.0, 15.0, 30.0])
    return product(alphas, alphas, lnc, ldc)


KAPLAN_ND = Law(
    name="kaplan_nd",
    formula="L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D",
    inputs=("N", "D"),
    theta_names=("alpha_N", "alpha_D", "log_N_c", "log_D_c"),
    param_names=("alpha_N", "alpha_D", "N_c", "D_c"),
    log_loss=_kaplan_nd_log_loss,
    to_params=_kaplan_nd_to_params,
    from_params=_kaplan_nd_from_params,
    grid=_kaplan_nd_grid,
    bounds={"alpha_N": (0.0, 3.0), "alpha_D": (1e-6, 3.0), "N_c": (0.0, np.inf), "D_c": (0.0, np.inf)},
    param_theta=(0, 1, 2, 3),
)
