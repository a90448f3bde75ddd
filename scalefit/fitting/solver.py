"""The solver: robust multi-start minimisation of a law's objective, and the run-level bootstrap.

Hoffmann et al. 2022 (App. D.2) fit log L with a Huber loss (delta = 1e-3) on log residuals by L-BFGS
from a grid of starts; Besiroglu et al. 2024 showed that stopping on scipy's default tolerances gives
wrong answers and collapsed confidence intervals. Here all starts run at once under `jax.vmap`, in
float64, as damped Newton iterations (Levenberg-Marquardt: IRLS Gauss-Newton matrix while exploring
the grid, the exact Hessian to finish), each until its gradient norm is below `gtol`. A quasi-Newton
method with a line search (L-BFGS) vectorises badly: under vmap every start waits for the slowest
line search; a damped Newton step is the same work for every start. The bootstrap reuses the same
solver: a resample is a vector of integer row weights (how often each run was drawn), warm-started
from the full-data optimum, all resamples vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scalefit.fitting.laws import Law


class SolverError(ValueError):
    """No start of a fit produced a finite objective."""


@dataclass(frozen=True)
class Objective:
    """The per-row penalty on log residuals r = log L_pred - log L_obs, summed with row weights.

    rho(r) = r^2 / 2 for |r| <= delta, delta (|r| - delta / 2) otherwise (Huber 1964; the
    convention of scipy.special.huber that Hoffmann et al. and Besiroglu et al. sum), times
    `over_penalty` where r > 0, so over-predicting the loss can be made to cost more.
    """

    delta: float = 1e-3  # Huber threshold on log residuals; larger -> closer to least squares
    over_penalty: float = 1.0  # multiplier on the penalty of over-predictions (r > 0); 1 = symmetric

    def __post_init__(self):
        if not self.delta > 0:
            raise ValueError(f"Huber delta must be > 0, got {self.delta}")
        if not self.over_penalty > 0:
            raise ValueError(f"over_penalty must be > 0, got {self.over_penalty}")

    def __call__(self, r):
        a = jnp.abs(r)
        rho = jnp.where(a <= self.delta, 0.5 * r * r, self.delta * (a - 0.5 * self.delta))
        return self._asym(r, rho)

    def psi(self, r):
        """d rho / d r."""
        return self._asym(r, jnp.clip(r, -self.delta, self.delta))

    def irls_weight(self, r):
        """psi(r) / r: the weight of the row in iteratively reweighted least squares."""
        return self._asym(r, self.delta / jnp.maximum(jnp.abs(r), self.delta))

    def _asym(self, r, x):
        return x if self.over_penalty == 1.0 else jnp.where(r > 0, self.over_penalty * x, x)


class Solution(NamedTuple):
    """Final state of a batch of solver runs (S = starts or resamples, P = fit-space parameters)."""

    theta: np.ndarray  # [S, P] fit-space parameters
    value: np.ndarray  # [S] objective (inf where the run produced NaN)
    grad_norm: np.ndarray  # [S] Euclidean norm of the gradient at theta
    iterations: np.ndarray  # [S] iterations taken


def _damped_newton(law, objective, logx, logy, w, hessian):
    """One Levenberg-Marquardt step function for one start, and the objective it minimises.

    The step also returns the gradient norm at the theta it started from (the IRLS `g` is the true
    gradient too), so the stopping test costs nothing extra.

    `hessian="irls"` uses the Gauss-Newton matrix J^T diag(w psi(r)/r) J (iteratively reweighted
    least squares for Huber: always positive semi-definite, robust far from a minimum);
    `hessian="exact"` uses the true Hessian (fast local convergence where most residuals lie in
    Huber's linear part and the Gauss-Newton matrix is a poor model). Steps that do not lower the
    objective are rejected and the damping grows (Marquardt 1963), so no line search is needed and
    every start does identical work, which is what makes `vmap` over thousands of starts cheap.
    """

    def fun(theta):
        return jnp.sum(w * objective(law.log_loss(theta, logx) - logy))

    def step(theta, lam, f):
        if hessian == "irls":
            r = law.log_loss(theta, logx) - logy  # [n]
            J = jax.jacfwd(law.log_loss)(theta, logx)  # [n, P]
            g = J.T @ (w * objective.psi(r))  # [P]
            H = J.T @ ((w * objective.irls_weight(r))[:, None] * J)  # [P, P]
        else:
            # One forward-over-reverse pass gives the gradient and the Hessian's columns together.
            g, hvp = jax.linearize(jax.grad(fun), theta)
            H = jax.vmap(hvp)(jnp.eye(theta.shape[0], dtype=theta.dtype))  # [P, P], symmetric
        d = jnp.diag(H)
        delta = jnp.linalg.solve(H + lam * jnp.diag(jnp.abs(d) + 1e-12), -g)
        f_new = fun(theta + delta)
        ok = f_new < f  # NaN compares False: rejected
        return (jnp.where(ok, theta + delta, theta), jnp.where(ok, lam * 0.3, lam * 5.0),
                jnp.where(ok, f_new, f), jnp.linalg.norm(g))

    return fun, step


@partial(jax.jit, static_argnames=("law", "objective", "max_iter", "hessian", "weights_per_start"))
def _solve_batch(theta0, logx, logy, weights, gtol, *, law, objective, max_iter, hessian,
                 weights_per_start):
    # theta0 [S, P]; logx [n_inputs, n]; logy [n]; weights [S, n] if weights_per_start else [n].
    def run(theta_init, w):
        fun, step = _damped_newton(law, objective, logx, logy, w, hessian)
        grad_norm = lambda th: jnp.linalg.norm(jax.grad(fun)(th))

        def body(c):
            theta, lam, f, k, _ = c
            theta, lam, f, g = step(theta, lam, f)  # g: |grad| before this step, which only lowers f
            return theta, lam, f, k + 1, g

        def going(c):
            _, lam, f, k, g = c
            return (k < max_iter) & (g >= gtol) & jnp.isfinite(f) & (lam < 1e12)

        f0 = fun(theta_init)
        theta, lam, f, k, _ = jax.lax.while_loop(going, body, (theta_init, 1e-3, f0, 0, jnp.inf))
        return theta, jnp.where(jnp.isfinite(f), f, jnp.inf), grad_norm(theta), k

    return jax.vmap(run, in_axes=(0, 0 if weights_per_start else None))(theta0, weights)


def solve(law: Law, theta0, logx, logy, weights, *, objective: Objective = Objective(),
          gtol: float = 1e-9, max_iter: int = 500, hessian: str = "irls") -> Solution:
    """Minimise sum_i w_i rho(log L_law(theta; x_i) - log y_i) from every row of `theta0` [S, P].

    Each start stops when its gradient norm is below `gtol`, after `max_iter` steps, or when no
    step lowers the objective any more (damping saturated: a converged float64 run ends there).
    `weights` is [n] (shared) or [S, n] (one weighting per start: bootstrap resamples).
    Runs in float64 whatever the global JAX setting.
    """
    if hessian not in ("irls", "exact"):
        raise ValueError(f"hessian must be 'irls' or 'exact', got {hessian!r}")
    with jax.enable_x64(True):
        w = jnp.asarray(weights, jnp.float64)
        out = _solve_batch(jnp.asarray(theta0, jnp.float64), jnp.asarray(logx, jnp.float64),
                           jnp.asarray(logy, jnp.float64), w, jnp.float64(gtol), law=law,
                           objective=objective, max_iter=int(max_iter), hessian=hessian,
                           weights_per_start=w.ndim == 2)
        return Solution(*(np.asarray(x) for x in out))


class Multistart(NamedTuple):
    """Outcome of a multi-start fit."""

    best: np.ndarray  # [P] fit-space parameters of the lowest objective
    value: float  # its objective
    grad_norm: float  # gradient norm there
    iterations: int  # solver iterations of the best start (both stages)
    n_starts: int  # starts run
    share_at_best: float  # fraction of all starts that ended within tolerance of the best objective
    converged: bool  # the best start met the gradient criterion


def multistart(law: Law, logx, logy, weights, *, starts=None, objective: Objective = Objective(),
               gtol: float = 1e-9, explore_iter: int = 10, keep: int = 64, keep_factor: float = 2.0,
               max_keep: int = 1024, max_iter: int = 500, rtol_best: float = 1e-6,
               explore_hessian: str = "irls") -> Multistart:
    """Fit from every start (default: the law's grid) and keep the best.

    Stage 1 runs `explore_iter` IRLS-Marquardt steps from every start; stage 2 continues, with
    exact-Hessian damped Newton until the gradient norm is below `gtol`, every start whose stage-1
    objective is within `keep_factor` of the lowest (at least `keep`, at most `max_keep`; padded to
    a power of two so the compile is reused). Starts cut after stage 1 count as not reaching the
    best in `share_at_best` (objective within best * (1 + rtol_best)).
    """
    theta0 = law.grid(np.asarray(logx), np.asarray(logy)) if starts is None else np.atleast_2d(starts)
    s1 = solve(law, theta0, logx, logy, weights, objective=objective, gtol=gtol,
               max_iter=explore_iter, hessian=explore_hessian)
    order = np.argsort(s1.value, kind="stable")
    near = int(np.sum(s1.value <= keep_factor * s1.value[order[0]]))
    n_keep = min(len(order), max_keep, 1 << int(np.ceil(np.log2(max(near, keep, 1)))))
    top = order[:n_keep]
    s2 = solve(law, s1.theta[top], logx, logy, weights, objective=objective, gtol=gtol,
               max_iter=max_iter, hessian="exact")
    values = s1.value.copy()
    values[top] = s2.value
    j = int(np.argmin(s2.value))
    best = float(s2.value[j])
    if not np.isfinite(best):
        raise SolverError(f"every one of {len(theta0)} starts of law {law.name!r} produced NaN/inf")
    share = float(np.mean(values <= best * (1 + rtol_best) + 1e-15))
    return Multistart(best=s2.theta[j], value=best, grad_norm=float(s2.grad_norm[j]),
                      iterations=int(s1.iterations[top[j]] + s2.iterations[j]), n_starts=len(theta0),
                      share_at_best=share, converged=bool(s2.grad_norm[j] < gtol))


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
              chunk: int = 250, progress: bool = False) -> Solution:
    """Refit on `n_resamples` run-level resamples, each warm-started at `theta_hat`.

    Resamples are solved `chunk` at a time (one compile: the last chunk is padded), so a progress
    bar can advance and memory stays bounded.
    """
    w = resample_weights(runs, n_resamples, seed) * np.asarray(weights, float)[None, :]
    parts = []
    chunks = range(0, n_resamples, chunk)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="bootstrap", unit="chunk", total=len(chunks))
    for lo in chunks:
        wc = w[lo:lo + chunk]
        pad = chunk - len(wc)
        if pad:
            wc = np.concatenate([wc, np.repeat(wc[-1:], pad, axis=0)])
        theta0 = np.repeat(np.asarray(theta_hat, float)[None, :], chunk, axis=0)
        sol = solve(law, theta0, logx, logy, wc, objective=objective, gtol=gtol, max_iter=max_iter,
                    hessian="exact")
        parts.append(Solution(*(x[:chunk - pad] for x in sol)))
    return Solution(*(np.concatenate(xs) for xs in zip(*parts)))
