"""Laws of whole loss curves under a learning-rate schedule, fitted by the same fitter as any `Law`.

A curve law predicts the loss at every point (a curve, a step) from the schedule up to that point:

* multi-power (Luo et al. 2025, "A Multi-Power Law for Loss Curve Prediction Across Learning Rate
  Schedules", arXiv:2503.12811; code thu-yao-01-luo/MultiPowerLaw):

      L(n) = L0 + A S1(n)^-alpha - LD(n),   LD(n) = B sum_{k<n} (eta_{k-1} - eta_k) G(eta_k^-gamma S_k(n)),
      G(x) = 1 - (C x + 1)^-beta,   S1(n) = eta_0 + ... + eta_{n-1},   S_k(n) = eta_k + ... + eta_{n-1};

  as in the authors' code, S1 includes the warmup (the paper's S1 + S_W) and LD runs over every step,
  the warmup's rises included (they add loss);
* momentum (Tissue et al. 2024, "Scaling Law with Learning Rate Annealing", arXiv:2408.11029):

      L(n) = L0 + A S1(n)^-alpha - C S2(n),   S2(n) = sum_{i<n} m_i,   m_i = lambda m_{i-1} + (eta_{i-1} - eta_i),

  with warmup steps counted at the rate the ramp reaches, as the authors' reference code does; lambda is a
  parameter ("tissue[lam=0.999]" is their fixed setting);
* power in steps: L(n) = L0 + A n^-alpha, for constant-rate curves.

Every law here is a `CurveLaw`: its log-prediction reads the schedule sums of `scalefit.fitting.laws.sums`
(computed once per table, compressed), not table columns. `CurveLaw.bind(points)` turns it into an ordinary
`Law` over one table's points (input column "curve_point", the 1-based index of the row's point), which
`scalefit.fitting.fitter.fit` fits unchanged: same objective, start grid, damped-Newton solver, bootstrap.
`CurveLaw.law()` is the same law unbound, under the same name: what a saved fit resolves its name to
(`get_law`); it carries the parameters but evaluates only once bound (`scalefit.analysis.curves` binds it
to the schedule of a forecast).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from scalefit.fitting.laws.base import Law, lse, safe_log
from scalefit.fitting.laws.sums import CurvePoints, NodeSpec
from scalefit.fitting.lazy import jax, jnp

POINT = "curve_point"  # the input column of a bound curve law: 1-based index into its CurvePoints


@dataclass(frozen=True)
class CurveLaw:
    """A law of loss curves, before it is bound to a table's points. Frozen and hashable."""

    name: str  # registry key, e.g. "multipower"
    formula: str  # human-readable form
    theta_names: tuple[str, ...]  # fit-space parameters, in order
    param_names: tuple[str, ...]  # reported parameters, in order
    # (theta [P], arrays: CurvePoints.arrays() as jnp) -> predicted log L [n points]; pure jnp.
    log_loss: Callable = field(repr=False)
    # theta [..., P] -> params [..., K]; numpy.
    to_params: Callable = field(repr=False)
    # params [K] -> theta [P]; numpy.
    from_params: Callable = field(repr=False)
    # (points: CurvePoints, logy [n]) -> start grid [S, P] in theta space.
    grid: Callable = field(repr=False)
    spec: NodeSpec = NodeSpec()  # what the schedule sums must resolve
    bounds: dict = field(default_factory=dict, compare=False, hash=False)  # plausible range of each parameter
    param_theta: tuple[int, ...] | None = None  # theta coordinate of each reported parameter (pins)
    # (points) -> [(reason, parameters it concerns)] where the points cannot identify the law ([]: they can);
    # a reason whose parameters are all pinned does not stop a fit.
    unidentified: Callable = field(default=lambda points: [], repr=False)
    # (params: {name: scalar or per-point [n] jnp array}, arrays) -> log L [n]: the law in its reported
    # parameters, which a joint law across sizes (`scalefit.fitting.laws.joint`) makes functions of N.
    natural: Callable | None = field(default=None, repr=False)
    log_params: tuple[str, ...] = ()  # reported parameters that are > 0 and fitted as logs
    reads_n: bool = False  # True when the prediction depends on the model size N (joint laws)

    def __str__(self) -> str:
        return self.name

    @functools.cached_property
    def _unbound(self) -> Law:
        def not_bound(theta, logx):
            raise ValueError(f"curve law {self.name} predicts points of curves: bind it to them "
                             "(scalefit.fitting.curves / scalefit.analysis.curves), not to table columns")

        return Law(name=self.name, formula=self.formula, inputs=(POINT,), theta_names=self.theta_names,
                   param_names=self.param_names, log_loss=not_bound, to_params=self.to_params,
                   from_params=self.from_params, grid=not_bound, bounds=self.bounds, param_theta=self.param_theta)

    def law(self) -> Law:
        """This law unbound, as a `Law` named like it: parameters and pins, no evaluation (a saved fit's law)."""
        return self._unbound

    def bind(self, points: CurvePoints) -> Law:
        """An ordinary `Law` over `points`: input column "curve_point" (1-based index into `points`). The
        same (law, points) pair returns the same object, so jit compiles once."""
        if points.spec != self.spec:
            raise ValueError(f"curve law {self.name} needs sums built with {self.spec}, got {points.spec}")
        return _bind(self, points)

    def evaluate(self, params: np.ndarray, points: CurvePoints) -> np.ndarray:
        """L at every point for each row of reported parameters `params` [B, K]: [B, n]."""
        law = self.bind(points)
        idx = np.arange(1, len(points) + 1, dtype=float)
        return law.predict_many(np.atleast_2d(params), **{POINT: idx})


