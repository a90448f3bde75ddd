"""FitResult: a frozen, self-describing record of one scaling-law fit, with a JSON round-trip.

Modelled on lmfit's ModelResult and statsmodels' results: parameters with standard errors and
percentile intervals, the objective and solver status, what data went in (rows, runs, exclusions,
fingerprint, conventions of N and C) and how (loss, starts, seed). Predictions and compute-optimal
allocations come with intervals propagated through the stored bootstrap samples.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from scalefit.atomic import write_text

from scalefit.fitting.compute import SIX_ND, ComputeModel
from scalefit.fitting.laws import get_law

SCHEMA = "scalefit.fit/1"


@dataclass(frozen=True)
class Estimate:
    """A number with its bootstrap standard error and percentile interval (None without bootstrap)."""

    value: float  # point estimate from the full-data fit
    se: float | None = None  # bootstrap standard deviation
    ci: tuple[float, float] | None = None  # percentile interval at the result's ci_level

    @staticmethod
    def of(value: float, samples: np.ndarray | None, level: float) -> "Estimate":
        s = None if samples is None else np.asarray(samples, float)
        s = None if s is None else s[np.isfinite(s)]
        if s is None or len(s) < 2:
            return Estimate(float(value))
        q = 100 * (1 - level) / 2
        lo, hi = np.percentile(s, [q, 100 - q])
        return Estimate(float(value), float(np.std(s, ddof=1)), (float(lo), float(hi)))


class Prediction(NamedTuple):
    """Predicted loss with a bootstrap interval (parameter uncertainty only)."""

    loss: np.ndarray  # point prediction, nats/token
    low: np.ndarray | None  # lower end of the interval (None without bootstrap)
    high: np.ndarray | None  # upper end


@dataclass(frozen=True)
class FitResult:
    """Everything one fit produced. Build with `scalefit.fitting.fitter.fit`; read back with `FitResult.load`."""

    law: str  # registry name of the law (scalefit.fitting.laws.LAWS)
    formula: str  # the law written out
    params: Mapping[str, Estimate]  # reported parameters, named as the law names them
    derived: Mapping[str, Estimate]  # law-specific derived quantities (Chinchilla: a, b)
    status: str  # "converged" or "not converged" (gradient criterion of the best start)
    objective: float  # sum of weighted Huber penalties at the optimum
    n_points: int  # rows fitted
    n_runs: int  # distinct runs among them (the bootstrap resamples runs)
    excluded: tuple[tuple[str, str], ...]  # (row, reason) for rows left out
    warnings: tuple[str, ...]  # anything the user must know before trusting the numbers
    notes: tuple[str, ...]  # how the input was read (derived columns, conventions)
    method: Mapping[str, Any]  # loss, delta, over_penalty, solver, n_starts, share_at_best, gtol ...
    bootstrap: Mapping[str, Any]  # n_resamples, n_failed, ci_level, resampling unit
    seed: int  # seed of the bootstrap
    source: str  # path, dataset name or "DataFrame"
    fingerprint: str  # sha256 of the rows fitted
    n_kind: str  # which N: "total" | "non-embedding" | "active"
    c_kind: str  # which C: "6ND" | "exact" | "reported" | "unspecified"
    versions: Mapping[str, str] = field(default_factory=dict)  # scalefit, jax
    compute: ComputeModel = SIX_ND  # how the fitted rows' C relates to N and D: budgets mean this C
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)  # [B, K] params

    @property
    def ci_level(self) -> float:
        return float(self.bootstrap.get("ci_level", 0.95))

    def values(self) -> dict[str, float]:
        """Point estimates of the reported parameters, by name."""
        return {k: e.value for k, e in self.params.items()}

    def point(self) -> np.ndarray:
        """The point estimates as one row [1, K] in the law's parameter order (as `samples` rows)."""
        return np.array([[self.params[k].value for k in get_law(self.law).param_names]])

    def finite_samples(self) -> np.ndarray:
        """Bootstrap draws [B', K] with failed refits (NaN rows) left out."""
        if self.samples is None:
            return np.empty((0, len(self.params)))
        s = np.asarray(self.samples, float)
        return s[np.all(np.isfinite(s), axis=1)]

    def predict(self, **inputs) -> Prediction:
        """Loss at the given inputs (e.g. N=..., D=...; arrays broadcast) with a bootstrap interval.

        The interval covers parameter uncertainty only (percentiles of the prediction over the
        bootstrap refits); `method["residual_scale"]` gives the scatter of single runs around the law.
        """
        law = get_law(self.law)
        missing = [c for c in law.inputs if c not in inputs]
        if missing:
            raise ValueError(f"law {self.law} needs inputs {list(law.inputs)}; missing {missing}")
        point = law.predict(self.values(), **inputs)
        if self.samples is None:
            return Prediction(point, None, None)
        draws = law.predict_many(self.samples, **inputs)  # [B, *shape]
        q = 100 * (1 - self.ci_level) / 2
        lo, hi = np.nanpercentile(draws, [q, 100 - q], axis=0)
        return Prediction(point, lo, hi)

    def allocate(self, C: float) -> dict[str, Estimate]:
        """Compute-optimal N and D for a budget of C FLOPs counted as the fitted runs counted theirs
        (`self.compute`: C = D F(N)), with bootstrap intervals; `loss` is each refit's optimal loss.

        For the Chinchilla law under C = 6ND this is Hoffmann et al. 2022, eq. 4; in general it is
        `scalefit.analysis.allocate.optimal_split` (closed form where there is one, numeric otherwise).
        """
        law = get_law(self.law)
        if law.inputs != ("N", "D"):
            raise ValueError(f"allocation needs a law in N and D; {self.law} ({self.formula}) depends on "
                             f"{', '.join(law.inputs)} only")
        from scalefit.analysis.allocate import optimal_split

        C = float(C)
        if not (math.isfinite(C) and C > 0):
            raise ValueError(f"C must be a finite number > 0, got {C!r}")
        N, D = (float(x[0, 0]) for x in optimal_split(law, self.point(), C, self.compute))
        if not math.isfinite(N):
            raise ValueError(f"the optimum of {self.law} at C = {C:.3g} lies outside D/N in e^-24..e^24")
        values = {"N": N, "D": D, "loss": float(law.predict(self.values(), N=N, D=D)), "tokens_per_param": D / N}
        draws = None
        rows = self.finite_samples()
        if len(rows):
            Ns, Ds = (x[:, 0] for x in optimal_split(law, rows, C, self.compute))
            draws = {"N": Ns, "D": Ds, "loss": law.predict_paired(rows, N=Ns, D=Ds), "tokens_per_param": Ds / Ns}
        return {k: Estimate.of(v, None if draws is None else draws[k], self.ci_level) for k, v in values.items()}

    def exponents(self, C_range: tuple[float, float], n_points: int = 9) -> dict[str, Estimate]:
        """Compute-optimal exponents a, b (N_opt ~ C^a, D_opt ~ C^b) with C counted as the fitted runs
        count it: least-squares slopes of log N_opt and log D_opt on log C at `n_points` budgets across
        `C_range`, with bootstrap intervals.

        For the Chinchilla law under C = 6ND they are the constants a = beta/(alpha+beta),
        b = alpha/(alpha+beta) (Hoffmann et al. 2022, eq. 4; `derived`); under C = k N^gamma D,
        a = beta/(alpha+gamma beta) and b = 1 - gamma a; under a two-term count they drift with C and
        this is their average over the range, the quantity Approaches 1 and 2 estimate from those runs.
        """
        from scalefit.analysis.allocate import optimal_split

        lo, hi = (float(c) for c in C_range)
        if not 0 < lo < hi:
            raise ValueError(f"C_range must satisfy 0 < low < high, got {C_range}")
        law = get_law(self.law)
        C = np.geomspace(lo, hi, n_points)  # [m]
        x = np.log(C) - np.log(C).mean()  # [m]

        def slopes(P):  # P [B, K] -> a, b [B]
            N, D = optimal_split(law, P, C, self.compute)  # [B, m]
            return np.log(N) @ x / (x @ x), np.log(D) @ x / (x @ x)

        a0, b0 = slopes(self.point())
        rows = self.finite_samples()
        sa, sb = slopes(rows) if len(rows) else (None, None)
        return {"a": Estimate.of(a0[0], sa, self.ci_level), "b": Estimate.of(b0[0], sb, self.ci_level)}

    # ---- presentation ----------------------------------------------------------------------------

    def summary(self) -> str:
        """A readable table: parameters with SE and CI, derived quantities, fit quality, provenance."""
        pct = f"{100 * self.ci_level:g}% CI"
        lines = [f"{self.law}: {self.formula}",
                 f"  data: {self.source}  ({self.n_points} rows, {self.n_runs} runs, "
                 f"{len(self.excluded)} excluded; N = {self.n_kind}, C = {self.c_kind}, "
                 f"loss in nats/token)",
                 f"  {'parameter':<16}{'value':>14}{'SE':>12}   {pct}"]
        for name, e in [*self.params.items(), *self.derived.items()]:
            se = "" if e.se is None else f"{e.se:.4g}"
            ci = "" if e.ci is None else f"[{e.ci[0]:.5g}, {e.ci[1]:.5g}]"
            lines.append(f"  {name:<16}{e.value:>14.6g}{se:>12}   {ci}")
        lines.append(f"  compute: {self.compute.summary()}")
        exps = [k for k in ("a", "b") if k in self.derived]
        if exps and not self.compute.is_6nd:
            lines.append(f"  note: {' and '.join(exps)} above assume C = 6ND; exponents(C_range) gives them "
                         "under this count of C")
        m = self.method
        lines.append(f"  objective {self.objective:.10g} ({m.get('loss')}, delta={m.get('delta')}); "
                     f"status {self.status}, |grad| {m.get('grad_norm', float('nan')):.2g}")
        lines.append(f"  starts {m.get('n_starts')}, share at best {m.get('share_at_best', 0):.1%}; "
                     f"residual scale (RMS of log residuals) {m.get('residual_scale', float('nan')):.4g}")
        b = self.bootstrap
        if b.get("n_resamples"):
            lines.append(f"  bootstrap: {b['n_resamples']} resamples of {b.get('unit', 'runs')}, "
                         f"{b.get('n_failed', 0)} not converged, seed {self.seed}")
        lines += [f"  excluded row {r}: {why}" for r, why in self.excluded[:20]]
        if len(self.excluded) > 20:
            lines.append(f"  ... and {len(self.excluded) - 20} more excluded rows")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)

    # ---- JSON --------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        def est(e: Estimate) -> dict:
            return {"value": e.value, "se": e.se, "ci": None if e.ci is None else list(e.ci)}

        d = {"schema": SCHEMA}
        for k in ("law", "formula", "status", "objective", "n_points", "n_runs", "seed", "source",
                  "fingerprint", "n_kind", "c_kind"):
            d[k] = getattr(self, k)
        d["params"] = {k: est(e) for k, e in self.params.items()}
        d["derived"] = {k: est(e) for k, e in self.derived.items()}
        d["excluded"] = [list(x) for x in self.excluded]
        d["warnings"], d["notes"] = list(self.warnings), list(self.notes)
        d["method"], d["bootstrap"], d["versions"] = dict(self.method), dict(self.bootstrap), dict(self.versions)
        d["compute"] = self.compute.to_dict()
        d["samples"] = None if self.samples is None else np.asarray(self.samples).tolist()
        return _finite_or_none(d)

    def to_json(self, indent: int = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path) -> Path:
        """Write JSON atomically (a crash never leaves half a file)."""
        return write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, d: Mapping) -> "FitResult":
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a scalefit fit result (schema {d.get('schema')!r}, expected {SCHEMA!r})")

        def est(x) -> Estimate:
            return Estimate(float(x["value"]), x.get("se"), None if x.get("ci") is None else tuple(x["ci"]))

        samples = d.get("samples")
        return cls(law=d["law"], formula=d["formula"],
                   params={k: est(v) for k, v in d["params"].items()},
                   derived={k: est(v) for k, v in d["derived"].items()},
                   status=d["status"], objective=float(d["objective"]), n_points=int(d["n_points"]),
                   n_runs=int(d["n_runs"]), excluded=tuple(tuple(x) for x in d["excluded"]),
                   warnings=tuple(d["warnings"]), notes=tuple(d["notes"]), method=d["method"],
                   bootstrap=d["bootstrap"], seed=int(d["seed"]), source=d["source"],
                   fingerprint=d["fingerprint"], n_kind=d["n_kind"], c_kind=d["c_kind"],
                   versions=d.get("versions", {}),
                   compute=ComputeModel.from_dict(d["compute"]) if d.get("compute") else SIX_ND,
                   samples=None if samples is None else np.array(samples, dtype=float))

    @classmethod
    def load(cls, path) -> "FitResult":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(d)
        except KeyError as e:
            raise ValueError(f"{path}: fit result lacks field {e}") from None


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

