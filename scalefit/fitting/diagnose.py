"""Is a converged fit a real one? Checks for the false successes a gradient criterion cannot see.

A multi-start solver can stop with |grad| < gtol at a point that answers nothing: a parameter that ran
off to infinity along a direction no row sees (the free data-constrained fit on datablations sends
R_N* to ~1e89), an irreducible loss E that collapsed to 0, a negative exponent, or a design whose
inputs move together (five rows at D = 100 N "converge" to beta = -2.8). Each check returns reasons; a
fit with any is `degenerate` (parameters at or beyond what the law allows) or `unidentifiable` (the
rows cannot tell the parameters apart).

The curvature check is the general one: at the optimum theta, the Gauss-Newton matrix of the log
predictions G = J^T W J / sum(w) (J = d log L / d theta over the rows) says how far theta can move along
each eigen-direction v before the predictions change by the runs' scatter s: about s / sqrt(lambda n).
A direction along which that exceeds FLAT_THETA fit-space units (a factor e^10 on a scale parameter, 10
on an exponent) is one the rows do not identify.

The scatter s is what the residuals show, s^2 = RSS / (n - p), where the rows are many enough to show it
(ROWS_PER_PARAM per free parameter: a whole loss curve, a large sweep). A small table's residuals
understate it (an interpolating fit leaves none), and there the scatter of real runs, SCATTER_FLOOR,
stands in. Noise-free rows can then identify parameters, as they do (a fit recovers the generating law
exactly); what no rows can identify is a direction of exactly zero curvature, an eigenvalue at float64
round-off of the largest (below RCOND of it), which is flagged whatever the scatter.
"""

from __future__ import annotations

import numpy as np

from scalefit.fitting.laws import Law
from scalefit.fitting.laws.base import COLLAPSE_RTOL

# Inputs whose centred logs vary, in their least-varying combination, by less than this share of the
# most-varying one move together: the law cannot separate their terms (e.g. D/N constant).
COLLINEAR_RTOL = 0.05
# Fit-space distance the rows leave a parameter combination free to move (see module docstring).
FLAT_THETA = 10.0
# Scatter of real runs' log losses, used where the rows are too few for their residuals to show theirs.
SCATTER_FLOOR = 1e-3
ROWS_PER_PARAM = 10  # rows per free parameter from which the residuals measure the scatter themselves
# An eigenvalue of G below this share of the largest is zero up to float64 round-off (eps x |G| with
# margin): a direction no prediction depends on, flat whatever the scatter.
RCOND = 1e-12
# A fit-space coordinate beyond this magnitude (e^30 ~ 1e13 on a scale parameter) has run off.
RUNAWAY_THETA = 30.0


def collinear_inputs(law: Law, frame) -> str:
    """'' when the law's inputs vary independently over the rows, else why not (e.g. one D/N ratio)."""
    if len(law.inputs) < 2:
        return ""
    X = np.log(np.stack([frame[c].to_numpy(float) for c in law.inputs], axis=1))  # [n, I]
    X = X - X.mean(axis=0)
    sv = np.linalg.svd(X, compute_uv=False)  # [I]
    if sv[0] == 0 or sv[-1] >= COLLINEAR_RTOL * sv[0]:
        return ""
    if {"N", "D"} <= set(law.inputs):
        ratio = frame["D"].to_numpy(float) / frame["N"].to_numpy(float)
        n = frame["N"].to_numpy(float)
        return (f"the runs' D/N varies only from {ratio.min():.4g} to {ratio.max():.4g} while N varies "
                f"{n.max() / n.min():.3g}x: N and D move together, so the N and D terms of {law.name} cannot "
                "be told apart. Vary D/N, or fit a law in one variable (power_c, kaplan_c)")
    return (f"the inputs {', '.join(law.inputs)} of {law.name} move together over these rows (their least-varying "
            f"combination spans {sv[-1] / sv[0]:.2%} of the most-varying one): their terms cannot be told apart")


def out_of_bounds(law: Law, point: np.ndarray) -> list[str]:
    """Reported parameters outside the law's plausible range (a negative exponent, ...)."""
    fixed = dict(law.fixed)
    out = []
    for name, v in zip(law.param_names, point):
        lo, hi = law.bounds.get(name, (-np.inf, np.inf))
        if name not in fixed and not lo <= v <= hi:
            what = "is negative" if v < 0 <= lo else "lies outside"
            out.append(f"{name} = {v:.4g} {what} its plausible range [{lo:g}, {hi:g}]")
    return out


