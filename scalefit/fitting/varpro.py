"""Variable projection: the fit of a law that is a sum of power terms, in numpy, without a start grid.

For L = sum_k c_k f_k(x; phi) with c_k >= 0 (`scalefit.fitting.laws.separable.PowerSum`; Chinchilla's
E + A / N^alpha + B / D^beta), the coefficients c enter linearly at fixed exponents phi (Golub & Pereyra
1973). So the search runs over a grid of phi only: at each cell, c solves the nonnegative least squares

    min_{c >= 0} sum_i v_i (sum_k c_k f_k(x_i) - y_i)^2,    v_i = w_i omega_i / y_i^2,

(the 1 / y^2 makes a residual in L a relative one, i.e. a log residual to first order; omega_i, Huber's
IRLS weight of the row's log residual, is updated for a few rounds so the cell's fit approaches the
Huber one). The cells whose sum-Huber objective on log residuals is a local minimum of the grid are
then refined on that objective itself (Hoffmann et al. 2022, App. D.2: the same objective as the
multi-start solver of `scalefit.fitting.solver`) by damped Newton with the exact Hessian, which the
log-sum-exp form gives in closed form: every u_k = log c_k + log f_k is linear in theta, so

    d r / d theta = J = sum_k p_k U_k,   d^2 r / d theta^2 = sum_k p_k U_k U_k^T - J J^T,

p_k the term's share of the predicted loss. A bootstrap resample starts from the full-data optimum and
needs a few of the same steps (`refine`, vectorised over resamples). NNLS with K coefficients is solved
exactly by enumerating the 2^K - 1 supports (the optimum is the unconstrained least squares on its
support; K is 2 or 3 here).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from scalefit.fitting.laws import Law
from scalefit.fitting.laws.separable import PowerSum
from scalefit.fitting.objective import Objective, huber_numpy
from scalefit.fitting.solver import SCREEN_ROWS, Multistart, Solution, SolverError, gtol_for

STATE_BLOCK = 64  # starts whose Newton state is computed together (larger blocks fall out of the cache)
IRLS_ROUNDS = 3  # Huber reweightings of each cell's least squares
REFINE_CELLS = 8  # grid cells (local minima, best first) refined on the full objective
METHOD = ("variable projection (exponent grid, coefficients by nonnegative least squares), best cells refined "
          "by damped Newton with the exact Hessian, float64, numpy")
# A coefficient the least squares sets to exactly 0 starts its refinement at this share of the smallest
# loss (at the row where its term is largest): finite, so the Newton steps can move it either way.
ZERO_COEF_SHARE = 1e-6


def applies(law: Law, objective: Objective, weights, starts=None) -> bool:
    """True when `fit` can use this module: the law declares its power-sum form, the objective is the
    Huber penalty (not the likelihood with its fitted scale), no starts were asked for, and the table is
    no larger than the multi-start solver's screening subsample (the grid holds every row of every cell)."""
    return (law.separable is not None and not objective.scale and starts is None
            and int(np.sum(np.asarray(weights) > 0)) <= SCREEN_ROWS)


def project(ps: PowerSum, logx, logy, w, objective: Objective) -> tuple[np.ndarray, np.ndarray]:
    """(theta [G, P] of each exponent-grid cell with its coefficients by (reweighted) NNLS, the sum-Huber
    objective there [G])."""
    phi = ps.grid()  # [G, Q]
    theta = np.zeros((len(phi), ps.n_theta))
    theta[:, list(ps.exponents)] = phi
    logf = ps.terms(theta, logx)  # [G, K, n] with log c = 0
    top = logf.max(axis=2, keepdims=True)  # [G, K, 1]: each column scaled to a maximum of 1
    F = np.exp(logf - top)
    y = np.exp(logy)
    v = np.broadcast_to(w / y**2, (len(phi), len(y)))  # [G, n]
    for rounds in range(IRLS_ROUNDS + 1):
        c = _nnls(F, y, v)  # [G, K]
        with np.errstate(divide="ignore"):
            r = np.log(np.einsum("gk,gkn->gn", c, F)) - logy  # [G, n]
        rho, _, _ = huber_numpy(r, objective.delta, objective.over_penalty)
        value = np.sum(w * rho, axis=1)
        if rounds < IRLS_ROUNDS:  # Huber's IRLS weight psi(r) / r of each row
            side = np.where(r > 0, objective.over_penalty, 1.0)
            v = w * side * objective.delta / np.maximum(np.abs(r), objective.delta) / y**2
    floor = np.log(ZERO_COEF_SHARE * y.min()) - top[..., 0]  # [G, K]
    with np.errstate(divide="ignore"):
        logc = np.where(c > 0, np.log(np.where(c > 0, c, 1.0)) - top[..., 0], floor)
    theta[:, list(ps.coef)] = logc
    return theta, np.where(np.isfinite(value), value, np.inf)


