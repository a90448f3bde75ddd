"""Time and peak memory of a Chinchilla fit of a big table: 1e4, 1e5 and 1e6 rows.

Rows are drawn from Chinchilla's law (E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28; N log-uniform in
1e7-3e9, D/N log-uniform in 5-100, 1% log-normal noise). Each size runs in a fresh process, so its peak
resident memory (getrusage) is its own: scalefit's `fit` (4,500 starts screened on a subsample, refined
on every row; the first fit in the process, compilation included, then a second, compiled one) beside a
plain scipy L-BFGS-B fit of the same rows from one start (Hoffmann's Huber objective with an analytic
gradient; no multistart), measured in the same run. The machine may be shared: the load average is
printed.

    python benchmarks/bench_big.py [--rows 10000,100000,1000000] [--no-scipy]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
DELTA = 1e-3


def rows(n: int, seed: int = 0):
    """n rows (N, D, loss) drawn from the true law."""
    from scalefit.fitting.laws import CHINCHILLA
    from scalefit.fitting.synthetic import draw_runs

    return draw_runs(CHINCHILLA, TRUE, n, seed=seed)


def scipy_fit(df) -> dict:
    """L-BFGS-B on sum Huber(log L_pred - log L) in (a = log A, b = log B, e = log E, alpha, beta)."""
    from scipy.optimize import minimize
    from scipy.special import huber

    logN, logD, logy = np.log(df.N.to_numpy()), np.log(df.D.to_numpy()), np.log(df.loss.to_numpy())

    def f(theta):
        a, b, e, alpha, beta = theta
        t = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])  # [3, n]
        m = t.max(axis=0)
        ex = np.exp(t - m)
        s = ex.sum(axis=0)
        r = m + np.log(s) - logy
        p = ex / s  # [3, n]
        psi = np.clip(r, -DELTA, DELTA)
        g = np.array([psi @ p[0], psi @ p[1], psi @ p[2], -(psi * p[0]) @ logN, -(psi * p[1]) @ logD])
        return huber(DELTA, r).sum(), g

    res = minimize(f, np.array([5.0, 5.0, 0.5, 0.5, 0.5]), jac=True, method="L-BFGS-B")
    a, b, e, alpha, beta = res.x
    return {"params": {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": float(alpha),
                       "beta": float(beta)}, "status": "converged" if res.success else "not converged"}


def one(n: int, which: str) -> dict:
    """Fit n rows with `which` (scalefit or scipy) in this process; seconds, peak GB, parameters."""
    df = rows(n)
    out = {"rows": n, "which": which}
    if which == "scipy":
        t = time.perf_counter()
        out.update(scipy_fit(df))
        out["seconds"] = time.perf_counter() - t
    else:
        from scalefit.fitting.fitter import fit
        from scalefit.fitting.table import load_table

        t = time.perf_counter()
        table = load_table(df)
        out["load_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        r = fit(table)
        out["seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        fit(table)
        out["warm_seconds"] = time.perf_counter() - t
        out.update(params=r.values(), status=str(r.status), grad_norm=r.solver.grad_norm, gtol=r.solver.gtol)
    out["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="10000,100000,1000000", help="table sizes, comma-separated")
    ap.add_argument("--no-scipy", action="store_true", help="skip the scipy reference")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: "N:which" in a child process
    args = ap.parse_args()
    if args.one:
        n, which = args.one.split(":")
        print(json.dumps(one(int(n), which)))
        return
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} on {os.cpu_count()} cores "
          f"(the machine may be shared)")
    results = []
    for n in (int(float(x)) for x in args.rows.split(",")):
        for which in ("scalefit", *(() if args.no_scipy else ("scipy",))):
            p = subprocess.run([sys.executable, __file__, "--one", f"{n}:{which}"], capture_output=True, text=True)
            if p.returncode:
                print(f"{which} rows={n}: failed (rc {p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            results.append(r)
            err = max(abs(r["params"][k] / v - 1) for k, v in TRUE.items())
            extra = (f", load {r['load_seconds']:.1f} s, compiled fit {r['warm_seconds']:.1f} s, |grad| "
                     f"{r['grad_norm']:.2g} < {r['gtol']:.2g}" if which == "scalefit" else "")
            print(f"{which:8s} rows={n:>8d}: {r['seconds']:7.1f} s, peak {r['peak_gb']:.2f} GB, {r['status']}, "
                  f"max |param / truth - 1| = {err:.2%}{extra}")
    for r in results:
        if r["which"] == "scalefit":
            print(f"bench_big rows={r['rows']} seconds={r['seconds']:.1f} warm_seconds={r['warm_seconds']:.1f} "
                  f"peak_gb={r['peak_gb']:.2f}")
    for r in results:
        if r["which"] == "scipy":
            print(f"bench_big scipy rows={r['rows']} seconds={r['seconds']:.1f} peak_gb={r['peak_gb']:.2f}")


if __name__ == "__main__":
    main()