def collapsed(law: Law, point: np.ndarray, min_loss: float) -> list[str]:
    """Parameters that fell to ~0 where that means a term of the law vanished (`Law.collapse`)."""
    fixed = dict(law.fixed)
    values = dict(zip(law.param_names, point))
    return [f"{k} = {values[k]:.3g} collapsed to 0 (below {COLLAPSE_RTOL:g} x the smallest loss, {min_loss:.4g})"
            for k in law.collapse if k not in fixed and k in values and values[k] < COLLAPSE_RTOL * min_loss]


def flat_directions(law: Law, theta: np.ndarray, logx, weights, scatter: float) -> list[tuple[int, str, str]]:
    """Directions the rows leave free at `theta` [P]: (dominant fit coordinate, "degenerate" or
    "unidentifiable", reason) from the curvature of the log predictions (module docstring)."""
    J = law.jacobian(theta, logx)  # [n, P]
    w = np.asarray(weights, float)
    keep = w > 0
    J, w = J[keep], w[keep]
    if not np.all(np.isfinite(J)):
        return [(-1, "degenerate", f"the predictions of {law.name} are not differentiable at the optimum "
                                   "(non-finite Jacobian)")]
    G = (J * w[:, None]).T @ J / w.sum()  # [P, P] mean curvature of log L per unit theta
    lam, V = np.linalg.eigh(G)  # ascending
    rows, p = int(keep.sum()), len(theta)
    s = float(scatter) * np.sqrt(rows / max(rows - p, 1))  # RMS residual -> RSS / (n - p)
    if rows < ROWS_PER_PARAM * p:
        s = max(s, SCATTER_FLOOR)
    n = float(w.sum())
    out = []
    for lam_k, v in zip(lam, V.T):
        if lam_k > RCOND * lam[-1] > 0 and s / np.sqrt(lam_k * n) <= FLAT_THETA:
            continue
        j = int(np.argmax(np.abs(v)))
        if abs(theta[j]) > RUNAWAY_THETA:
            out.append((j, "degenerate", f"{_named(law, j, theta)} ran off to a value no row's prediction "
                                         f"depends on (fit coordinate {law.theta_names[j]} = {theta[j]:.3g})"))
        else:
            involved = [law.theta_names[i] for i in np.argsort(-np.abs(v)) if abs(v[i]) > 0.2]
            out.append((j, "unidentifiable", f"the rows do not pin down the fit coordinates {', '.join(involved)}: "
                                             f"they can move by more than {FLAT_THETA:g} together before any "
                                             "prediction changes by the runs' scatter"))
    return out


def theta_index(law: Law, param: str) -> int | None:
    """The fit coordinate a reported parameter is a monotone function of, where the law (or the law its
    pins started from) says; None when it is tied to others or pinned."""
    if param in dict(law.fixed):
        return None
    base = law if law.param_theta is not None else law.origin
    if base is None or base.param_theta is None or param not in base.param_names:
        return None
    idx = base.param_theta[base.param_names.index(param)]
    name = None if idx is None else base.theta_names[idx]
    return law.theta_names.index(name) if name in law.theta_names else None


def _named(law: Law, j: int, theta) -> str:
    for k, v in zip(law.param_names, law.to_params(theta)):
        if theta_index(law, k) == j:
            return f"{k} = {v:.3g}"
    return law.theta_names[j]


def diagnose(law: Law, frame, theta: np.ndarray, point: np.ndarray, logx, weights, scatter: float
             ) -> tuple[list[str], list[str]]:
    """(degenerate, unidentifiable) reasons for a fit of `law` to `frame` at `theta` [P] (reported `point` [K])."""
    gone = collapsed(law, point, float(frame["loss"].min()))
    degenerate = out_of_bounds(law, point) + gone
    unidentifiable = [why for why in [collinear_inputs(law, frame)] if why]
    # A collapsed term leaves a flat direction along its own coordinate: it is reported as the collapse.
    skip = {theta_index(law, k) for k in law.collapse} if gone else set()
    for j, kind, why in flat_directions(law, theta, logx, weights, scatter):
        if j not in skip:
            (degenerate if kind == "degenerate" else unidentifiable).append(why)
    return degenerate, unidentifiable
