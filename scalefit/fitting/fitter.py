"""`fit`: a law and a validated table of runs in, a `FitResult` out.

Minimises sum_i w_i rho(log L_law(x_i) - log L_i) (Hoffmann et al. 2022, App. D.2) from the law's start
grid (`scalefit.fitting.solver`), refits on run-level bootstrap resamples for standard errors and
percentile intervals, fits how the rows' C depends on N and D (`scalefit.fitting.compute`), checks that
the optimum answers something (`scalefit.fitting.diagnose`: degenerate and unidentifiable fits say so
in their status), and records everything a reader needs to trust or doubt the numbers. `law="auto"`
chooses the law by leave-future-out cross-validation on the table's own rows (`scalefit.fitting.choice`);
`calibrate=True` widens a fixed law's intervals by its own leave-future-out errors
(`scalefit.fitting.calibrate`).
"""

from __future__ import annotations

from dataclasses import replace
from importlib.metadata import version

import numpy as np

from scalefit.conventions import NKind
from scalefit.fitting import choice, varpro
from scalefit.fitting.compute import fit_compute_model
from scalefit.fitting.diagnose import diagnose
from scalefit.fitting.estimate import Estimate
from scalefit.fitting.laws import Law, get_law
from scalefit.fitting.result import BootstrapInfo, FitError, FitResult, FitStatus, SolverInfo
from scalefit.fitting.resample import bootstrap
from scalefit.fitting.solver import Objective, gtol_for, multistart
from scalefit.fitting.table import FitTable, load_table

# RMS log misfit of C = D F(N) over the rows above which the fit warns (`scalefit.fitting.compute`).
COMPUTE_RMS_WARN = 0.05
# calibrate=None calibrates tables of at most this many rows: every leave-future-out cut refits the law on
# all of them (for big tables the compiled multistart, with memory rows x starts per cut).
CALIBRATE_MAX_ROWS = 10_000


def fit(table, law="chinchilla", *, objective: Objective = Objective(), bootstrap_resamples: int = 0,
        seed: int = 0, ci_level: float = 0.95, starts=None, gtol: float = 1e-9,
        progress: bool = False, calibrate: bool | None = False, fixed: dict | None = None,
        n_columns: dict | None = None) -> FitResult:
    """Fit `law` (a name, "name[K=V]" to pin parameters, any `Law`, or "auto") to a table of runs.

    table: a `FitTable` (`scalefit.fitting.table.load_table`; a DataFrame, a path or a dataset name is
    read with its defaults). Multi-start robust fit, then with `bootstrap_resamples` > 0 a refit on each
    resample of whole runs, for standard errors and percentile intervals of every parameter and derived
    quantity. FitError when the rows cannot identify the law at all (fewer rows than parameters, an input
    that never varies); a fit they identify only degenerately comes back with that status and its reasons.

    law="auto" scores candidate laws x objectives x the table's N columns by leave-future-out
    cross-validation on these rows and fits the best (`scalefit.fitting.choice.choose`; `fixed` pins
    parameters of every candidate, e.g. {"E": 1.6}; `n_columns` maps other N kinds to columns of the
    table, default: columns named N_total, N_non_embedding, N_active); its intervals are calibrated on
    those errors. `calibrate=True` calibrates a fixed law's intervals the same way; None does so for tables
    of at most CALIBRATE_MAX_ROWS rows (the CLI's default) and notes when it does not.
    """
    table = table if isinstance(table, FitTable) else load_table(table)
    options = dict(bootstrap_resamples=bootstrap_resamples, seed=seed, ci_level=ci_level, gtol=gtol,
                   progress=progress)
    if isinstance(law, str) and law.strip() == "auto":
        chosen, result, selection, calibration = choice.choose(table, _fit_law, fixed=fixed or {},
                                                               n_columns=n_columns, gtol=gtol)
        if result is None or bootstrap_resamples or starts is not None:
            result = _fit_law(chosen.fit_table, chosen.law, objective=chosen.objective, starts=starts, **options)
        return replace(result, calibration=calibration, selection=selection)
    law = get_law(law)
    if fixed:
        law = law.with_fixed(**fixed)
    result = _fit_law(table, law, objective=objective, starts=starts, **options)
    if calibrate is None and len(table.frame) > CALIBRATE_MAX_ROWS:
        return replace(result, notes=result.notes + (
            f"intervals not calibrated: {len(table.frame)} rows, above the {CALIBRATE_MAX_ROWS} that are "
            "calibrated unless asked (calibrate=True, --calibrate)",))
    if calibrate or calibrate is None:
        cal = choice.calibration_for(table, law, objective, gtol=gtol)
        result = replace(result, calibration=cal) if cal is not None else replace(result, notes=result.notes + (
            f"intervals not calibrated: no leave-future-out cut leaves {law.n_free + 1} groups of runs below it "
            f"({law.n_free} parameters + 1)",))
    return result


