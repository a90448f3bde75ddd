"""FitResult: a frozen, self-describing record of one scaling-law fit, with a JSON round-trip.

Modelled on lmfit's ModelResult and statsmodels' results: parameters with standard errors and
percentile intervals, a typed status and solver record, what data went in (rows, runs, exclusions,
fingerprint, conventions of N and C) and how (loss, starts, seed). `summary()` is the same as data,
`report()` as text. Predictions and allocations carry intervals propagated through the stored bootstrap
refits (`scalefit.fitting.predict`, `scalefit.fitting.optimum`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Mapping

import numpy as np

from scalefit.atomic import write_text
from scalefit.conventions import LOSS_UNIT, CKind, NKind
from scalefit.fitting.calibrate import Calibration
from scalefit.fitting.compute import SIX_ND, ComputeModel
from scalefit.fitting.crossval import Selection
from scalefit.fitting.estimate import Estimate
from scalefit.fitting.laws import Law, get_law
from scalefit.fitting.optimum import Allocation, allocate, optimal_split
from scalefit.fitting.predict import Intervals, intervals, residual_sigma

FIT_SCHEMA = "scalefit.fit/3"
# Version 1 kept solver and bootstrap details in untyped bags; version 2 had no status reasons,
# calibration or selection (they read back empty).
_READS = ("scalefit.fit/1", "scalefit.fit/2", FIT_SCHEMA)


class FitStatus(StrEnum):
    """What the fit can be trusted for (`scalefit.fitting.diagnose`), worst first when several apply:
    unidentifiable (the rows cannot tell the parameters apart), degenerate (a parameter at or beyond what
    the law allows: a negative exponent, E collapsed to 0, a parameter run off to infinity), not
    converged (the best start missed the gradient criterion), converged."""

    CONVERGED = "converged"
    NOT_CONVERGED = "not converged"
    DEGENERATE = "degenerate"
    UNIDENTIFIABLE = "unidentifiable"

    @property
    def ok(self) -> bool:
        """True for a fit whose numbers answer something (converged or merely not converged)."""
        return self in (FitStatus.CONVERGED, FitStatus.NOT_CONVERGED)


class FitError(ValueError):
    """A fit that cannot be made: a design that does not identify the law, no usable start."""


@dataclass(frozen=True)
class SolverInfo:
    """How the optimum was found and how well the law fits."""

    loss: str  # the objective, e.g. "huber on log residuals"
    delta: float  # Huber threshold on log residuals
    over_penalty: float  # multiplier on over-predicted rows' penalty (1 = symmetric)
    solver: str  # the method, in words
    n_starts: int  # starts run
    share_at_best: float  # share of starts that ended within tolerance of the best objective
    gtol: float  # gradient-norm criterion
    grad_norm: float  # gradient norm at the optimum
    iterations: int  # solver iterations of the best start
    residual_scale: float  # RMS of the log residuals at the optimum
    n_free: int  # parameters estimated (pinned ones excluded)
    scale: float | None = None  # fitted scale sigma of the likelihood objective (None for Huber)


@dataclass(frozen=True)
class BootstrapInfo:
    """The run-level bootstrap behind every interval."""

    n_resamples: int = 0  # refits (0: no bootstrap, no intervals)
    n_failed: int = 0  # refits that did not meet the gradient criterion (kept) or were not finite (dropped)
    ci_level: float = 0.95  # level of every interval
    unit: str = ""  # what was resampled: "runs", or "rows (one run each)"
    warm_start: str = ""  # where each refit started


@dataclass(frozen=True)
class FitResult:
    """Everything one fit produced. Build with `scalefit.fitting.fitter.fit`; read back with `load`."""

    law: Law  # the law fitted (serialised by name; `load(path, law=...)` resolves a user law)
    params: Mapping[str, Estimate]  # reported parameters, named as the law names them
    derived: Mapping[str, Estimate]  # law-specific derived quantities (Chinchilla: a, b)
    status: FitStatus  # gradient criterion of the best start
    objective: float  # sum of weighted penalties at the optimum
    n_points: int  # rows fitted
    n_runs: int  # distinct runs among them (the bootstrap resamples runs)
    excluded: tuple[tuple[str, str], ...]  # (row, reason) for rows left out
    warnings: tuple[str, ...]  # anything the user must know before trusting the numbers
    notes: tuple[str, ...]  # how the input was read (derived columns, conventions)
    solver: SolverInfo  # how the optimum was found
    bootstrap: BootstrapInfo  # the resampling behind the intervals
    seed: int  # seed of the bootstrap
    source: str  # path, dataset name or "DataFrame"
    fingerprint: str  # sha256 of the rows fitted
    n_kind: NKind  # which parameters N counts
    c_kind: CKind  # how C was counted
    versions: Mapping[str, str] = field(default_factory=dict)  # scalefit, jax
    compute: ComputeModel = SIX_ND  # how the fitted rows' C relates to N and D: budgets mean this C
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)  # [B, K] params
    reasons: tuple[str, ...] = ()  # why the status is degenerate or unidentifiable
    calibration: Calibration | None = None  # leave-future-out calibration of the intervals (None: plain)
    selection: Selection | None = None  # the cross-validated choice that picked this law (law="auto")

    @property
    def formula(self) -> str:
        return self.law.formula

    @property
    def ci_level(self) -> float:
        return self.bootstrap.ci_level

    @property
    def sigma(self) -> float:
        """Run-to-run scatter in log loss (`scalefit.fitting.predict.residual_sigma`)."""
        return residual_sigma(self.solver.residual_scale, self.n_points, self.solver.n_free)

    def values(self) -> dict[str, float]:
        """Point estimates of the reported parameters, by name."""
        return {k: e.value for k, e in self.params.items()}

    def point(self) -> np.ndarray:
        """The point estimates as one row [1, K] in the law's parameter order (as `samples` rows)."""
        return np.array([[self.params[k].value for k in self.law.param_names]])

    def finite_samples(self) -> np.ndarray:
        """Bootstrap draws [B', K] with failed refits (NaN rows) left out."""
        if self.samples is None:
            return np.empty((0, len(self.params)))
        s = np.asarray(self.samples, float)
        return s[np.all(np.isfinite(s), axis=1)]

    # ---- what the law says ------------------------------------------------------------------------

    def predict(self, level: float | None = None, **inputs) -> Intervals:
        """Loss at the law's inputs (e.g. N=..., D=...; arrays broadcast) with the bootstrap interval of
        the law (`param_low`, `param_high`) and the prediction interval of one run (`low`, `high`;
        widened beyond the fitted range by the fit's `calibration` when it has one)."""
        return intervals(self.law, self.point(), self.finite_samples(), self.sigma,
                         self.ci_level if level is None else level, inputs, calibration=self.calibration)

    def predict_table(self, targets, level: float | None = None, **columns):
        """`predict` for every row of a table of targets (a DataFrame, or a CSV / Parquet / JSONL path):
        the targets' columns plus pred, param_low, param_high, low, high (and rel_err where the targets
        carry a loss), in this fit's conventions (`scalefit.fitting.targets.predict_table`; `columns`
        are its column options, e.g. n_col="params")."""
        from scalefit.fitting.targets import predict_table

        return predict_table(self, targets, level=level, **columns)

    def allocate(self, C: float, **given: float) -> Allocation:
        """Compute-optimal N and D for a budget of C FLOPs counted as the fitted runs counted theirs
        (`self.compute`: C = D F(N)), with bootstrap intervals; `given` holds the law's conditions
        (`Law.conditions`, e.g. U=2.5e10 unique tokens for the data-constrained law).

        For the Chinchilla law under C = 6ND this is Hoffmann et al. 2022, eq. 4; in general it is
        `scalefit.fitting.optimum.optimal_split` (closed form where the law has one, numeric otherwise).
        """
        return allocate(self.law, self.point(), self.finite_samples(), C, self.compute, level=self.ci_level,
                        given=given)

    def exponents(self, C_range: tuple[float, float], n_points: int = 9, **given: float) -> dict[str, Estimate]:
        """Compute-optimal exponents a, b (N_opt ~ C^a, D_opt ~ C^b) with C counted as the fitted runs
        count it: least-squares slopes of log N_opt and log D_opt on log C at `n_points` budgets across
        `C_range`, with bootstrap intervals.

        For the Chinchilla law under C = 6ND they are the constants a = beta/(alpha+beta),
        b = alpha/(alpha+beta) (Hoffmann et al. 2022, eq. 4; `derived`); under C = k N^gamma D,
        a = beta/(alpha+gamma beta) and b = 1 - gamma a; under a two-term count they drift with C and
        this is their average over the range, the quantity Approaches 1 and 2 estimate from those runs.
        """
        lo, hi = (float(c) for c in C_range)
        if not 0 < lo < hi:
            raise ValueError(f"C_range must satisfy 0 < low < high, got {C_range}")
        C = np.geomspace(lo, hi, n_points)  # [m]
        x = np.log(C) - np.log(C).mean()  # [m]

        def slopes(P):  # P [B, K] -> a, b [B]
            N, D = optimal_split(self.law, P, C, self.compute, given)  # [B, m]
            return np.log(N) @ x / (x @ x), np.log(D) @ x / (x @ x)

        a0, b0 = slopes(self.point())
        rows = self.finite_samples()
        sa, sb = slopes(rows) if len(rows) else (None, None)
        return {"a": Estimate.of(a0[0], sa, self.ci_level), "b": Estimate.of(b0[0], sb, self.ci_level)}

    # ---- presentation ------------------------------------------------------------------------------

    def summary(self) -> dict:
        """The fit as data (JSON-ready): law, parameters and derived quantities with SE and interval,
        status, fit quality, data and conventions, warnings. `report()` is the same as text."""
        return _finite_or_none({
            "law": self.law.name, "formula": self.formula, "status": self.status.value,
            "reasons": list(self.reasons),
            "params": {k: e.to_dict() for k, e in self.params.items()},
            "fixed": dict(self.law.fixed),
            "derived": {k: e.to_dict() for k, e in self.derived.items()},
            "ci_level": self.ci_level, "objective": self.objective,
            "residual_scale": self.solver.residual_scale, "sigma": self.sigma,
            "share_at_best": self.solver.share_at_best, "grad_norm": self.solver.grad_norm,
            "n_points": self.n_points, "n_runs": self.n_runs, "n_excluded": len(self.excluded),
            "n_resamples": self.bootstrap.n_resamples, "n_failed": self.bootstrap.n_failed,
            "source": self.source, "n_kind": self.n_kind.value, "c_kind": self.c_kind.value,
            "loss_unit": LOSS_UNIT, "compute": self.compute.describe(), "warnings": list(self.warnings),
            "scale": self.solver.scale,
            "calibration": None if self.calibration is None else self.calibration.describe(),
            "selection": None if self.selection is None else self.selection.to_dict()})

    def report(self) -> str:
        """A readable table: parameters with SE and CI, derived quantities, fit quality, provenance."""
        pct = f"{100 * self.ci_level:g}% CI"
        lines = [f"{self.law.name}: {self.formula}",
                 f"  data: {self.source}  ({self.n_points} rows, {self.n_runs} runs, "
                 f"{len(self.excluded)} excluded; N = {self.n_kind}, C = {self.c_kind}, loss in nats/token)",
                 f"  {'parameter':<16}{'value':>14}{'SE':>12}   {pct}"]
        fixed = dict(self.law.fixed)
        for name, e in [*self.params.items(), *self.derived.items()]:
            se = "fixed" if name in fixed else "" if e.se is None else f"{e.se:.4g}"
            ci = "" if e.ci is None or name in fixed else f"[{e.ci[0]:.5g}, {e.ci[1]:.5g}]"
            lines.append(f"  {name:<16}{e.value:>14.6g}{se:>12}   {ci}")
        lines.append(f"  compute: {self.compute.summary()}")
        exps = [k for k in ("a", "b") if k in self.derived]
        if exps and not self.compute.is_6nd:
            lines.append(f"  note: {' and '.join(exps)} above assume C = 6ND; exponents(C_range) gives them "
                         "under this count of C")
        s = self.solver
        lines.append(f"  objective {self.objective:.10g} ({s.loss}, delta={s.delta:g}); "
                     f"status {self.status}, |grad| {s.grad_norm:.2g}")
        lines += [f"  {str(self.status).upper()}: {why}" for why in self.reasons]
        if s.scale is not None:
            lines.append(f"  fitted scale of the log residuals sigma = {s.scale:.4g}")
        lines.append(f"  starts {s.n_starts}, share at best {s.share_at_best:.1%}; "
                     f"residual scale (RMS of log residuals) {s.residual_scale:.4g}")
        b = self.bootstrap
        if b.n_resamples:
            lines.append(f"  bootstrap: {b.n_resamples} resamples of {b.unit or 'runs'}, "
                         f"{b.n_failed} not converged, seed {self.seed}")
        lines += [f"  excluded row {r}: {why}" for r, why in self.excluded[:20]]
        if len(self.excluded) > 20:
            lines.append(f"  ... and {len(self.excluded) - 20} more excluded rows")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        if self.calibration is not None:
            lines.append(f"  intervals: {self.calibration.describe()}")
        if self.selection is not None:
            lines.append("  " + self.selection.table().replace("\n", "\n  "))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    # ---- JSON --------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        d = {"schema": FIT_SCHEMA, "law": self.law.name, "formula": self.formula, "status": self.status.value,
             "objective": self.objective, "n_points": self.n_points, "n_runs": self.n_runs, "seed": self.seed,
             "source": self.source, "fingerprint": self.fingerprint, "n_kind": self.n_kind.value,
             "c_kind": self.c_kind.value,
             "params": {k: e.to_dict() for k, e in self.params.items()},
             "derived": {k: e.to_dict() for k, e in self.derived.items()},
             "excluded": [list(x) for x in self.excluded], "warnings": list(self.warnings),
             "notes": list(self.notes), "solver": asdict(self.solver), "bootstrap": asdict(self.bootstrap),
             "versions": dict(self.versions), "compute": self.compute.to_dict(),
             "samples": None if self.samples is None else np.asarray(self.samples).tolist(),
             "reasons": list(self.reasons),
             "calibration": None if self.calibration is None else self.calibration.to_dict(),
             "selection": None if self.selection is None else self.selection.to_dict()}
        return _finite_or_none(d)

    def to_json(self, indent: int = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path) -> Path:
        """Write JSON atomically (a crash never leaves half a file)."""
        return write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, d: Mapping, law: Law | None = None) -> FitResult:
        """Rebuild from `to_dict` output (or a version-1 file). `law`: the `Law` object for a law that is
        not in the registry (its name must match the file's)."""
        if d.get("schema") not in _READS:
            raise ValueError(f"not a scalefit fit result (schema {d.get('schema')!r}, expected {FIT_SCHEMA!r})")
        if law is None:
            law = get_law(d["law"])
        elif law.name != d["law"]:
            raise ValueError(f"the file holds a fit of law {d['law']!r}, not of the law given ({law.name!r})")
        m = d.get("solver") or d.get("method") or {}
        solver = SolverInfo(
            loss=str(m.get("loss", "")), delta=float(m.get("delta", 1e-3)),
            over_penalty=float(m.get("over_penalty", 1.0)), solver=str(m.get("solver", "")),
            n_starts=int(m.get("n_starts", 0)), share_at_best=float(m.get("share_at_best") or 0.0),
            gtol=float(m.get("gtol") or 0.0), grad_norm=_float(m.get("grad_norm")),
            iterations=int(m.get("iterations", 0)), residual_scale=_float(m.get("residual_scale")),
            n_free=int(m.get("n_free", law.n_free)),
            scale=None if m.get("scale") is None else float(m["scale"]))
        b = d.get("bootstrap") or {}
        boot = BootstrapInfo(n_resamples=int(b.get("n_resamples", 0)), n_failed=int(b.get("n_failed", 0)),
                             ci_level=float(b.get("ci_level", 0.95)), unit=str(b.get("unit", "")),
                             warm_start=str(b.get("warm_start", "")))
        samples = d.get("samples")
        return cls(law=law, params={k: Estimate.from_dict(v) for k, v in d["params"].items()},
                   derived={k: Estimate.from_dict(v) for k, v in d["derived"].items()},
                   status=FitStatus(d["status"]), objective=float(d["objective"]), n_points=int(d["n_points"]),
                   n_runs=int(d["n_runs"]), excluded=tuple(tuple(x) for x in d["excluded"]),
                   warnings=tuple(d["warnings"]), notes=tuple(d["notes"]), solver=solver, bootstrap=boot,
                   seed=int(d["seed"]), source=d["source"], fingerprint=d["fingerprint"],
                   n_kind=NKind.parse(d["n_kind"]), c_kind=CKind.parse(d["c_kind"]),
                   versions=d.get("versions", {}),
                   compute=ComputeModel.from_dict(d["compute"]) if d.get("compute") else SIX_ND,
                   samples=None if samples is None else np.array(samples, dtype=float),
                   reasons=tuple(d.get("reasons") or ()),
                   calibration=Calibration.from_dict(d["calibration"]) if d.get("calibration") else None,
                   selection=Selection.from_dict(d["selection"]) if d.get("selection") else None)

    @classmethod
    def load(cls, path, law: Law | None = None) -> FitResult:
        """Read a fit saved by `save`; `law` resolves a law defined outside the registry."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path}: is a folder, expected a fit result JSON file (scalefit fit --out)")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object (a fit result), got {type(d).__name__}")
        try:
            return cls.from_dict(d, law)
        except KeyError as e:
            raise ValueError(f"{path}: fit result lacks field {e}") from None
        except (TypeError, AttributeError) as e:
            raise ValueError(f"{path}: a field of the fit result has the wrong type ({e})") from None


def _float(x) -> float:
    return float("nan") if x is None else float(x)


def _finite_or_none(x):
    """JSON has no NaN/inf: write them as null rather than emit invalid JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return _finite_or_none(x.item())
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    return x