@functools.lru_cache(maxsize=64)
def _bind(family: CurveLaw, points: CurvePoints) -> Law:
    arrays = points.arrays()

    def log_loss(theta, logx):
        data = {k: jnp.asarray(v) for k, v in arrays.items()}
        full = family.log_loss(theta, data)  # [n points]
        idx = jnp.rint(jnp.exp(logx[0])).astype(jnp.int32) - 1  # the rows' points
        return full[idx]

    def grid(logx, logy):
        # Starts from the points' own values: rows are points in any order, so map them back.
        idx = np.rint(np.exp(np.asarray(logx[0]))).astype(int) - 1
        y = np.full(len(points), np.nan)
        y[idx] = np.asarray(logy)
        return family.grid(points, y)

    return Law(name=family.name, formula=family.formula, inputs=(POINT,), theta_names=family.theta_names,
               param_names=family.param_names, log_loss=log_loss, to_params=family.to_params,
               from_params=family.from_params, grid=grid, bounds=family.bounds, param_theta=family.param_theta,
               costly=True)


# ---- shared pieces ---------------------------------------------------------------------------------------


def _segment_sum(values, data):
    """sum of node `values` [m] per point -> [n]."""
    return jax.ops.segment_sum(values, data["seg"], num_segments=data["log_area"].shape[0], indices_are_sorted=True)


def _at_nodes(p, data):
    """A per-point parameter (scalar or [n]) at each node [m]."""
    return p[data["seg"]] if jnp.ndim(p) else p


def _rates_fall(points: CurvePoints) -> bool:
    """True when some point lies after a fall of its rate beyond the warmup (a decay the sums can see)."""
    for c in np.unique(points.curve):
        s = points.schedules[c]
        r = s.rates[max(s.warmup, 1) - 1:int(points.updates[points.curve == c].max())]
        if r.size > 1 and np.any(np.diff(r) < 0):
            return True
    return False


def _decay_needed(name: str, params: tuple[str, ...]):
    def check(points: CurvePoints) -> list[tuple[str, tuple[str, ...]]]:
        if _rates_fall(points):
            return []
        return [(f"no curve's rate falls after its warmup, so {', '.join(params)} of {name} are not identified; "
                 "add a curve with a decay, pin them, or fit power_steps", params)]

    return check


def _power_start(points: CurvePoints, y: np.ndarray, x: np.ndarray, alpha: float, l0: float) -> float:
    """log A such that A x^-alpha matches the median excess loss y - L0 (x: the power's variable, per point)."""
    ok = np.isfinite(y)
    excess = np.maximum(np.median(y[ok]) - l0, 1e-3 * np.median(y[ok]))
    return float(np.log(excess) + alpha * np.median(np.log(x[ok])))


# ---- multi-power law (Luo et al. 2025) -------------------------------------------------------------------

MPL_PARAMS = ("L0", "A", "alpha", "B", "C", "beta", "gamma")


def mpl_log_loss_natural(p: dict, data) -> jnp.ndarray:
    """log L of the multi-power law for named parameters `p` (scalars or per-point [n] arrays)."""
    z = jnp.log(_at_nodes(p["C"], data)) - _at_nodes(p["gamma"], data) * data["log_eta"] + data["log_s"]
    g = -jnp.expm1(-_at_nodes(p["beta"], data) * jnp.logaddexp(0.0, z))  # G = 1 - (1 + C x)^-beta
    ld = p["B"] * _segment_sum(data["weight"] * g, data)
    return jnp.log(p["L0"] + p["A"] * jnp.exp(-p["alpha"] * data["log_area"]) - ld)


