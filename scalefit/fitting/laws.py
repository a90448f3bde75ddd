"""Scaling-law forms as data: a pure log-prediction function, named parameters, bounds, a start grid.

Every law predicts log L from the logs of its inputs, in a fit-space parametrisation `theta` chosen so
the objective is smooth and unconstrained (log-sum-exp forms, Hoffmann et al. 2022, App. D.2), and
maps theta to the named parameters a user reads (E, A, B, alpha, beta ...). The fitter only ever calls
`log_loss`, `grid`, `to_params` and `from_params`, so adding a law is adding a `Law` to `LAWS`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import jax.numpy as jnp
import numpy as np


def lse(*terms):
    """log(sum(exp(t))) over broadcastable arrays, shifted by their maximum.

    Written out rather than `jax.nn.logsumexp(jnp.stack(...))`: on CPU that spends ~5x longer in
    stacking and its inf-guards, and this is the whole cost of a fit's objective.
    """
    m = terms[0]
    for t in terms[1:]:
        m = jnp.maximum(m, t)
    return m + jnp.log(sum(jnp.exp(t - m) for t in terms))


@dataclass(frozen=True)
class Law:
    """A scaling law. Frozen and hashable (by identity of its functions) so jit can take it static."""

    name: str  # registry key, e.g. "chinchilla"
    formula: str  # human-readable form, for summaries
    inputs: tuple[str, ...]  # table columns the law reads, in order: "N", "D", "C"
    theta_names: tuple[str, ...]  # fit-space parameters, in order
    param_names: tuple[str, ...]  # reported parameters, in order (the names papers use)
    # (theta [P], logx [n_inputs, n_points]) -> predicted log L [n_points]; pure jnp.
    log_loss: Callable = field(repr=False)
    # theta [..., P] -> reported params [..., K]; numpy, vectorised over leading axes.
    to_params: Callable = field(repr=False)
    # reported params [K] -> theta [P]; numpy.
    from_params: Callable = field(repr=False)
    # (logx [n_inputs, n_points], logy [n_points]) -> start grid [S, P] in theta space.
    grid: Callable = field(repr=False)
    # Plausible range of each reported parameter; a fit landing outside gets a warning, not a clamp.
    bounds: dict = field(default_factory=dict, compare=False, hash=False)
    # reported params [..., K] -> {name: [...]} of quantities derived from them (Chinchilla: a, b).
    derived: Callable | None = field(default=None, repr=False)

    def predict(self, params: dict, **inputs) -> np.ndarray:
        """L at the given inputs (arrays broadcast), from reported parameters `params`."""
        p = np.array([[params[k] for k in self.param_names]], float)
        return self.predict_many(p, **inputs)[0]

    def predict_many(self, params: np.ndarray, **inputs) -> np.ndarray:
        """L for each row of reported parameters `params` [B, K] at the inputs: [B, *input shape]."""
        import jax

        shape = np.broadcast_shapes(*(np.shape(inputs[c]) for c in self.inputs))
        logx = np.stack([np.broadcast_to(np.log(np.asarray(inputs[c], float)), shape).ravel()
                         for c in self.inputs])  # [n_inputs, n]
        theta = np.stack([self.from_params(p) for p in np.atleast_2d(params)])  # [B, P]
        with jax.enable_x64(True):
            out = jax.vmap(self.log_loss, in_axes=(0, None))(jnp.asarray(theta), jnp.asarray(logx))
            return np.exp(np.asarray(out)).reshape((len(theta),) + shape)

    def predict_paired(self, params: np.ndarray, **inputs) -> np.ndarray:
        """L for row b of `params` [B, K] at row b of the inputs [B, ...] (not every pair): [B, ...]."""
        import jax

        theta = np.stack([self.from_params(p) for p in np.atleast_2d(params)])  # [B, P]
        shape = np.broadcast_shapes(*(np.shape(inputs[c]) for c in self.inputs))
        if not shape or shape[0] not in (1, len(theta)):
            raise ValueError(f"paired inputs need a leading axis of {len(theta)} (one per parameter row), "
                             f"got shape {shape}")
        shape = (len(theta),) + shape[1:]
        logx = np.stack([np.broadcast_to(np.log(np.asarray(inputs[c], float)), shape).reshape(shape[0], -1)
                         for c in self.inputs])  # [n_inputs, B, n]
        with jax.enable_x64(True):
            out = jax.vmap(self.log_loss, in_axes=(0, 1))(jnp.asarray(theta), jnp.asarray(logx))  # [B, n]
            return np.exp(np.asarray(out)).reshape(shape)


def _log(x):
    # A fitted E (or A, B) can underflow to exactly 0 in to_params; its log is -inf, which the
    # log-sum-exp forms handle (exp(-inf) = 0), so it is a value here, not an error.
    with np.errstate(divide="ignore"):
        return np.log(x)


def _product(*axes) -> np.ndarray:
    return np.array(list(itertools.product(*axes)), dtype=float)


# --- Chinchilla: L = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, eq. 2 and App. D.2) -------------
# theta = (a, b, e, alpha, beta) with A = exp(a), B = exp(b), E = exp(e):
#   log L = LSE(a - alpha log N, b - beta log D, e).


def _chinchilla_log_loss(theta, logx):
    a, b, e, alpha, beta = theta
    return lse(a - alpha * logx[0], b - beta * logx[1], e)


def _chinchilla_to_params(theta):
    theta = np.asarray(theta, float)
    a, b, e, alpha, beta = np.moveaxis(theta, -1, 0)
    return np.stack([np.exp(e), np.exp(a), np.exp(b), alpha, beta], axis=-1)


def _chinchilla_from_params(p):
    E, A, B, alpha, beta = p
    return np.array([_log(A), _log(B), _log(E), alpha, beta])


def _chinchilla_grid(logx, logy):
    # Hoffmann's grid (App. D.2, as replicated by Besiroglu et al. 2024): 6 x 6 x 5 x 5 x 5 = 4,500 starts.
    return _product(np.arange(0, 30, 5), np.arange(0, 30, 5), np.arange(-1, 1.5, 0.5),
                    np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))


def _chinchilla_derived(p):
    # Compute-optimal exponents N_opt ~ C^a, D_opt ~ C^b (Hoffmann et al. 2022, eq. 4).
    alpha, beta = np.asarray(p)[..., 3], np.asarray(p)[..., 4]
    return {"a": beta / (alpha + beta), "b": alpha / (alpha + beta)}


CHINCHILLA = Law(
    name="chinchilla",
    formula="L = E + A/N^alpha + B/D^beta",
    inputs=("N", "D"),
    theta_names=("a", "b", "e", "alpha", "beta"),
    param_names=("E", "A", "B", "alpha", "beta"),
    log_loss=_chinchilla_log_loss,
    to_params=_chinchilla_to_params,
    from_params=_chinchilla_from_params,
    grid=_chinchilla_grid,
    bounds={"E": (0.0, np.inf), "A": (0.0, np.inf), "B": (0.0, np.inf), "alpha": (0.0, 3.0),
            "beta": (0.0, 3.0)},
    derived=_chinchilla_derived,
)


# --- Saturating power law in one variable: y = E + A x^-alpha --------------------------------------------
# theta = (a, e, alpha): log y = LSE(a - alpha log x, e).


def _power_log_loss(theta, logx):
    a, e, alpha = theta
    return lse(a - alpha * logx[0], e)


def _power_to_params(theta):
    a, e, alpha = np.moveaxis(np.asarray(theta, float), -1, 0)
    return np.stack([np.exp(e), np.exp(a), alpha], axis=-1)


def _power_from_params(p):
    E, A, alpha = p
    return np.array([_log(A), _log(E), alpha])


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
    )


# --- Kaplan et al. 2020: L(X) = (X_c / X)^alpha_X, optionally + E (eqs. 1.1-1.3) -----------------------
# theta = (alpha, log X_c) [+ e]:  log L = alpha (log X_c - log X)   or  LSE(alpha (log X_c - log X), e).


def _kaplan_log_loss(theta, logx):
    return theta[0] * (theta[1] - logx[0])


def _kaplan_e_log_loss(theta, logx):
    return lse(theta[0] * (theta[1] - logx[0]), theta[2])


def _kaplan_to_params(theta):
    t = np.moveaxis(np.asarray(theta, float), -1, 0)
    out = [t[0], np.exp(t[1])] + ([np.exp(t[2])] if len(t) == 3 else [])
    return np.stack(out, axis=-1)


def _kaplan_from_params(p):
    return np.array([p[0], _log(p[1])] + ([_log(p[2])] if len(p) == 3 else []))


def _kaplan_grid_for(with_e: bool):
    def grid(logx, logy):
        alphas = np.array([0.02, 0.05, 0.1, 0.2, 0.4, 0.8])
        x_max = float(np.max(logx[0]))
        # X_c sits where the law would reach L = 1: far beyond the data for small exponents.
        log_xc = x_max + np.array([0.0, 3.0, 10.0, 20.0, 35.0])
        if not with_e:
            return _product(alphas, log_xc)
        es = float(np.min(logy)) + np.array([-3.0, -1.0, -0.3, -0.05])
        return _product(alphas, log_xc, es)

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
    )


# --- Kaplan joint: L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan et al. 2020, eq. 1.5) -----
# theta = (alpha_N, alpha_D, log N_c, log D_c):
#   log L = alpha_D * LSE((alpha_N/alpha_D)(log N_c - log N), log D_c - log D).


def _kaplan_nd_log_loss(theta, logx):
    alpha_n, alpha_d, lnc, ldc = theta
    return alpha_d * lse((alpha_n / alpha_d) * (lnc - logx[0]), ldc - logx[1])


def _kaplan_nd_to_params(theta):
    t = np.moveaxis(np.asarray(theta, float), -1, 0)
    return np.stack([t[0], t[1], np.exp(t[2]), np.exp(t[3])], axis=-1)


def _kaplan_nd_from_params(p):
    return np.array([p[0], p[1], _log(p[2]), _log(p[3])])


def _kaplan_nd_grid(logx, logy):
    alphas = np.array([0.03, 0.08, 0.2, 0.5])
    lnc = float(np.max(logx[0])) + np.array([0.0, 5.0, 15.0, 30.0])
    ldc = float(np.max(logx[1])) + np.array([0.0, 5.0, 15.0, 30.0])
    return _product(alphas, alphas, lnc, ldc)


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
)


LAWS: dict[str, Law] = {
    law.name: law
    for law in [
        CHINCHILLA,
        KAPLAN_ND,
        *(kaplan(v) for v in ("N", "D", "C")),
        *(kaplan(v, irreducible=True) for v in ("N", "D", "C")),
        *(saturating_power(v) for v in ("N", "D", "C")),
    ]
}


def get_law(name: str | Law) -> Law:
    """A registered law by name (or the law itself); ValueError naming the known ones otherwise."""
    if isinstance(name, Law):
        return name
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"unknown law {name!r}; known laws: {', '.join(sorted(LAWS))}") from None
