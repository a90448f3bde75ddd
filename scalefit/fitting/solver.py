"""The solver: robust multi-start minimisation of a law's objective, and the run-level bootstrap.

Hoffmann et al. 2022 (App. D.2) fit log L with a Huber loss (delta = 1e-3) on log residuals by L-BFGS
from a grid of starts; Besiroglu et al. 2024 showed that stopping on scipy's default tolerances gives
wrong answers and collapsed confidence intervals. Here all starts run at once under `jax.vmap`, in
float64, as damped Newton iterations (Levenberg-Marquardt: IRLS Gauss-Newton matrix while exploring
the grid, the exact Hessian to finish), each until its gradient norm is below `gtol`. A quasi-Newton
method with a line search (L-BFGS) vectorises badly: under vmap every start waits for the slowest
line search; a damped Newton step is the same work for every start. The bootstrap reuses the same
solver: a resample is a vector of integer row weights (how often each run was drawn), warm-started
from the full-data optimum, all resamples vectorised; so are the refits of cross-validation.

One compilation per (base law, objective kind, padded row count) serves every call: starts run in
blocks of `BLOCK`, rows are padded to a power of two with zero weight, the objective's numbers (delta,
over-penalty), the Hessian kind and the iteration cap are traced values, and a law that is an affine
restriction of another (pinned parameters, tied exponents: `Law.solver_form`) runs the other's code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtr

from scalefit.fitting.laws import Law

BLOCK = 64  # starts per compiled call: every solve is cut into (padded) blocks of this many
MIN_ROWS = 16  # rows are padded to a power of two at least this large
FINISH_SCREEN_ITER = 30  # exact steps every kept start gets before only the best block finishes


class SolverError(ValueError):
    """No start of a fit produced a finite objective."""


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


def _asym(r, x, over):
    return jnp.where(r > 0, over * x, x)


def _rho(r, delta, over):
    a = jnp.abs(r)
    return _asym(r, jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta)), over)


def _psi(r, delta, over):
    return _asym(r, jnp.clip(r, -delta, delta), over)


def _omega(r, delta, over):
    return _asym(r, delta / jnp.maximum(jnp.abs(r), delta), over)


class Solution(NamedTuple):
    """Final state of a batch of solver runs (S = starts or resamples, P = fit-space parameters)."""

    theta: np.ndarray  # [S, P] fit-space parameters
    value: np.ndarray  # [S] objective (inf where the run produced NaN)
    grad_norm: np.ndarray  # [S] Euclidean norm of the gradient at theta
    iterations: np.ndarray  # [S] iterations taken
    scale: np.ndarray | None = None  # [S] fitted log-residual scale sigma (likelihood objective), else None


def _objective_fn(law, kind, logx, logy, w, M, c, pen, hyper):
    """fun(z) for one start: z = [free theta padded to the base law's size (+ log sigma)]."""
    delta, over = hyper[0], hyper[1]
    Pb = M.shape[0]

    def fun(z):
        r = law.log_loss(M @ z[:Pb] + c, logx) - logy  # [n]
        reg = 0.5 * jnp.sum(pen * z[:Pb] ** 2)  # holds the unused padding coordinates at 0
        if kind == "likelihood":
            s = z[Pb]
            return jnp.sum(w * (_rho(r * jnp.exp(-s), delta, over) + s)) + reg
        return jnp.sum(w * _rho(r, delta, over)) + reg

    return fun


def _damped_newton(law, kind, logx, logy, w, M, c, pen, hyper):
    """One Levenberg-Marquardt step function for one start, and the objective it minimises.

    The step also returns the gradient norm at the point it started from (the IRLS `g` is the true
    gradient too), so the stopping test costs nothing extra.

    The IRLS step uses the Gauss-Newton matrix J^T diag(w psi(r)/r) J (iteratively reweighted least
    squares for Huber: always positive semi-definite, robust far from a minimum); the exact step uses
    the true Hessian (fast local convergence where most residuals lie in Huber's linear part and the
    Gauss-Newton matrix is a poor model). `exact` (traced, the same for every start) picks one with
    `lax.cond`, so both live in one compilation. Steps that do not lower the objective are rejected and
    the damping grows (Marquardt 1963), so no line search is needed and every start does identical work,
    which is what makes `vmap` over thousands of starts cheap.
    """
    fun = _objective_fn(law, kind, logx, logy, w, M, c, pen, hyper)
    delta, over = hyper[0], hyper[1]
    Pb = M.shape[0]

    def irls(z):
        theta = M @ z[:Pb] + c
        r = law.log_loss(theta, logx) - logy  # [n]
        J = jax.jacfwd(law.log_loss)(theta, logx) @ M  # [n, Pb]
        if kind == "likelihood":
            s = z[Pb]
            u = r * jnp.exp(-s)  # standardised residuals [n]
            J = jnp.concatenate([J * jnp.exp(-s), -u[:, None]], axis=1)  # du/dz [n, Pb + 1]
            g = J.T @ (w * _psi(u, delta, over)) + jnp.zeros(Pb + 1).at[Pb].set(jnp.sum(w))
            H = J.T @ ((w * _omega(u, delta, over))[:, None] * J)
        else:
            g = J.T @ (w * _psi(r, delta, over))  # [Pb]
            H = J.T @ ((w * _omega(r, delta, over))[:, None] * J)  # [Pb, Pb]
        pz = jnp.zeros_like(z).at[:Pb].set(pen)  # [Q]
        return g + pz * z, H + jnp.diag(pz)

    def exact(z):
        # One forward-over-reverse pass gives the gradient and the Hessian's columns together.
        g, hvp = jax.linearize(jax.grad(fun), z)
        return g, jax.vmap(hvp)(jnp.eye(z.shape[0], dtype=z.dtype))  # [Q], [Q, Q] symmetric

    def step(z, lam, f, use_exact):
        g, H = jax.lax.cond(use_exact, exact, irls, z)
        d = jnp.diag(H)
        dz = jnp.linalg.solve(H + lam * jnp.diag(jnp.abs(d) + 1e-12), -g)
        f_new = fun(z + dz)
        ok = f_new < f  # NaN compares False: rejected
        return (jnp.where(ok, z + dz, z), jnp.where(ok, lam * 0.3, lam * 5.0),
                jnp.where(ok, f_new, f), jnp.linalg.norm(g))

    return fun, step


@partial(jax.jit, static_argnames=("law", "kind"))
def _solve_batch(z0, logx, logy, weights, M, c, pen, hyper, gtol, max_iter, use_exact, *, law, kind):
    # z0 [S, Q]; logx [n_inputs, n]; logy [n]; weights [S, n]; M [Pb, Pb]; c [Pb]; pen [Pb]; hyper [2];
    # gtol, max_iter, use_exact: scalars shared by every start.
    def run(z_init, w):
        fun, step = _damped_newton(law, kind, logx, logy, w, M, c, pen, hyper)

        def body(state):
            z, lam, f, k, _ = state
            z, lam, f, g = step(z, lam, f, use_exact)  # g: |grad| before this step, which only lowers f
            return z, lam, f, k + 1, g

        def going(state):
            _, lam, f, k, g = state
            return (k < max_iter) & (g >= gtol) & jnp.isfinite(f) & (lam < 1e12)

        f0 = fun(z_init)
        z, lam, f, k, _ = jax.lax.while_loop(going, body, (z_init, 1e-3, f0, 0, jnp.inf))
        return z, jnp.where(jnp.isfinite(f), f, jnp.inf), jnp.linalg.norm(jax.grad(fun)(z)), k

    return jax.vmap(run)(z0, weights)


def padded_rows(n: int) -> int:
    """The row count a table of n rows is padded to: a power of two from MIN_ROWS to 256 (a table and its
    subsets, such as a backtest's fitted part, then mostly share one compilation, which on a small table
    costs more than the padding), and beyond that the next of 1.5 x 2^k or 2^k (384, 512, 768, ...), so
    padding wastes at most a third of a large table's work."""
    size = MIN_ROWS
    while size < n:
        size = size * 2 if size < 256 else size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def _pad(logx, logy, weights):
    """Rows padded to `padded_rows` with copies of the first row at zero weight (finite, so 0 * it = 0)."""
    logx, logy = np.atleast_2d(np.asarray(logx, float)), np.asarray(logy, float)
    n = logy.shape[0]
    extra = padded_rows(n) - n
    w = np.asarray(weights, float)
    if not extra:
        return logx, logy, w
    logx = np.concatenate([logx, np.repeat(logx[:, :1], extra, axis=1)], axis=1)
    logy = np.concatenate([logy, np.repeat(logy[:1], extra)])
    w = np.concatenate([w, np.zeros(w.shape[:-1] + (extra,))], axis=-1)
    return logx, logy, w


def initial_log_scale(law: Law, theta0, logx, logy, weights, objective: Objective) -> np.ndarray:
    """A start for log sigma of the likelihood at each start [S]: the scale that is optimal for the
    residuals there when all lie beyond delta (delta x mean |r|) or within it (RMS r)."""
    theta0 = np.atleast_2d(np.asarray(theta0, float))
    with jax.enable_x64(True):
        pred = np.asarray(jax.vmap(law.log_loss, in_axes=(0, None))(jnp.asarray(theta0), jnp.asarray(logx)))
    r = np.abs(pred - np.asarray(logy)[None, :])  # [S, n]
    w = np.broadcast_to(np.asarray(weights, float), r.shape)
    with np.errstate(invalid="ignore"):
        mean_abs = np.sum(w * np.where(np.isfinite(r), r, 1.0), axis=1) / np.maximum(w.sum(axis=1), 1e-300)
    return np.log(np.maximum(mean_abs * min(objective.delta, 1.0), 1e-8))


def solve(law: Law, theta0, logx, logy, weights, *, objective: Objective = Objective(),
          gtol: float = 1e-9, max_iter: int = 500, hessian: str = "irls", scale0=None) -> Solution:
    """Minimise sum_i w_i rho(log L_law(theta; x_i) - log y_i) from every row of `theta0` [S, P].

    Each start stops when its gradient norm is below `gtol`, after `max_iter` steps, or when no
    step lowers the objective any more (damping saturated: a converged float64 run ends there).
    `weights` is [n] (shared) or [S, n] (one weighting per start: bootstrap resamples, the folds of a
    cross-validation). With the likelihood objective the log scale is fitted too, from `scale0` [S]
    (sigma) or from the residuals at each start. Runs in float64 whatever the global JAX setting.
    """
    if hessian not in ("irls", "exact"):
        raise ValueError(f"hessian must be 'irls' or 'exact', got {hessian!r}")
    theta0 = np.atleast_2d(np.asarray(theta0, float))
    S, P = theta0.shape
    base, M, c = law.solver_form
    Pb = M.shape[0]
    w_rows = np.broadcast_to(np.asarray(weights, float), (S, np.shape(logy)[0]))
    px, py, pw = _pad(logx, logy, w_rows)
    Q = Pb + (1 if objective.scale else 0)
    z0 = np.zeros((S, Q))
    z0[:, :P] = theta0
    if objective.scale:
        s0 = (initial_log_scale(law, theta0, logx, logy, w_rows, objective) if scale0 is None
              else np.log(np.broadcast_to(np.asarray(scale0, float), (S,))))
        z0[:, Pb] = s0
    Mq = np.zeros((Pb, Pb))
    Mq[:, :P] = M
    pen = np.r_[np.zeros(P), np.ones(Pb - P)]
    n_pad = (-S) % BLOCK
    z0 = np.concatenate([z0, np.repeat(z0[-1:], n_pad, axis=0)])
    pw = np.concatenate([pw, np.repeat(pw[-1:], n_pad, axis=0)])
    outs = []
    with jax.enable_x64(True):
        args = [jnp.asarray(a, jnp.float64) for a in (px, py, Mq, c, pen, objective.hyper)]
        for lo in range(0, len(z0), BLOCK):
            out = _solve_batch(jnp.asarray(z0[lo:lo + BLOCK]), args[0], args[1], jnp.asarray(pw[lo:lo + BLOCK]),
                               *args[2:], jnp.float64(gtol), jnp.int32(max_iter), jnp.bool_(hessian == "exact"),
                               law=base, kind=objective.kind)
            outs.append([np.asarray(x) for x in out])
    z, value, grad_norm, iterations = (np.concatenate(xs)[:S] for xs in zip(*outs))
    return Solution(theta=z[:, :P], value=value, grad_norm=grad_norm, iterations=iterations,
                    scale=np.exp(z[:, Pb]) if objective.scale else None)


class Multistart(NamedTuple):
    """Outcome of a multi-start fit."""

    best: np.ndarray  # [P] fit-space parameters of the lowest objective
    value: float  # its objective
    grad_norm: float  # gradient norm there
    iterations: int  # solver iterations of the best start (both stages)
    n_starts: int  # starts run
    share_at_best: float  # fraction of all starts that ended within tolerance of the best objective
    converged: bool  # the best start met the gradient criterion
    scale: float = float("nan")  # fitted scale sigma (likelihood objective), else NaN


def multistart(law: Law, logx, logy, weights, *, starts=None, objective: Objective = Objective(),
               gtol: float = 1e-9, explore_iter: int = 10, keep: int = 64, keep_factor: float = 2.0,
               max_keep: int = 1024, max_iter: int = 500, rtol_best: float = 1e-6,
               explore_hessian: str = "irls") -> Multistart:
    """Fit from every start (default: the law's grid) and keep the best.

    Stage 1 runs `explore_iter` IRLS-Marquardt steps from every start; stage 2 continues, with
    exact-Hessian damped Newton until the gradient norm is below `gtol`, every start whose stage-1
    objective is within `keep_factor` of the lowest (at least `keep`, at most `max_keep`; a whole number
    of solver blocks); when that is more than one block, all of them get FINISH_SCREEN_ITER exact steps
    and the best block of them runs to the end. Starts cut after stage 1 count as not reaching the best in `share_at_best`
    (objective within best * (1 + rtol_best)).
    """
    theta0 = law.grid(np.asarray(logx), np.asarray(logy)) if starts is None else np.atleast_2d(starts)
    s1 = solve(law, theta0, logx, logy, weights, objective=objective, gtol=gtol,
               max_iter=explore_iter, hessian=explore_hessian)
    order = np.argsort(s1.value, kind="stable")
    near = int(np.sum(s1.value <= keep_factor * s1.value[order[0]] + 1e-300))
    n_keep = min(len(order), max_keep, BLOCK * math.ceil(max(near, keep, 1) / BLOCK))
    top = order[:n_keep]
    s2 = solve(law, s1.theta[top], logx, logy, weights, objective=objective, gtol=gtol,
               max_iter=max_iter if n_keep <= BLOCK else FINISH_SCREEN_ITER, hessian="exact",
               scale0=None if s1.scale is None else s1.scale[top])
    values = s1.value.copy()
    values[top] = s2.value
    if n_keep > BLOCK:  # many starts near the best: only the best block of them runs to the end
        last = np.argsort(s2.value, kind="stable")[:BLOCK]
        s3 = solve(law, s2.theta[last], logx, logy, weights, objective=objective, gtol=gtol, max_iter=max_iter,
                   hessian="exact", scale0=None if s2.scale is None else s2.scale[last])
        top = top[last]
        values[top] = s3.value
        s2 = Solution(s3.theta, s3.value, s3.grad_norm, s2.iterations[last] + s3.iterations, s3.scale)
    j = int(np.argmin(s2.value))
    best = float(s2.value[j])
    if not np.isfinite(best):
        raise SolverError(f"every one of {len(theta0)} starts of law {law.name!r} produced NaN/inf")
    # The likelihood's objective can be negative: "within tolerance" is measured on its magnitude.
    share = float(np.mean(values <= best + abs(best) * rtol_best + 1e-15))
    return Multistart(best=s2.theta[j], value=best, grad_norm=float(s2.grad_norm[j]),
                      iterations=int(s1.iterations[top[j]] + s2.iterations[j]), n_starts=len(theta0),
                      share_at_best=share, converged=bool(s2.grad_norm[j] < gtol),
                      scale=float("nan") if s2.scale is None else float(s2.scale[j]))


def resample_weights(runs: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Row weights [n_resamples, n_rows] of a bootstrap that resamples whole runs with replacement.

    A run contributes all its rows or none (Efron & Tibshirani 1993, the cluster bootstrap), so
    points from one training curve are not treated as independent.
    """
    _, run_index = np.unique(runs, return_inverse=True)
    n_runs = run_index.max() + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_runs, size=(n_resamples, n_runs))
    counts = np.stack([np.bincount(d, minlength=n_runs) for d in draws])  # [B, n_runs]
    return counts[:, run_index].astype(float)  # [B, n_rows]


def bootstrap(law: Law, theta_hat, logx, logy, weights, runs, *, n_resamples: int, seed: int,
              objective: Objective = Objective(), gtol: float = 1e-9, max_iter: int = 500,
              chunk: int = 4 * BLOCK, progress: bool = False, scale_hat: float | None = None) -> Solution:
    """Refit on `n_resamples` run-level resamples, each warm-started at `theta_hat` (and, for the
    likelihood, at the fitted scale `scale_hat`).

    Resamples are solved `chunk` at a time (whole solver blocks), so a progress bar can advance and
    memory stays bounded.
    """
    w = resample_weights(runs, n_resamples, seed) * np.asarray(weights, float)[None, :]
    parts = []
    chunks = range(0, n_resamples, chunk)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="bootstrap", unit="chunk", total=len(chunks))
    for lo in chunks:
        wc = w[lo:lo + chunk]
        theta0 = np.repeat(np.asarray(theta_hat, float)[None, :], len(wc), axis=0)
        parts.append(solve(law, theta0, logx, logy, wc, objective=objective, gtol=gtol, max_iter=max_iter,
                           hessian="exact", scale0=None if scale_hat is None else np.full(len(wc), scale_hat)))
    cat = [np.concatenate(xs) for xs in zip(*[p[:4] for p in parts])]
    scale = None if parts[0].scale is None else np.concatenate([p.scale for p in parts])
    return Solution(*cat, scale=scale)