def _mpl_natural(theta):
    l0, a, alpha, b, c, beta, gamma = theta
    return {"L0": jnp.exp(l0), "A": jnp.exp(a), "alpha": alpha, "B": jnp.exp(b), "C": jnp.exp(c), "beta": beta,
            "gamma": gamma}


def _mpl_log_loss(theta, data):
    return mpl_log_loss_natural(_mpl_natural(theta), data)


def _mpl_to_params(theta):
    l0, a, alpha, b, c, beta, gamma = np.moveaxis(np.asarray(theta, float), -1, 0)
    return np.stack([np.exp(l0), np.exp(a), alpha, np.exp(b), np.exp(c), beta, gamma], axis=-1)


def _mpl_from_params(p):
    L0, A, alpha, B, C, beta, gamma = p
    return np.array([safe_log(L0), safe_log(A), alpha, safe_log(B), safe_log(C), beta, gamma])


def _mpl_grid(points: CurvePoints, logy):
    # L0 below the lowest loss, A from the median excess over L0, B so that a full decay of the peak rate
    # is worth a few to tens of percent of the loss (B eta_peak ~ share x L), C x at the median node from
    # the linear part of G to deep saturation (1, 30, 1000; Luo et al.'s fits have C x ~ 400), beta and gamma
    # at 0.6 (their fits: 0.59-0.66 at every size). Twelve starts: on the shipped curves 27 of 32 starts of
    # a wider grid end at one optimum, and under vmap every start costs as much as the slowest.
    y = np.exp(logy)
    ymin = float(np.nanmin(y))
    peak = max(s.peak for s in points.schedules)
    gamma, beta, alpha = 0.6, 0.6, 0.45
    med_x = float(np.median(-gamma * points.log_eta + points.log_s)) if points.log_s.size else 0.0
    rows = []
    for l0f, share, cx in itertools.product((0.75, 0.95), (0.05, 0.3), (1.0, 30.0, 1000.0)):
        a = _power_start(points, y, np.exp(points.log_area), alpha, l0f * ymin)
        rows.append((np.log(l0f * ymin), a, alpha, np.log(share * ymin / peak), np.log(cx) - med_x, beta, gamma))
    return np.array(rows)


MULTIPOWER = CurveLaw(
    name="multipower",
    formula="L = L0 + A S1^-alpha - B sum_k (eta_{k-1} - eta_k) (1 - (C eta_k^-gamma S_k + 1)^-beta)",
    theta_names=("l0", "a", "alpha", "b", "c", "beta", "gamma"),
    param_names=MPL_PARAMS,
    log_loss=_mpl_log_loss,
    to_params=_mpl_to_params,
    from_params=_mpl_from_params,
    grid=_mpl_grid,
    spec=NodeSpec(resolve=("eta", "area")),
    bounds={"L0": (0.0, np.inf), "A": (0.0, np.inf), "alpha": (0.0, 3.0), "B": (0.0, np.inf), "C": (0.0, np.inf),
            "beta": (0.0, 5.0), "gamma": (0.0, 3.0)},
    param_theta=(0, 1, 2, 3, 4, 5, 6),
    unidentified=_decay_needed("multipower", ("B", "C", "beta", "gamma")),
    natural=mpl_log_loss_natural,
    log_params=("L0", "A", "B", "C"),
)


# ---- momentum law (Tissue et al. 2024) -------------------------------------------------------------------

TISSUE_PARAMS = ("L0", "A", "alpha", "C", "lam")


def tissue_log_loss_natural(p: dict, data) -> jnp.ndarray:
    """log L of the momentum law for named parameters `p` (scalars or per-point [n] arrays)."""
    log_lam = jnp.log(_at_nodes(p["lam"], data))
    # sum_{i=k}^{n-1} lambda^(i-k) = (1 - lambda^(n-k)) / (1 - lambda), in expm1 form for lambda near 1.
    geo = jnp.expm1(jnp.exp(data["log_steps"]) * log_lam) / jnp.expm1(log_lam)
    s2 = _segment_sum(data["weight"] * geo, data)
    return jnp.log(p["L0"] + p["A"] * jnp.exp(-p["alpha"] * data["log_area"]) - p["C"] * s2)


def _tissue_log_loss(theta, data):
    l0, a, alpha, c, kappa = theta
    return tissue_log_loss_natural({"L0": jnp.exp(l0), "A": jnp.exp(a), "alpha": alpha, "C": jnp.exp(c),
                                    "lam": jnp.exp(-jnp.exp(kappa))}, data)


