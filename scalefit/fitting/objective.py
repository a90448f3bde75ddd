"""The objective a fit minimises: a Huber penalty on log residuals, or the Huber likelihood with a fitted scale.

Hoffmann et al. 2022 (App. D.2) sum Huber(delta = 1e-3) over the log residuals; Besiroglu et al. 2024 fit
the residuals' scale too, as a likelihood. `scalefit.fitting.solver` minimises it; the penalty's pieces
(rho, its derivative psi, the IRLS weight psi / r) are jax functions of traced numbers, so one compilation
serves every delta and over-penalty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from scalefit.fitting.lazy import jnp


@dataclass(frozen=True)
class Objective:
    """The per-row penalty on log residuals r = log L_pred - log L_obs, summed with row weights.

    Huber (`scale=False`): rho(r) = r^2 / 2 for |r| <= delta, delta (|r| - delta / 2) otherwise (Huber
    1964; scipy.special.huber's convention, which Hoffmann et al. and Besiroglu et al. sum), times
    `over_penalty` where r > 0, so over-predicting the loss can be made to cost more.

    Likelihood with a fitted scale (`scale=True`, Besiroglu et al. 2024, whose final Chinchilla estimates
    use it): the residuals are Huber-distributed with scale sigma, density exp(-rho(r / sigma)) /
    (sigma Z(delta)), Z(delta) = sqrt(2 pi) (1 - 2 Phi(-delta)) + 2 exp(-delta^2 / 2) / delta, and the fit
    minimises the negative log-likelihood sum_i w_i [rho(r_i / sigma) + log sigma + log Z] over the law's
    parameters and log sigma together; `delta` is then in units of sigma (1.345: Huber's 95%-efficient
    choice; large: the Normal likelihood, i.e. least squares).
    """

    delta: float = 1e-3  # Huber threshold (on log residuals; in units of the scale when scale=True)
    over_penalty: float = 1.0  # multiplier on the penalty of over-predictions (r > 0); 1 = symmetric
    scale: bool = False  # True: Huber likelihood with a fitted scale sigma (one more fitted parameter)

    def __post_init__(self):
        if not self.delta > 0:
            raise ValueError(f"Huber delta must be > 0, got {self.delta}")
        if not self.over_penalty > 0:
            raise ValueError(f"over_penalty must be > 0, got {self.over_penalty}")

    @property
    def kind(self) -> str:
        """What the compiled solver is specialised on: "huber" or "likelihood"."""
        return "likelihood" if self.scale else "huber"

    @property
    def hyper(self) -> np.ndarray:
        """The numbers the compiled solver takes as traced values: [delta, over_penalty]."""
        return np.array([self.delta, self.over_penalty], float)

    def describe(self) -> str:
        """The objective in words, for reports."""
        asym = " (asymmetric)" if self.over_penalty != 1 else ""
        if self.scale:
            return f"huber likelihood with fitted scale{asym}"
        return f"huber on log residuals{asym}"

    def log_normaliser(self) -> float:
        """log Z(delta) of the Huber density with unit scale (the likelihood's constant per row)."""
        d = self.delta
        return math.log(math.sqrt(2 * math.pi) * (1 - 2 * float(ndtr(-d))) + 2 * math.exp(-d * d / 2) / d)

    def __call__(self, r):
        return _rho(r, self.delta, self.over_penalty)

    def psi(self, r):
        """d rho / d r."""
        return _psi(r, self.delta, self.over_penalty)

    def irls_weight(self, r):
        """psi(r) / r: the weight of the row in iteratively reweighted least squares."""
        return _omega(r, self.delta, self.over_penalty)


def huber_numpy(r, delta: float, over: float):
    """(rho, psi = d rho / d r, d psi / d r) of the Huber penalty at r, in numpy (the closed-form solvers of
    `scalefit.fitting.varpro` run without compiled code): the same function as `Objective.__call__`."""
    a = np.abs(r)
    inside = a <= delta
    rho = np.where(inside, 0.5 * r * r, delta * (a - 0.5 * delta))
    psi, curv = np.clip(r, -delta, delta), inside.astype(float)
    if over == 1:  # symmetric: skip the per-row side factor (this runs inside every Newton step)
        return rho, psi, curv
    side = np.where(r > 0, over, 1.0)
    return side * rho, side * psi, side * curv


def _asym(r, x, over):
    return jnp.where(r > 0, over * x, x)


def _rho(r, delta, over):
    a = jnp.abs(r)
    return _asym(r, jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta)), over)


def _psi(r, delta, over):
    return _asym(r, jnp.clip(r, -delta, delta), over)


def _omega(r, delta, over):
    return _asym(r, delta / jnp.maximum(jnp.abs(r), delta), over)
