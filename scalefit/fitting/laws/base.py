"""A scaling law as data: a pure log-prediction, named parameters, a start grid, and what it can do.

Every law predicts log L from the logs of its inputs, in a fit-space parametrisation `theta` chosen so
the objective is smooth and unconstrained (log-sum-exp forms, Hoffmann et al. 2022, App. D.2), and
maps theta to the named parameters a user reads (E, A, B, alpha, beta ...). The fitter only calls
`log_loss`, `grid`, `to_params` and `from_params` (and `separable`, the power-sum form a law may
declare: then it is evaluated in numpy and fitted by variable projection); everything downstream asks
the law what it can do (`can_allocate`, `conditions`, `has_frontier`, `optimum`, `derived`), never its
name. A law defined outside the package is fitted, predicted and allocated exactly like a shipped one.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from scalefit.fitting.laws.separable import PowerSum
from scalefit.fitting.lazy import jax, jnp

# Inputs a compute budget C is split into; every other input of a law in them is a condition.
BUDGET_INPUTS = ("N", "D")
# A `Law.collapse` parameter below this share of the smallest observed loss has collapsed to 0.
COLLAPSE_RTOL = 1e-2


def lse(*terms):
    """log(sum(exp(t))) over broadcastable arrays, shifted by their maximum.

    Written out rather than `jax.nn.logsumexp(jnp.stack(...))`: on the CPU that spends several times
    longer in stacking and its inf-guards, and this is the whole cost of a fit's objective.
    """
    m = terms[0]
    for t in terms[1:]:
        m = jnp.maximum(m, t)
    return m + jnp.log(sum(jnp.exp(t - m) for t in terms))


def safe_log(x):
    """log x where a fitted E (or A, B) that underflowed to exactly 0 maps to -inf without a warning:
    the log-sum-exp forms handle exp(-inf) = 0, so it is a value here, not an error."""
    with np.errstate(divide="ignore"):
        return np.log(x)


def product(*axes) -> np.ndarray:
    """Every combination of the given 1-D axes, as rows [prod(len), n_axes] of a start grid."""
    return np.array(list(itertools.product(*axes)), dtype=float)


@dataclass(frozen=True)
class Law:
    """A scaling law. Frozen and hashable (by identity of its functions) so jit can take it static."""

    name: str  # registry key, e.g. "chinchilla"; a pinned law is "chinchilla[E=1.6]"
    formula: str  # human-readable form, for summaries
    inputs: tuple[str, ...]  # table columns the law reads, in order: "N", "D", "C", "U"
    theta_names: tuple[str, ...]  # fit-space parameters, in order (the free ones)
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
    # Closed-form compute-optimal split: (params [B, K], C [m], compute model) -> (N, D) [B, m], or
    # None where no closed form applies (then the optimum is searched numerically).
    optimum: Callable | None = field(default=None, repr=False)
    # The theta coordinate each reported parameter is a monotone function of ([K] indices into
    # theta_names); what `with_fixed` needs to pin a parameter. None: the law cannot pin any.
    param_theta: tuple[int, ...] | None = None
    # Reported parameters held at given values, by name (not fitted, no uncertainty).
    fixed: tuple[tuple[str, float], ...] = ()
    # The law the pins were applied to (None for a law that pins nothing).
    origin: Law | None = field(default=None, repr=False)
    # Which parameters N counts in the law's published form ("active" for the MoE laws: what one token
    # uses); a fit refuses a table whose N is another kind. None: any kind, read as the table's own.
    n_kind: str | None = None
    # This law as an affine restriction of another: (base law, M [P_base, P], c [P_base]) with
    # theta_base = M theta + c. The solver then runs the base law's compiled code (pins and tied
    # exponents share one compilation); None: the law is its own base.
    affine: tuple | None = field(default=None, repr=False, compare=False, hash=False)
    # {derived name: value} -> the reparametrised law in which those derived quantities are held (e.g.
    # Chinchilla's a = beta/(alpha+beta) = 0.5 is beta = alpha); None: no derived quantity can be pinned.
    pin_derived: Callable | None = field(default=None, repr=False)
    # Reported parameters whose fall to ~0 (below COLLAPSE_RTOL x the smallest observed loss) means a
    # term of the law vanished: a degenerate fit (the irreducible loss E of the saturating forms).
    collapse: tuple[str, ...] = ()
    # The law as a sum of power terms with nonnegative coefficients (`scalefit.fitting.laws.separable`):
    # then it is evaluated in numpy and fitted by variable projection (`scalefit.fitting.varpro`) rather
    # than from its start grid. None: the law has no such form (or does not say), and is fitted from `grid`.
    separable: PowerSum | None = field(default=None, repr=False, compare=False, hash=False)
    # One evaluation sums many terms (curve laws: thousands of schedule terms per point), so the solver pads
    # a batch of starts only to a power of two, not to a whole block: there the padding's work, not the
    # compilation it saves, is the cost.
    costly: bool = False

    def __str__(self) -> str:
        return self.name

    # ---- what the law can do -----------------------------------------------------------------------

    @property
    def can_allocate(self) -> bool:
        """True when a budget C can be split into N and D: the law reads both."""
        return all(c in self.inputs for c in BUDGET_INPUTS)

    @property
    def conditions(self) -> tuple[str, ...]:
        """Inputs an allocation must be given besides the budget (e.g. U, the unique tokens)."""
        return tuple(c for c in self.inputs if c not in BUDGET_INPUTS) if self.can_allocate else ()

    @property
    def has_frontier(self) -> bool:
        """True when the law gives the best loss at a budget C alone: a law in C, or one that allocates
        C with nothing else to be given."""
        return self.inputs == ("C",) or (self.can_allocate and not self.conditions)

    @property
    def n_free(self) -> int:
        """Parameters the fit estimates (pinned ones excluded)."""
        return len(self.theta_names)

    # ---- prediction --------------------------------------------------------------------------------

    def predict(self, params: dict, **inputs) -> np.ndarray:
        """L at the given inputs (arrays broadcast), from reported parameters `params` (by name)."""
        p = np.array([[params[k] for k in self.param_names]], float)
        return self.predict_many(p, **inputs)[0]

    def predict_many(self, params: np.ndarray, **inputs) -> np.ndarray:
        """L for each row of reported parameters `params` [B, K] at the inputs: [B, *input shape]."""
        self._check_inputs(inputs)
        shape = np.broadcast_shapes(*(np.shape(inputs[c]) for c in self.inputs))
        logx = np.stack([np.broadcast_to(np.log(np.asarray(inputs[c], float)), shape).ravel()
                         for c in self.inputs])  # [n_inputs, n]
        theta = self._thetas(params)  # [B, P]
        return np.exp(_evaluate(self, False, theta, logx)).reshape((len(theta),) + shape)

    def predict_paired(self, params: np.ndarray, **inputs) -> np.ndarray:
        """L for row b of `params` [B, K] at row b of the inputs [B, ...] (not every pair): [B, ...]."""
        self._check_inputs(inputs)
        theta = self._thetas(params)  # [B, P]
        shape = np.broadcast_shapes(*(np.shape(inputs[c]) for c in self.inputs))
        if not shape or shape[0] not in (1, len(theta)):
            raise ValueError(f"paired inputs need a leading axis of {len(theta)} (one per parameter row), "
                             f"got shape {shape}")
        shape = (len(theta),) + shape[1:]
        logx = np.stack([np.broadcast_to(np.log(np.asarray(inputs[c], float)), shape).reshape(shape[0], -1)
                         for c in self.inputs])  # [n_inputs, B, n]
        return np.exp(_evaluate(self, True, theta, logx)).reshape(shape)

    def log_loss_many(self, theta: np.ndarray, logx: np.ndarray) -> np.ndarray:
        """log L for each row of fit-space parameters `theta` [B, P] at log inputs `logx` [n_inputs, n]: [B, n]."""
        return _evaluate(self, False, np.atleast_2d(np.asarray(theta, float)), np.asarray(logx, float))

    def jacobian(self, theta: np.ndarray, logx: np.ndarray) -> np.ndarray:
        """d log L / d theta at fit-space `theta` [P] for log inputs `logx` [n_inputs, n]: [n, P], float64."""
        if self.separable is not None:
            return self.separable.jacobian(theta, logx)
        with jax.enable_x64(True):
            return np.asarray(_jacobian(self)(jnp.asarray(theta, jnp.float64), jnp.asarray(logx, jnp.float64)))

    def _thetas(self, params) -> np.ndarray:
        return np.stack([self.from_params(p) for p in np.atleast_2d(np.asarray(params, float))])

    def _check_inputs(self, inputs) -> None:
        missing = [c for c in self.inputs if c not in inputs]
        if missing:
            raise ValueError(f"law {self.name} ({self.formula}) needs inputs {list(self.inputs)}; "
                             f"missing {missing}")

    # ---- pinned parameters -------------------------------------------------------------------------

    def with_fixed(self, **values: float) -> Law:
        """This law with some reported parameters held at `values` (e.g. E=1.6): the fit estimates the
        rest. A derived quantity the law can pin (`pin_derived`, e.g. Chinchilla's a=0.5: N_opt ~ C^0.5)
        reparametrises the law instead. The same request returns the same object, so jit reuses its
        compilation."""
        return _with_fixed(self, tuple(sorted((k, float(v)) for k, v in values.items())))

    @property
    def solver_form(self) -> tuple[Law, np.ndarray, np.ndarray]:
        """(base law, M [P_base, P], c [P_base]) with theta_base = M theta + c: what the solver compiles."""
        if self.affine is None:
            return self, np.eye(self.n_free), np.zeros(self.n_free)
        return self.affine


@functools.lru_cache(maxsize=256)
def _compiled(law: Law, paired: bool):
    """The law's log-prediction vmapped over parameter rows (and, `paired`, over input rows), jitted
    once per law: a plan's search calls it thousands of times, and eager dispatch would dominate."""
    return jax.jit(jax.vmap(law.log_loss, in_axes=(0, 1 if paired else None)))


@functools.lru_cache(maxsize=256)
def _jacobian(law: Law):
    return jax.jit(jax.jacfwd(law.log_loss))


def _evaluate(law: Law, paired: bool, theta: np.ndarray, logx: np.ndarray) -> np.ndarray:
    if law.separable is not None:  # closed form in numpy: no compilation for the laws that have one
        return law.separable.log_loss(theta, logx)
    with jax.enable_x64(True):
        return np.asarray(_compiled(law, paired)(jnp.asarray(theta, jnp.float64), jnp.asarray(logx, jnp.float64)))


@functools.lru_cache(maxsize=256)
def _with_fixed(base: Law, pairs: tuple[tuple[str, float], ...]) -> Law:
    if base.origin is not None:  # pin on top of the law the pins started from: one canonical name
        return _with_fixed(base.origin, tuple(sorted((dict(base.fixed) | dict(pairs)).items())))
    if not pairs:
        return base
    values = dict(pairs)
    derived = {k: v for k, v in values.items() if k not in base.param_names}
    if derived:
        if base.pin_derived is None:
            raise ValueError(f"law {base.name} has no parameter {next(iter(derived))!r} to fix; its parameters "
                             f"are {', '.join(base.param_names)}")
        inner = base.pin_derived(derived)  # the reparametrised law, pinning nothing yet
        rest = {k: v for k, v in values.items() if k not in derived}
        law = _pin(inner, rest) if rest else inner
        label = ", ".join(f"{k}={v:g}" for k, v in sorted(values.items()))
        return replace(law, name=f"{base.name}[{label}]", formula=f"{base.formula} with {label} fixed",
                       fixed=tuple(sorted(values.items())), origin=base, param_theta=None)
    return _pin(base, values)


def _pin(base: Law, values: dict) -> Law:
    """`base` with reported parameters `values` held: the free theta coordinates are the rest."""
    if base.param_theta is None:
        raise ValueError(f"law {base.name} does not say which fit coordinate each parameter is, so none "
                         "can be fixed (give it param_theta)")
    for k in values:
        if k not in base.param_names:
            raise ValueError(f"law {base.name} has no parameter {k!r} to fix; its parameters are "
                             f"{', '.join(base.param_names)}")
        if base.param_theta[base.param_names.index(k)] is None:
            raise ValueError(f"law {base.name}: {k} is tied to another parameter and cannot be fixed on its own")
    if len(values) >= len(base.theta_names):
        raise ValueError(f"fixing {len(values)} of the {len(base.theta_names)} parameters of {base.name} "
                         "leaves nothing to fit")
    P = len(base.theta_names)
    full = np.array([values.get(k, np.nan) for k in base.param_names])  # [K], NaN where free
    pin = np.array(sorted(base.param_theta[base.param_names.index(k)] for k in values))  # [P - P']
    free = np.array([j for j in range(P) if j not in set(pin)])  # [P']
    # theta of the pinned coordinates: from_params of a full vector with the free entries at 1.
    theta_pin = base.from_params(np.where(np.isnan(full), 1.0, full))[pin]  # [P - P']
    M = np.zeros((P, len(free)))  # [P, P'] puts the free coordinates in place
    M[free, np.arange(len(free))] = 1.0
    c = np.zeros(P)
    c[pin] = theta_pin

    def expand_jnp(theta):  # [P'] -> [P] inside the objective
        return jnp.zeros(P, theta.dtype).at[free].set(theta).at[pin].set(theta_pin)

    def expand_np(theta):  # [..., P'] -> [..., P]
        theta = np.asarray(theta, float)
        out = np.empty(theta.shape[:-1] + (P,))
        out[..., free], out[..., pin] = theta, theta_pin
        return out

    def to_params(theta):
        # The pinned values exactly, not their round trip through the fit space.
        return np.where(np.isnan(full), base.to_params(expand_np(theta)), full)

    outer, M0, c0 = base.solver_form
    label = ", ".join(f"{k}={v:g}" for k, v in sorted(values.items()))
    return replace(
        base, name=f"{base.name}[{label}]", formula=f"{base.formula} with {label} fixed",
        theta_names=tuple(base.theta_names[j] for j in free),
        log_loss=lambda theta, logx: base.log_loss(expand_jnp(theta), logx), to_params=to_params,
        from_params=lambda p: base.from_params(np.where(np.isnan(full), np.asarray(p, float), full))[free],
        grid=lambda logx, logy: np.unique(base.grid(logx, logy)[:, free], axis=0),
        fixed=tuple(sorted(values.items())), param_theta=None, origin=base,
        affine=(outer, M0 @ M, M0 @ c + c0), separable=None)
