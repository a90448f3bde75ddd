"""Speed of the Chinchilla fit (Hoffmann's 4,500-start grid) and of a 1,000-resample bootstrap.

Prints scalefit's time beside a plain scipy L-BFGS-B loop over the same starts, measured in the same
run on the same data (Chinchilla/Epoch, 240 rows), with an analytic gradient (and with finite
differences when asked: --fd). `--scipy-starts K` times scipy on every (4500/K)-th start and scales
to 4,500 (labelled "extrapolated"), for a quicker run.

    python benchmarks/bench_fit.py [--scipy-starts 4500] [--fd] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber

from scalefit.fitting.fitter import bootstrap, multistart
from scalefit.fitting.laws import CHINCHILLA
from scalefit.fitting.table import load_table

DELTA = 1e-3


def scipy_objective(theta, logN, logD, logy):
    """Huber on log residuals of LSE(a - alpha log N, b - beta log D, e), with its gradient."""
    a, b, e, alpha, beta = theta
    t = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])  # [3, n]
    m = t.max(axis=0)
    ex = np.exp(t - m)
    s = ex.sum(axis=0)
    r = m + np.log(s) - logy
    p = ex / s  # softmax weights [3, n]
    psi = np.clip(r, -DELTA, DELTA)
    grad = np.array([psi @ p[0], psi @ p[1], psi @ p[2], -(psi * p[0]) @ logN, -(psi * p[1]) @ logD])
    return huber(DELTA, r).sum(), grad


def scipy_multistart(starts, logN, logD, logy, fd: bool):
    best = (np.inf, None)
    for x0 in starts:
        if fd:
            res = minimize(lambda th: scipy_objective(th, logN, logD, logy)[0], x0, method="L-BFGS-B")
        else:
            res = minimize(scipy_objective, x0, args=(logN, logD, logy), jac=True, method="L-BFGS-B")
        if res.fun < best[0]:
            best = (res.fun, res.x)
    return best


def timed(f, repeats: int):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scipy-starts", type=int, default=4500, help="starts to time scipy on (<= 4500)")
    ap.add_argument("--fd", action="store_true", help="also time scipy with finite differences")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the scalefit parts (median)")
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()

    frame = load_table("chinchilla").frame
    logx = np.log(np.stack([frame["N"].to_numpy(float), frame["D"].to_numpy(float)]))
    logy = np.log(frame["loss"].to_numpy(float))
    w = np.ones(len(logy))
    grid = CHINCHILLA.grid(logx, logy)

    t0 = time.perf_counter()
    ms = multistart(CHINCHILLA, logx, logy, w)
    first = time.perf_counter() - t0
    secs, ms = timed(lambda: multistart(CHINCHILLA, logx, logy, w), args.repeats)
    print(f"scalefit multistart: {len(grid)} starts, {secs:.2f} s (first call with compile {first:.2f} s), "
          f"objective {ms.value:.10f}, share at best {ms.share_at_best:.1%}")

    k = max(1, min(args.scipy_starts, len(grid)))
    sub = grid[:: len(grid) // k][:k]
    t0 = time.perf_counter()
    sp_val, _ = scipy_multistart(sub, logx[0], logx[1], logy, fd=False)
    sp = (time.perf_counter() - t0) * len(grid) / len(sub)
    tag = "" if len(sub) == len(grid) else f" (extrapolated from {len(sub)} starts)"
    print(f"scipy L-BFGS-B analytic gradient: {sp:.1f} s{tag}, objective {sp_val:.10f}")
    if args.fd:
        t0 = time.perf_counter()
        fd_val, _ = scipy_multistart(sub, logx[0], logx[1], logy, fd=True)
        fd = (time.perf_counter() - t0) * len(grid) / len(sub)
        print(f"scipy L-BFGS-B finite differences: {fd:.1f} s{tag}, objective {fd_val:.10f}")

    runs = np.arange(len(logy))
    bootstrap(CHINCHILLA, ms.best, logx, logy, w, runs, n_resamples=args.resamples, seed=0)
    bsecs, sol = timed(lambda: bootstrap(CHINCHILLA, ms.best, logx, logy, w, runs,
                                         n_resamples=args.resamples, seed=1), args.repeats)
    conv = float(np.mean(sol.grad_norm < 1e-9))
    print(f"scalefit bootstrap: {args.resamples} resamples, {bsecs:.2f} s, {conv:.1%} converged (|grad| < 1e-9)")

    print(f"bench_fit multistart={len(grid)} seconds={secs:.3f} scipy_seconds={sp:.1f} speedup={sp / secs:.1f}")
    print(f"bench_fit bootstrap={args.resamples} seconds={bsecs:.3f}")


if __name__ == "__main__":
    main()