def _nnls(F, y, v) -> np.ndarray:
    """argmin_{c >= 0} sum_n v_gn (sum_k c_gk F_gkn - y_n)^2 for every g: c [G, K], by enumerating supports."""
    Fv = F * v[:, None, :]  # [G, K, n]
    gram = Fv @ F.transpose(0, 2, 1)  # [G, K, K]
    b = Fv @ y  # [G, K]
    d = np.sqrt(np.maximum(np.einsum("gkk->gk", gram), 1e-300))  # [G, K]
    gram = gram / (d[:, :, None] * d[:, None, :])
    b = b / d
    G, K = b.shape
    best, c = np.zeros(G), np.zeros((G, K))  # the empty support: c = 0, objective change 0
    for size in range(1, K + 1):
        for S in itertools.combinations(range(K), size):
            idx = list(S)
            A = gram[:, idx][:, :, idx] + 1e-12 * np.eye(size)
            cs = np.linalg.solve(A, b[:, idx, None])[..., 0]  # [G, size]
            gain = -np.sum(cs * b[:, idx], axis=1)  # change of the objective from c = 0
            take = np.all(cs > 0, axis=1) & (gain < best)
            best = np.where(take, gain, best)
            c[take] = 0.0
            c[np.ix_(take, idx)] = cs[take]
    return c / d


