"""The run-level bootstrap: resamples of whole runs as integer row weights, refitted by the solver.

Efron & Tibshirani 1993 (the cluster bootstrap): a run contributes all its rows or none, so the points of
one training curve are not treated as independent. Each resample is a weight vector, so the refits are
batched solver runs (`scalefit.fitting.solver.solve`) warm-started at the full-data optimum.
"""

from __future__ import annotations

import numpy as np

from scalefit.fitting import varpro
from scalefit.fitting.laws import Law
from scalefit.fitting.objective import Objective
from scalefit.fitting.solver import BLOCK, Solution, solve


def _run_counts(runs: np.ndarray, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(how often each run is drawn per resample [B, n_runs], each row's run [n_rows])."""
    _, run_index = np.unique(runs, return_inverse=True)
    n_runs = run_index.max() + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_runs, size=(n_resamples, n_runs))
    return np.stack([np.bincount(d, minlength=n_runs) for d in draws]), run_index


def resample_weights(runs: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Row weights [n_resamples, n_rows] of a bootstrap that resamples whole runs with replacement.

    A run contributes all its rows or none (Efron & Tibshirani 1993, the cluster bootstrap), so
    points from one training curve are not treated as independent.
    """
    counts, run_index = _run_counts(runs, n_resamples, seed)  # [B, n_runs], [n_rows]
    return counts[:, run_index].astype(float)  # [B, n_rows]


# Most resample x row weights one bootstrap chunk holds (8 bytes each): bounds its memory on big tables.
BOOTSTRAP_CELLS = 1 << 22


def bootstrap(law: Law, theta_hat, logx, logy, weights, runs, *, n_resamples: int, seed: int,
              objective: Objective = Objective(), gtol: float = 1e-9, max_iter: int = 500,
              chunk: int = 4 * BLOCK, progress: bool = False, scale_hat: float | None = None) -> Solution:
    """Refit on `n_resamples` run-level resamples (`resample_weights`), each warm-started at `theta_hat`
    (and, for the likelihood, at the fitted scale `scale_hat`).

    Resamples are solved `chunk` at a time (whole solver blocks; fewer on a table so big that a chunk
    would hold more than BOOTSTRAP_CELLS weights), so a progress bar can advance and memory stays bounded.
    A law with a power-sum form (`scalefit.fitting.varpro.applies`) is refitted by the same damped Newton
    steps in closed form (`scalefit.fitting.varpro.refine`, numpy), the others by the compiled solver.
    """
    closed_form = varpro.applies(law, objective, weights)
    counts, run_index = _run_counts(runs, n_resamples, seed)  # [B, n_runs], [n]
    w = np.asarray(weights, float)  # [n]
    n = len(w)
    chunk = max(1, min(chunk, BOOTSTRAP_CELLS // max(n, 1)))
    block = BLOCK if chunk >= BLOCK else chunk
    parts = []
    chunks = range(0, n_resamples, chunk)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="bootstrap", unit="chunk", total=len(chunks))
    for lo in chunks:
        wc = counts[lo:lo + chunk][:, run_index] * w[None, :]  # [chunk, n]
        theta0 = np.repeat(np.asarray(theta_hat, float)[None, :], len(wc), axis=0)
        if closed_form:
            parts.append(varpro.refine(law.separable, theta0, logx, logy, wc, objective=objective, gtol=gtol,
                                       max_iter=max_iter))
            continue
        parts.append(solve(law, theta0, logx, logy, wc, objective=objective, gtol=gtol, max_iter=max_iter,
                           hessian="exact", scale0=None if scale_hat is None else np.full(len(wc), scale_hat),
                           block=block))
    cat = [np.concatenate(xs) for xs in zip(*[p[:4] for p in parts])]
    scale = None if parts[0].scale is None else np.concatenate([p.scale for p in parts])
    return Solution(*cat, scale=scale, gtol=np.concatenate([p.gtol for p in parts]))
