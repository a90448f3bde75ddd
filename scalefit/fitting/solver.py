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
from typing import NamedTuple

import numpy as np

from scalefit.fitting.laws import Law
from scalefit.fitting.lazy import jax, jnp, lazy_jit
from scalefit.fitting.objective import Objective, _omega, _psi, _rho  # noqa: F401  (Objective: importable here too)

BLOCK = 64  # starts per compiled call: every solve is cut into (padded) blocks of this many
MIN_ROWS = 16  # rows are padded to a power of two at least this large
FINISH_SCREEN_ITER = 30  # exact steps every kept start gets before only the best block (costly laws: few) finish
# The gradient tolerance is per this much row weight: the objective is a sum over rows, so the gradient
# float64 can resolve grows with the rows' total weight (a step that lowers the gradient further lowers
# the objective by less than its rounding); tables up to this weight stop exactly at `gtol`.
GTOL_WEIGHT = 256.0
# Above this many rows of weight > 0 the starts are screened on a subsample of this many rows (spread
# over the range of the first input) and only the best few subsample optima are refined on every row:
# the search is then the same work for a table of 1e4 or 1e6 rows, and memory stays O(rows).
SCREEN_ROWS = 1024
POLISH_STARTS = 2  # subsample optima refined on every row (one compiled block)
COSTLY_FINISH = 4  # starts of a `Law.costly` law that run to the end after the exact screen
# Between the screening subsample and every row, the refinement runs on subsamples this many times larger
# each (1024 -> 32768 -> all): each stage starts near its optimum, so the costly passes over every row are few.
POLISH_GROWTH = 32


MULTISTART_METHOD = "multi-start damped Newton (IRLS explore, exact-Hessian finish), float64, vmapped"


class SolverError(ValueError):
    """No start of a fit produced a finite objective."""


class Solution(NamedTuple):
    """Final state of a batch of solver runs (S = starts or resamples, P = fit-space parameters)."""

    theta: np.ndarray  # [S, P] fit-space parameters
    value: np.ndarray  # [S] objective (inf where the run produced NaN)
    grad_norm: np.ndarray  # [S] Euclidean norm of the gradient at theta
    iterations: np.ndarray  # [S] iterations taken
    scale: np.ndarray | None = None  # [S] fitted log-residual scale sigma (likelihood objective), else None
    gtol: np.ndarray | None = None  # [S] gradient tolerance each run stopped on (`gtol_for`)

    @property
    def converged(self) -> np.ndarray:
        """[S] whether each run met its gradient criterion."""
        return self.grad_norm < self.gtol


def gtol_for(gtol: float, weights) -> np.ndarray:
    """The gradient tolerance of a fit with these row weights ([n] -> scalar array, [S, n] -> [S]):
    gtol x max(1, sum(w) / GTOL_WEIGHT), so `gtol` means the same per row on a table of any size."""
    total = np.sum(np.asarray(weights, float), axis=-1)
    return gtol * np.maximum(1.0, total / GTOL_WEIGHT)


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