def local_minima(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Indices of grid cells whose value is no larger than any neighbour along an axis, best first."""
    grid = values.reshape(shape)
    keep = np.isfinite(grid)
    for ax in range(grid.ndim):
        pad = [(0, 0)] * grid.ndim
        pad[ax] = (1, 1)
        g = np.pad(grid, pad, constant_values=np.inf)
        lo = np.take(g, range(0, shape[ax]), axis=ax)
        hi = np.take(g, range(2, shape[ax] + 2), axis=ax)
        keep &= (grid <= lo) & (grid <= hi)
    idx = np.flatnonzero(keep.ravel())
    return idx[np.argsort(values[idx], kind="stable")]


class _Rows(NamedTuple):
    """The rows of a refinement as fixed arrays, so that each Newton step is a few vectorised sums over all
    starts at once (u = theta @ Ut; J, the gradient and the Hessian from the terms' shares p_k and U's rows,
    module docstring), skipping the entries of U that are 0 (most: each term has one coefficient and few
    exponents)."""

    Ut: np.ndarray  # [P, K n]: u_k,n = sum_p theta_p U[k, p, n]
    U: np.ndarray  # [K, P, n] d u_k / d theta_p at each row
    uses: tuple  # per p: the terms k whose u_k depends on theta_p
    pairs: tuple  # per (p, q), p <= q: ((k, U[k, p] U[k, q] [n]), ...) over the terms with both


def _rows(ps: PowerSum, logx) -> _Rows:
    U = ps.design(logx)  # [K, P, n]
    K, P, n = U.shape
    uses = tuple(tuple(k for k in range(K) if np.any(U[k, p])) for p in range(P))
    pairs = tuple(tuple((k, U[k, p] * U[k, q]) for k in set(uses[p]) & set(uses[q]))
                  for p in range(P) for q in range(p, P))
    return _Rows(U.transpose(1, 0, 2).reshape(P, K * n), U, uses, pairs)


def _state(rows: _Rows, z, logy, w, objective: Objective):
    """(f [S], g [S, P], H [S, P, P]) of sum_n w rho(log L(z) - log y) at rows z [S, P], weights w [S, n]."""
    S, P = z.shape
    n = len(logy)
    u = (z @ rows.Ut).reshape(S, -1, n)  # [S, K, n]
    m = u.max(axis=1, keepdims=True)
    e = np.exp(u - m)
    tot = e.sum(axis=1, keepdims=True)
    p = e / tot  # [S, K, n] each term's share of the loss
    r = (m + np.log(tot))[:, 0] - logy  # [S, n]
    rho, psi, curv = huber_numpy(r, objective.delta, objective.over_penalty)
    wpsi, a = w * psi, w * (curv - psi)
    J = np.stack([sum(p[:, k] * rows.U[k, j] for k in rows.uses[j]) for j in range(P)], axis=1)  # [S, P, n]
    g = np.einsum("sn,spn->sp", wpsi, J)
    # Gauss-Newton part sum w (rho'' - psi) J J^T, plus the curvature of LSE: sum w psi p_k U_k U_k^T.
    H = np.einsum("spn,sqn->spq", J * a[:, None, :], J)
    it = iter(rows.pairs)
    for i in range(P):
        for j in range(i, P):
            for k, uu in next(it):
                h = (wpsi * p[:, k]) @ uu
                H[:, i, j] += h
                if i != j:
                    H[:, j, i] += h
    f = np.sum(w * rho, axis=1)
    return np.where(np.isfinite(f), f, np.inf), g, H


def _blocked(rows: _Rows, z, logy, w, objective: Objective):
    """`_state` in blocks of STATE_BLOCK starts: the arrays of one block stay in the CPU's cache."""
    if len(z) <= STATE_BLOCK:
        return _state(rows, z, logy, w, objective)
    parts = [_state(rows, z[lo:lo + STATE_BLOCK], logy, w[lo:lo + STATE_BLOCK], objective)
             for lo in range(0, len(z), STATE_BLOCK)]
    return tuple(np.concatenate(x) for x in zip(*parts))


def refine(ps: PowerSum, theta0, logx, logy, weights, *, objective: Objective = Objective(), gtol: float = 1e-9,
           max_iter: int = 500) -> Solution:
    """Damped Newton (Levenberg-Marquardt with the exact Hessian, as `scalefit.fitting.solver`) from every
    row of `theta0` [S, P], each with its own row weights (`weights` [n] or [S, n]), until the gradient
    norm is below `gtol` (per `gtol_for`), `max_iter` steps, or no step lowers the objective any more."""
    z = np.array(np.atleast_2d(theta0), float)
    S = len(z)
    logx, logy = np.atleast_2d(np.asarray(logx, float)), np.asarray(logy, float)
    w = np.array(np.broadcast_to(np.asarray(weights, float), (S, len(logy))))
    tol = gtol_for(gtol, w)  # [S]
    rows = _rows(ps, logx)
    f, g, H = _blocked(rows, z, logy, w, objective)
    lam = np.full(S, 1e-3)
    iters = np.zeros(S, int)
    going = np.isfinite(f)
    eye = np.eye(z.shape[1])
    for _ in range(max_iter):
        going &= (np.linalg.norm(g, axis=1) >= tol) & (lam < 1e12)
        a = np.flatnonzero(going)
        if not len(a):
            break
        A = H[a] + lam[a, None, None] * (np.abs(np.einsum("spp->sp", H[a]))[:, :, None] * eye + 1e-12 * eye)
        with np.errstate(all="ignore"):
            try:
                dz = np.linalg.solve(A, -g[a][:, :, None])[..., 0]
            except np.linalg.LinAlgError:  # a singular system somewhere: that start's step is rejected
                dz = np.stack([np.linalg.lstsq(m, -v, rcond=None)[0] for m, v in zip(A, g[a])])
            f1, g1, H1 = _blocked(rows, z[a] + dz, logy, w[a], objective)
        ok = f1 < f[a]  # NaN compares False: rejected
        t = a[ok]
        z[t], f[t], g[t], H[t] = z[t] + dz[ok], f1[ok], g1[ok], H1[ok]
        lam[a] = np.where(ok, lam[a] * 0.3, lam[a] * 5.0)
        iters[a] += 1
    return Solution(theta=z, value=f, grad_norm=np.linalg.norm(g, axis=1), iterations=iters, gtol=tol)


def multistart(law: Law, logx, logy, weights, *, objective: Objective = Objective(), gtol: float = 1e-9,
               max_iter: int = 500, rtol_best: float = 1e-6, cells: int = REFINE_CELLS) -> Multistart:
    """The fit of a law with a power-sum form (module docstring): project on the exponent grid, refine the
    best `cells` local minima of the grid. `n_starts` counts the grid's cells; `share_at_best` is the
    share of them whose refinement reached the best objective (cells not refined count as not)."""
    ps = law.separable
    logx, logy = np.atleast_2d(np.asarray(logx, float)), np.asarray(logy, float)
    w = np.asarray(weights, float)
    theta, values = project(ps, logx, logy, w, objective)
    shape = tuple(len(ax) for ax in ps.exponent_grid)
    order = local_minima(values, shape)[:cells]
    if len(order) < cells:  # a grid with fewer local minima: its best other cells fill up
        rest = np.argsort(values, kind="stable")
        order = np.concatenate([order, rest[~np.isin(rest, order)][:cells - len(order)]])
    sol = refine(ps, theta[order], logx, logy, w, objective=objective, gtol=gtol, max_iter=max_iter)
    j = int(np.argmin(sol.value))
    best = float(sol.value[j])
    if not np.isfinite(best):
        raise SolverError(f"every one of {len(order)} refined grid cells of law {law.name!r} produced NaN/inf")
    reached = int(np.sum(sol.value <= best + abs(best) * rtol_best + 1e-15))
    return Multistart(best=sol.theta[j], value=best, grad_norm=float(sol.grad_norm[j]),
                      iterations=int(sol.iterations[j]), n_starts=len(values), share_at_best=reached / len(values),
                      converged=bool(sol.converged[j]), method=METHOD)