def _tissue_to_params(theta):
    l0, a, alpha, c, kappa = np.moveaxis(np.asarray(theta, float), -1, 0)
    return np.stack([np.exp(l0), np.exp(a), alpha, np.exp(c), np.exp(-np.exp(kappa))], axis=-1)


def _tissue_from_params(p):
    L0, A, alpha, C, lam = p
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.log(-np.log(lam))
    return np.array([safe_log(L0), safe_log(A), alpha, safe_log(C), kappa])


def _tissue_grid(points: CurvePoints, logy):
    # C scaled like B above (a full decay worth a share of the loss, times the momentum's reach 1/(1-lambda)).
    y = np.exp(logy)
    ymin = float(np.nanmin(y))
    peak = max(s.peak for s in points.schedules)
    rows = []
    for l0f, alpha, share, lam in itertools.product((0.75, 0.95), (0.3, 0.6), (0.05, 0.3), (0.99, 0.999)):
        a = _power_start(points, y, np.exp(points.log_area), alpha, l0f * ymin)
        rows.append((np.log(l0f * ymin), a, alpha, np.log(share * ymin * (1 - lam) / peak), np.log(-np.log(lam))))
    return np.array(rows)


TISSUE = CurveLaw(
    name="tissue",
    formula="L = L0 + A S1^-alpha - C S2, S2 = sum_i m_i, m_i = lam m_{i-1} + (eta_{i-1} - eta_i)",
    theta_names=("l0", "a", "alpha", "c", "kappa"),
    param_names=TISSUE_PARAMS,
    log_loss=_tissue_log_loss,
    to_params=_tissue_to_params,
    from_params=_tissue_from_params,
    grid=_tissue_grid,
    spec=NodeSpec(resolve=("steps",), flat_warmup=True),
    bounds={"L0": (0.0, np.inf), "A": (0.0, np.inf), "alpha": (0.0, 3.0), "C": (0.0, np.inf), "lam": (0.0, 1.0)},
    param_theta=(0, 1, 2, 3, 4),
    unidentified=_decay_needed("tissue", ("C", "lam")),
    natural=tissue_log_loss_natural,
    log_params=("L0", "A", "C"),
)


# ---- power law in steps ------------------------------------------------------------------------------------


def _steps_log_loss(theta, data):
    l0, a, alpha = theta
    return lse(l0, a - alpha * data["log_updates"])


def _steps_to_params(theta):
    l0, a, alpha = np.moveaxis(np.asarray(theta, float), -1, 0)
    return np.stack([np.exp(l0), np.exp(a), alpha], axis=-1)


def _steps_from_params(p):
    L0, A, alpha = p
    return np.array([safe_log(L0), safe_log(A), alpha])


def _steps_grid(points: CurvePoints, logy):
    y = np.exp(logy)
    ymin = float(np.nanmin(y))
    rows = []
    for l0f, alpha in itertools.product((0.3, 0.6, 0.8, 0.95), (0.1, 0.3, 0.6, 1.0)):
        rows.append((np.log(l0f * ymin), _power_start(points, y, points.updates.astype(float), alpha, l0f * ymin),
                     alpha))
    return np.array(rows)


POWER_STEPS = CurveLaw(
    name="power_steps",
    formula="L = L0 + A n^-alpha (n optimizer steps; constant-rate curves)",
    theta_names=("l0", "a", "alpha"),
    param_names=("L0", "A", "alpha"),
    log_loss=_steps_log_loss,
    to_params=_steps_to_params,
    from_params=_steps_from_params,
    grid=_steps_grid,
    spec=NodeSpec(resolve=(), resolution=np.inf),
    bounds={"L0": (0.0, np.inf), "A": (0.0, np.inf), "alpha": (0.0, 3.0)},
    param_theta=(0, 1, 2),
    natural=lambda p, data: jnp.log(p["L0"] + p["A"] * jnp.exp(-p["alpha"] * data["log_updates"])),
    log_params=("L0", "A"),
)


def with_resolution(law: CurveLaw, resolution: float) -> CurveLaw:
    """`law` with its schedule sums merged at another resolution h (0: every step its own node)."""
    return replace(law, spec=replace(law.spec, resolution=float(resolution)))


__all__ = ["POINT", "CurveLaw", "MULTIPOWER", "TISSUE", "POWER_STEPS", "mpl_log_loss_natural",
           "tissue_log_loss_natural", "with_resolution"]