@lazy_jit(static_argnames=("law", "kind"))
def _solve_batch(z0, logx, logy, weights, M, c, pen, hyper, gtol, max_iter, use_exact, *, law, kind):
    # z0 [S, Q]; logx [n_inputs, n]; logy [n]; weights [S, n]; gtol [S]; M [Pb, Pb]; c [Pb]; pen [Pb];
    # hyper [2]; max_iter, use_exact: scalars shared by every start.
    def run(z_init, w, gtol):
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

    return jax.vmap(run)(z0, weights, gtol)


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
          gtol: float = 1e-9, max_iter: int = 500, hessian: str = "irls", scale0=None,
          block: int = BLOCK) -> Solution:
    """Minimise sum_i w_i rho(log L_law(theta; x_i) - log y_i) from every row of `theta0` [S, P].

    Each start stops when its gradient norm is below `gtol`, after `max_iter` steps, or when no
    step lowers the objective any more (damping saturated: a converged float64 run ends there).
    `weights` is [n] (shared) or [S, n] (one weighting per start: bootstrap resamples, the folds of a
    cross-validation). With the likelihood objective the log scale is fitted too, from `scale0` [S]
    (sigma) or from the residuals at each start. Runs in float64 whatever the global JAX setting, in
    compiled calls of `block` starts; `gtol` is scaled by each start's total row weight (`gtol_for`).
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
    tol = gtol_for(gtol, w_rows)  # [S]
    if base.costly:
        block = min(block, 1 << max(S - 1, 0).bit_length())
    n_pad = (-S) % block
    z0 = np.concatenate([z0, np.repeat(z0[-1:], n_pad, axis=0)])
    pw = np.concatenate([pw, np.repeat(pw[-1:], n_pad, axis=0)])
    tol_pad = np.concatenate([tol, np.repeat(tol[-1:], n_pad)])
    outs = []
    with jax.enable_x64(True):
        args = [jnp.asarray(a, jnp.float64) for a in (px, py, Mq, c, pen, objective.hyper)]
        for lo in range(0, len(z0), block):
            out = _solve_batch(jnp.asarray(z0[lo:lo + block]), args[0], args[1], jnp.asarray(pw[lo:lo + block]),
                               *args[2:], jnp.asarray(tol_pad[lo:lo + block]), jnp.int32(max_iter),
                               jnp.bool_(hessian == "exact"), law=base, kind=objective.kind)
            outs.append([np.asarray(x) for x in out])
    z, value, grad_norm, iterations = (np.concatenate(xs)[:S] for xs in zip(*outs))
    return Solution(theta=z[:, :P], value=value, grad_norm=grad_norm, iterations=iterations,
                    scale=np.exp(z[:, Pb]) if objective.scale else None, gtol=tol)


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
    method: str = MULTISTART_METHOD  # how the optimum was searched, in words (`SolverInfo.solver`)
    finalists: np.ndarray | None = None  # [F, P] the starts run to the end, lowest objective first


def multistart(law: Law, logx, logy, weights, *, starts=None, objective: Objective = Objective(),
               gtol: float = 1e-9, explore_iter: int = 10, keep: int = 64, keep_factor: float = 2.0,
               max_keep: int = 1024, max_iter: int = 500, rtol_best: float = 1e-6,
               explore_hessian: str = "irls") -> Multistart:
    """Fit from every start (default: the law's grid) and keep the best.

    Stage 1 runs `explore_iter` IRLS-Marquardt steps from every start; stage 2 continues, with
    exact-Hessian damped Newton until the gradient norm is below `gtol` (per `GTOL_WEIGHT` of row
    weight, `gtol_for`), every start whose stage-1 objective is within `keep_factor` of the lowest (at
    least `keep`, at most `max_keep`; a whole number of solver blocks); when that is more than one
    block (for a `Law.costly` law: more than COSTLY_FINISH), all of them get FINISH_SCREEN_ITER exact steps
    and the best block (COSTLY_FINISH) of them runs to the end: under vmap every start waits for the slowest.
    Starts cut after stage 1 count as not reaching the best in `share_at_best` (objective within
    best * (1 + rtol_best)).

    A table of more than SCREEN_ROWS rows (of weight > 0) runs these stages on a subsample of
    SCREEN_ROWS rows spread over the range of its first input (weights scaled to the table's total),
    then refines the POLISH_STARTS best subsample optima on every row; `share_at_best` is then the
    subsample's. Memory is O(rows x POLISH_STARTS), not O(rows x starts).
    """
    logx, logy = np.atleast_2d(np.asarray(logx, float)), np.asarray(logy, float)
    w = np.asarray(weights, float)
    theta0 = law.grid(logx, logy) if starts is None else np.atleast_2d(starts)
    stages = dict(objective=objective, gtol=gtol, explore_iter=explore_iter, keep=keep, keep_factor=keep_factor,
                  max_keep=max_keep, max_iter=max_iter, explore_hessian=explore_hessian)
    # A costly law's bound evaluation reads every row's terms whichever rows are asked for, so a subsample
    # of rows saves nothing: its fit screens on a smaller table of its own (`scalefit.fitting.curvefit`).
    sub = None if law.costly else screening_rows(logx, w)
    if sub is None:
        fin, values, iters = _search(law, theta0, logx, logy, w, **stages)
    else:
        ws = w[sub] * (w.sum() / w[sub].sum())
        screen, values, iters = _search(law, theta0, logx[:, sub], logy[sub], ws, **stages)
        best = np.argsort(screen.value, kind="stable")[:POLISH_STARTS]
        fin, iters = _take(screen, best), iters[best]
        m = SCREEN_ROWS
        while m < int(np.sum(w > 0)):
            m *= POLISH_GROWTH
            rows = screening_rows(logx, w, m)
            lx, ly, lw = (logx, logy, w) if rows is None else (logx[:, rows], logy[rows],
                                                              w[rows] * (w.sum() / w[rows].sum()))
            if rows is None:  # the pass over every row refines only the best so far: it costs the most
                keep_best = np.argsort(fin.value, kind="stable")[:1]
                fin, iters = _take(fin, keep_best), iters[keep_best]
            fin = solve(law, fin.theta, lx, ly, lw, objective=objective, gtol=gtol, max_iter=max_iter,
                        hessian="exact", scale0=fin.scale, block=len(fin.theta))
            iters = iters + fin.iterations
    order = np.argsort(fin.value, kind="stable")
    j = int(order[0])
    best_value = float(fin.value[j])
    if not np.isfinite(best_value):
        raise SolverError(f"every one of {len(theta0)} starts of law {law.name!r} produced NaN/inf")
    # The likelihood's objective can be negative: "within tolerance" is measured on its magnitude.
    ref = best_value if sub is None else float(np.min(values))
    share = float(np.mean(values <= ref + abs(ref) * rtol_best + 1e-15))
    return Multistart(best=fin.theta[j], value=best_value, grad_norm=float(fin.grad_norm[j]),
                      iterations=int(iters[j]), n_starts=len(theta0), share_at_best=share,
                      converged=bool(fin.converged[j]),
                      scale=float("nan") if fin.scale is None else float(fin.scale[j]),
                      finalists=fin.theta[order])


def _take(sol: Solution, idx) -> Solution:
    """The runs `idx` of a Solution."""
    return Solution(*(None if x is None else x[idx] for x in sol))


def screening_rows(logx, weights, size: int = SCREEN_ROWS) -> np.ndarray | None:
    """Indices of `size` rows to screen starts on, or None when the table has no more rows (of weight > 0)
    than that: rows evenly spaced in the order of the first input (log N), so the subsample spans the
    table's range, its smallest and largest row included."""
    live = np.flatnonzero(np.asarray(weights) > 0)
    if len(live) <= size:
        return None
    ordered = live[np.argsort(np.asarray(logx)[0, live], kind="stable")]
    return np.sort(ordered[np.round(np.linspace(0, len(ordered) - 1, size)).astype(int)])


def _search(law, theta0, logx, logy, w, *, objective, gtol, explore_iter, keep, keep_factor, max_keep, max_iter,
            explore_hessian):
    """The stages of `multistart` on these rows: (the finished starts' Solution, every start's objective [S],
    the finished starts' total iterations)."""
    s1 = solve(law, theta0, logx, logy, w, objective=objective, gtol=gtol,
               max_iter=explore_iter, hessian=explore_hessian)
    order = np.argsort(s1.value, kind="stable")
    near = int(np.sum(s1.value <= keep_factor * s1.value[order[0]] + 1e-300))
    n_keep = min(len(order), max_keep, BLOCK * math.ceil(max(near, keep, 1) / BLOCK))
    top = order[:n_keep]
    finish = COSTLY_FINISH if law.costly else BLOCK
    s2 = solve(law, s1.theta[top], logx, logy, w, objective=objective, gtol=gtol,
               max_iter=max_iter if n_keep <= finish else FINISH_SCREEN_ITER, hessian="exact",
               scale0=None if s1.scale is None else s1.scale[top])
    values = s1.value.copy()
    values[top] = s2.value
    if n_keep > finish:  # many starts near the best: only the best block of them (costly laws: a few) finish
        last = np.argsort(s2.value, kind="stable")[:finish]
        s3 = solve(law, s2.theta[last], logx, logy, w, objective=objective, gtol=gtol, max_iter=max_iter,
                   hessian="exact", scale0=None if s2.scale is None else s2.scale[last])
        top = top[last]
        values[top] = s3.value
        s2 = s3._replace(iterations=s2.iterations[last] + s3.iterations)
    return s2, values, s1.iterations[top] + s2.iterations
