"""`fit`: a law and a validated table of runs in, a `FitResult` out.

Minimises sum_i w_i rho(log L_law(x_i) - log L_i) (Hoffmann et al. 2022, App. D.2) from the law's start
grid (`scalefit.fitting.solver`), refits on run-level bootstrap resamples for standard errors and
percentile intervals, fits how the rows' C depends on N and D (`scalefit.fitting.compute`), and records
everything a reader needs to trust or doubt the numbers.
"""

from __future__ import annotations

import jax
import numpy as np

from scalefit.conventions import NKind
from scalefit.fitting.compute import fit_compute_model
from scalefit.fitting.estimate import Estimate
from scalefit.fitting.laws import Law, get_law
from scalefit.fitting.result import BootstrapInfo, FitError, FitResult, FitStatus, SolverInfo
from scalefit.fitting.solver import Objective, bootstrap, multistart
from scalefit.fitting.table import FitTable, load_table

# RMS log misfit of C = D F(N) over the rows above which the fit warns (`scalefit.fitting.compute`).
COMPUTE_RMS_WARN = 0.05


def fit(table, law="chinchilla", *, objective: Objective = Objective(), bootstrap_resamples: int = 0,
        seed: int = 0, ci_level: float = 0.95, starts=None, gtol: float = 1e-9,
        progress: bool = False) -> FitResult:
    """Fit `law` (a name, "name[K=V]" to pin parameters, or any `Law`) to a table of runs.

    table: a `FitTable` (`scalefit.fitting.table.load_table`; a DataFrame, a path or a dataset name is
    read with its defaults). Multi-start robust fit, then with `bootstrap_resamples` > 0 a refit on each
    resample of whole runs, for standard errors and percentile intervals of every parameter and derived
    quantity. FitError when the rows cannot identify the law.
    """
    from scalefit import __version__

    table = table if isinstance(table, FitTable) else load_table(table)
    law = get_law(law)
    if law.n_kind is not None and NKind.parse(law.n_kind) is not table.n_kind:
        raise FitError(f"{table.source}: law {law.name} reads N as {law.n_kind} parameters, but the table counts "
                       f"N as {table.n_kind.value}; load it with n_kind={law.n_kind!r}")
    frame = table.frame
    check_identifiable(law, frame, table.source)
    logx = np.log(np.stack([frame[c].to_numpy(float) for c in law.inputs]))  # [n_inputs, n]
    logy = np.log(frame["loss"].to_numpy(float))  # [n]
    w = frame["weight"].to_numpy(float)  # [n]
    runs = frame["run"].astype(str).to_numpy()
    n_runs = len(np.unique(runs))

    ms = multistart(law, logx, logy, w, starts=starts, objective=objective, gtol=gtol)
    point = law.to_params(ms.best)  # [K]
    warnings = list(table.warnings)  # what reading the rows found (e.g. an unused column of another N kind)
    if not ms.converged:
        warnings.append(f"best start did not reach |grad| < {gtol:g} (|grad| = {ms.grad_norm:.3g})")
    if len(frame) == law.n_free:
        warnings.append("as many rows as parameters: the law interpolates, nothing checks it")
    for name, v in zip(law.param_names, point):
        lo, hi = law.bounds.get(name, (-np.inf, np.inf))
        if not lo <= v <= hi:
            warnings.append(f"{name} = {v:.4g} lies outside its plausible range [{lo:g}, {hi:g}]")

    samples, boot = None, BootstrapInfo(ci_level=ci_level)
    if bootstrap_resamples:
        sol = bootstrap(law, ms.best, logx, logy, w, runs, n_resamples=bootstrap_resamples,
                        seed=seed, objective=objective, gtol=gtol, progress=progress)
        samples = law.to_params(sol.theta)  # [B, K]
        failed = ~(np.isfinite(sol.value) & (sol.grad_norm < gtol))
        # Unconverged refits are kept (dropping them would bias the interval towards easy
        # resamples) but counted; non-finite ones cannot be used.
        samples[~np.isfinite(sol.value)] = np.nan
        boot = BootstrapInfo(n_resamples=int(bootstrap_resamples), n_failed=int(failed.sum()), ci_level=ci_level,
                             unit="runs" if n_runs < len(frame) else "rows (one run each)",
                             warm_start="full-data optimum")
        if failed.mean() > 0.05:
            warnings.append(f"{failed.sum()} of {bootstrap_resamples} bootstrap refits did not converge")

    params = {k: Estimate.of(point[i], None if samples is None else samples[:, i], ci_level)
              for i, k in enumerate(law.param_names)}
    derived = {}
    if law.derived is not None:
        pd_ = law.derived(point)
        sd = None if samples is None else law.derived(samples)
        derived = {k: Estimate.of(float(v), None if sd is None else sd[k], ci_level) for k, v in pd_.items()}
    compute = fit_compute_model(frame["N"], frame["D"], frame["C"])
    if compute.rms_log > COMPUTE_RMS_WARN:
        warnings.append(f"the rows' C is {compute.describe()} only to {compute.rms_log:.1%} (RMS): budgets "
                        f"given to allocations and forecasts are converted with that error")
    inputs = {c: frame[c].to_numpy(float) for c in law.inputs}
    r = np.log(law.predict(dict(zip(law.param_names, point)), **inputs)) - logy  # [n]

    solver = SolverInfo(
        loss="huber on log residuals" + (" (asymmetric)" if objective.over_penalty != 1 else ""),
        delta=objective.delta, over_penalty=objective.over_penalty,
        solver="multi-start damped Newton (IRLS explore, exact-Hessian finish), float64, vmapped",
        n_starts=ms.n_starts, share_at_best=ms.share_at_best, gtol=gtol, grad_norm=ms.grad_norm,
        iterations=ms.iterations, residual_scale=float(np.sqrt(np.mean(r ** 2))), n_free=law.n_free)
    return FitResult(law=law, params=params, derived=derived,
                     status=FitStatus.CONVERGED if ms.converged else FitStatus.NOT_CONVERGED,
                     objective=ms.value, n_points=len(frame), n_runs=n_runs,
                     excluded=tuple((str(a), str(b)) for a, b in table.excluded),
                     warnings=tuple(warnings), notes=tuple(table.notes), solver=solver,
                     bootstrap=boot, seed=seed, source=table.source, fingerprint=table.fingerprint,
                     n_kind=table.n_kind, c_kind=table.c_kind,
                     versions={"scalefit": __version__, "jax": jax.__version__}, samples=samples,
                     compute=compute)


def check_identifiable(law: Law, frame, source: str) -> None:
    """FitError for fits whose parameters the data cannot pin down, naming what is missing."""
    n, k = len(frame), law.n_free
    if n < k:
        raise FitError(f"{source}: {n} usable rows but law {law.name} has {k} free parameters "
                       f"({', '.join(law.theta_names)}); need at least {k}")
    for col in law.inputs:
        if col not in frame or not np.all(np.isfinite(frame[col].to_numpy(float))):
            raise FitError(f"{source}: law {law.name} needs column {col} with finite values in every row")
        distinct = np.unique(frame[col].to_numpy(float))
        if len(distinct) < 2:
            raise FitError(f"{source}: all {n} rows (rows {_rows(frame)}) have {col} = {distinct[0]:g}; "
                           f"the exponent of {col} in {law.formula} is not identifiable. "
                           f"Vary {col} or fit a law without it")


def _rows(frame) -> str:
    rows = [str(r) for r in frame["row"].tolist()]
    return ", ".join(rows[:10]) + (f", ... ({len(rows)} in all)" if len(rows) > 10 else "")