def _fit_law(table: FitTable, law: Law, *, objective: Objective = Objective(), bootstrap_resamples: int = 0,
             seed: int = 0, ci_level: float = 0.95, starts=None, gtol: float = 1e-9,
             progress: bool = False) -> FitResult:
    """`fit` of one law (the module docstring)."""
    from scalefit import __version__

    if law.n_kind is not None and NKind.parse(law.n_kind) is not table.n_kind:
        raise FitError(f"{table.source}: law {law.name} reads N as {law.n_kind} parameters, but the table counts "
                       f"N as {table.n_kind.value}; load it with n_kind={law.n_kind!r}")
    frame = table.frame
    check_identifiable(law, frame, table.source)
    logx = np.log(np.stack([frame[c].to_numpy(float) for c in law.inputs]))  # [n_inputs, n]
    logy = np.log(frame["loss"].to_numpy(float))  # [n]
    w = frame["weight"].to_numpy(float)  # [n]
    runs = frame["run"].astype(str).to_numpy()
    n_runs = len(np.unique(runs[w > 0]))
    if bootstrap_resamples and n_runs < 2:
        raise FitError(f"{table.source}: a bootstrap of whole runs needs at least 2 runs, but every usable row "
                       f"belongs to run {runs[w > 0][0]!r}: every resample would be the table itself and the "
                       "intervals would have zero width. Name a column of run ids (run_col=..., --run-col), or "
                       "fit without a bootstrap")

    if varpro.applies(law, objective, w, starts):  # a power-sum law: variable projection, no start grid
        ms = varpro.multistart(law, logx, logy, w, objective=objective, gtol=gtol)
    else:
        ms = multistart(law, logx, logy, w, starts=starts, objective=objective, gtol=gtol)
    point = law.to_params(ms.best)  # [K]
    warnings = list(table.warnings)  # what reading the rows found (e.g. an unused column of another N kind)
    tol = float(gtol_for(gtol, w))
    if not ms.converged:
        warnings.append(f"best start did not reach |grad| < {tol:.3g} (|grad| = {ms.grad_norm:.3g})")
    if int(np.sum(w > 0)) == law.n_free:
        warnings.append("as many rows as parameters: the law interpolates, nothing checks it")
    if bootstrap_resamples and n_runs <= law.n_free:
        warnings.append(f"the bootstrap resamples {n_runs} runs for {law.n_free} free parameters: with so few "
                        "runs its intervals are rough (too narrow more often than their level says)")

    samples, boot = None, BootstrapInfo(ci_level=ci_level)
    if bootstrap_resamples:
        sol = bootstrap(law, ms.best, logx, logy, w, runs, n_resamples=bootstrap_resamples,
                        seed=seed, objective=objective, gtol=gtol, progress=progress,
                        scale_hat=None if not objective.scale else ms.scale)
        samples = law.to_params(sol.theta)  # [B, K]
        failed = ~(np.isfinite(sol.value) & sol.converged)
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
        off = np.abs(np.log(frame["C"].to_numpy(float) / compute.flops(frame["N"].to_numpy(float),
                                                                      frame["D"].to_numpy(float))))  # [n]
        worst = np.argsort(-off, kind="stable")[:3]
        rows = ", ".join(f"row {frame['row'].iloc[i]} (C / model = {np.exp(off[i]):.3g}x off)" for i in worst)
        warnings.append(f"the rows' C is {compute.describe()} only to {compute.rms_log:.1%} (RMS): budgets "
                        f"given to allocations and forecasts are converted with that error; furthest: {rows}")
    r = law.log_loss_many(ms.best, logx)[0] - logy  # [n]
    residual_scale = float(np.sqrt(np.mean(r ** 2)))
    degenerate, unidentifiable = diagnose(law, frame, ms.best, point, logx, w, residual_scale)
    status = (FitStatus.UNIDENTIFIABLE if unidentifiable else FitStatus.DEGENERATE if degenerate
              else FitStatus.CONVERGED if ms.converged else FitStatus.NOT_CONVERGED)
    value = ms.value
    if objective.scale:  # report the negative log-likelihood itself, normalising constant included
        value += float(np.sum(w)) * objective.log_normaliser()

    solver = SolverInfo(
        loss=objective.describe(), delta=objective.delta, over_penalty=objective.over_penalty,
        solver=ms.method,
        n_starts=ms.n_starts, share_at_best=ms.share_at_best, gtol=tol, grad_norm=ms.grad_norm,
        iterations=ms.iterations, residual_scale=residual_scale, n_free=law.n_free,
        scale=None if not objective.scale else ms.scale)
    return FitResult(law=law, params=params, derived=derived, status=status,
                     reasons=tuple(unidentifiable + degenerate),
                     objective=value, n_points=len(frame), n_runs=n_runs,
                     excluded=tuple((str(a), str(b)) for a, b in table.excluded),
                     warnings=tuple(warnings), notes=tuple(table.notes), solver=solver,
                     bootstrap=boot, seed=seed, source=table.source, fingerprint=table.fingerprint,
                     n_kind=table.n_kind, c_kind=table.c_kind,
                     versions={"scalefit": __version__, "jax": version("jax")}, samples=samples,
                     compute=compute)


def check_identifiable(law: Law, frame, source: str) -> None:
    """FitError for fits whose parameters the data cannot pin down, naming what is missing."""
    n, k = int(np.sum(frame["weight"].to_numpy(float) > 0)), law.n_free
    if n < k:
        zero = f" (and {len(frame) - n} of weight 0)" if n < len(frame) else ""
        raise FitError(f"{source}: {n} usable rows{zero} but law {law.name} has {k} free parameters "
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
