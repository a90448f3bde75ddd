"""Speed of the Chinchilla fit and of a 1,000-resample bootstrap, beside references taken in the same run.

The fit `scalefit.fitting.fitter.fit` runs for Chinchilla (variable projection, `scalefit.fitting.varpro`)
is timed beside two references on the same data (Chinchilla/Epoch, 240 rows, Huber delta 1e-3 on log
loss): scalefit's compiled multi-start solver from Hoffmann's 4,500-start grid (`scalefit.fitting.solver`,
the path every law without a power-sum form takes), and a plain scipy L-BFGS-B loop over the same 4,500
starts with an analytic gradient (and with finite differences when asked: --fd). `--scipy-starts K`
times scipy on every (4500/K)-th start and scales to 4,500 (labelled "extrapolated"), for a quicker run.
The bootstrap (closed-form refits warm-started at the optimum) is timed beside the compiled solver on
the same resamples. Ends with key=value lines: `seconds` is the fit's path, `old_seconds` the compiled
multi-start (or compiled bootstrap), `scipy_seconds` the scipy loop, `speedup` = scipy / fit.

    python benchmarks/bench_fit.py [--scipy-starts 4500] [--fd] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber

from scalefit.fitting import varpro
from scalefit.fitting.laws import CHINCHILLA
from scalefit.fitting.resample import bootstrap, resample_weights
from scalefit.fitting.solver import multistart, solve
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
    """(median wall seconds, median CPU seconds of this process, the last result) over `repeats` calls.
    The CPU time (summed over the process's threads) shows what the call costs on a machine others share."""
    ts, cs = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = f()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    return float(np.median(ts)), float(np.median(cs)), out


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
    fast = varpro.multistart(CHINCHILLA, logx, logy, w)
    fast_first = time.perf_counter() - t0
    secs, cpu, fast = timed(lambda: varpro.multistart(CHINCHILLA, logx, logy, w), args.repeats)
    print(f"scalefit variable projection: {fast.n_starts} grid cells, {secs:.3f} s ({cpu:.3f} s CPU; first call "
          f"{fast_first:.3f} s), "
          f"objective {fast.value:.11f}, |grad| {fast.grad_norm:.2g}")

    t0 = time.perf_counter()
    ms = multistart(CHINCHILLA, logx, logy, w)
    first = time.perf_counter() - t0
    old, old_cpu, ms = timed(lambda: multistart(CHINCHILLA, logx, logy, w), args.repeats)
    print(f"scalefit compiled multistart: {len(grid)} starts, {old:.2f} s ({old_cpu:.2f} s CPU; first call with "
          f"compile {first:.2f} s), "
          f"objective {ms.value:.11f}, share at best {ms.share_at_best:.1%}")
    print(f"  objectives differ by {abs(fast.value - ms.value):.2g}; parameters by at most "
          f"{np.max(np.abs(CHINCHILLA.to_params(fast.best) / CHINCHILLA.to_params(ms.best) - 1)):.2g} (relative)")

    k = max(1, min(args.scipy_starts, len(grid)))
    sub = grid[:: len(grid) // k][:k]
    t0 = time.perf_counter()
    sp_val, _ = scipy_multistart(sub, logx[0], logx[1], logy, fd=False)
    sp = (time.perf_counter() - t0) * len(grid) / len(sub)
    tag = "" if len(sub) == len(grid) else f" (extrapolated from {len(sub)} starts)"
    print(f"scipy L-BFGS-B analytic gradient: {sp:.1f} s{tag}, objective {sp_val:.11f}")
    if args.fd:
        t0 = time.perf_counter()
        fd_val, _ = scipy_multistart(sub, logx[0], logx[1], logy, fd=True)
        fd = (time.perf_counter() - t0) * len(grid) / len(sub)
        print(f"scipy L-BFGS-B finite differences: {fd:.1f} s{tag}, objective {fd_val:.11f}")

    runs = np.arange(len(logy))
    B = args.resamples
    bsecs, bcpu, sol = timed(lambda: bootstrap(CHINCHILLA, fast.best, logx, logy, w, runs, n_resamples=B, seed=1),
                       args.repeats)
    wb = resample_weights(runs, B, seed=1) * w[None, :]  # the same resamples, on the compiled solver
    theta0 = np.repeat(fast.best[None, :], B, axis=0)
    solve(CHINCHILLA, theta0, logx, logy, wb, hessian="exact")
    bold, bold_cpu, ref = timed(lambda: solve(CHINCHILLA, theta0, logx, logy, wb, hessian="exact"), args.repeats)
    ends, ends_old = (np.percentile(CHINCHILLA.to_params(x.theta), [2.5, 97.5], axis=0) for x in (sol, ref))
    print(f"scalefit bootstrap: {B} resamples, {bsecs:.3f} s closed form ({bcpu:.3f} s CPU), {bold:.2f} s compiled "
          f"solver ({bold_cpu:.2f} s CPU); converged {np.mean(sol.converged):.1%} / {np.mean(ref.converged):.1%}; "
          f"95% interval ends differ by at most {np.max(np.abs(ends / ends_old - 1)):.2g} (relative)")

    print(f"bench_fit multistart={len(grid)} cells={fast.n_starts} seconds={secs:.4f} cpu_seconds={cpu:.4f} "
          f"old_seconds={old:.3f} old_cpu_seconds={old_cpu:.3f} "
          f"scipy_seconds={sp:.1f} speedup={sp / secs:.1f} objective={fast.value:.11f} old_objective={ms.value:.11f}")
    print(f"bench_fit bootstrap={B} seconds={bsecs:.3f} cpu_seconds={bcpu:.3f} old_seconds={bold:.3f} "
          f"old_cpu_seconds={bold_cpu:.3f}")

if __name__ == "__main__":
    main()
