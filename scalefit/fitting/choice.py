"""`law="auto"`: choose the law by how well it forecasts the table's own future, not by how well it fits.

Candidates are forms x constraints x the N columns the table has x objectives:

* forms the design can identify (`scalefit.fitting.diagnose.collinear_inputs`): with N and D varied,
  Chinchilla, Chinchilla with tied exponents (alpha = beta: Muennighoff et al. 2023, Gadre et al. 2024),
  Farseer (Li et al. 2025) where there are runs enough for nine parameters, and the data-constrained law
  (Muennighoff et al. 2023) where some runs repeat their data; with one D/N ratio (every run
  compute-optimal) laws in C and laws in N (C as reported or counted exactly is not a fixed multiple of
  N^2, so the two differ); with one D laws in N: the saturating power law and Kaplan's; with an expert
  count E or a granularity G varied, the routed forms (`ROUTED_FORMS`) the design identifies, told apart by
  what they read, not by name: at one training length (D spanning less than MIN_SPAN) the laws in active
  N and E (Clark et al. 2022 with and without the interaction, each also above an irreducible loss);
  with D varied too the laws in N, D and E (Ludziejewski et al. 2025, with and without its interactions)
  and, where G varies, in N, D and G (Krajewski et al. 2024);
* constraints the user gives (`fixed`, e.g. E=1.6 or a=0.5), applied to every form that has them;
* every N column the table carries (total, non-embedding, active: `n_columns`);
* Huber delta 1e-3 (Hoffmann et al. 2022) and 1e-2 (closer to least squares);
* for laws in N and D, the rows fitted: all, or only those trained on at least 4 tokens per parameter
  (a fifth of Chinchilla's compute-optimal 20). Runs far below compute-optimal (a model larger than its data) sit in a regime the laws
  misfit most, and a few of them can bend a whole fit (Epoch's replication leaves out Chinchilla's five
  such runs; on Porian et al.'s sweeps the largest models of the smallest budgets are such runs). The
  rule only chooses what the refits see: every run above a cut is scored, whatever its D/N.

Each is refitted below every cut of a rolling origin (`scalefit.fitting.crossval`) and scored by the mean,
over cuts, of the mean |relative error| of its forecasts of the runs above the cut: on the cuts every
candidate can be fitted below (at least one more run than parameters). The best is chosen, not averaged:
one law gives one allocation, one set of parameters to report and one calibration, and averaging laws
in different N conventions has no single compute-optimal N. Its full fit is kept only when it is neither
degenerate nor unidentifiable (else the next). Its own leave-future-out errors calibrate the intervals
(`scalefit.fitting.calibrate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from scalefit.conventions import NKind
from scalefit.fitting.calibrate import Calibration, calibrate, reference
from scalefit.fitting.crossval import Folds, FoldErrors, RankRow, Selection, cross_validate, rolling_origin, run_groups
from scalefit.fitting.diagnose import collinear_inputs
from scalefit.fitting.laws import CHINCHILLA, DATA_CONSTRAINED, Law, get_law
from scalefit.fitting.solver import Objective
from scalefit.fitting.table import FitTable

DELTAS = (1e-3, 1e-2)  # Huber thresholds tried
MIN_TOKENS_PER_PARAM = (None, 4.0)  # row rules tried for laws in N and D (None: every row)
MIN_KEPT_SHARE = 0.5  # a row rule that leaves fewer of the runs than this is not tried
# Forms for routed runs, offered where the design identifies what they read (`routed_forms`). One training
# length: Clark et al. 2022's eq. 1 and its separable form (c = 0, the fit they start from), each also
# above an irreducible loss (the N term of Ludziejewski et al. 2025's joint law, with and without its
# interaction gamma). Several: that joint law in N, D and E, with and without its interactions (gamma,
# zeta), and Krajewski et al. 2024's law in N, D and granularity G.
ROUTED_FORMS = ("clark_routing", "clark_routing[c=0]", "clark_routing_e", "clark_routing_e[gamma=0]",
                "joint_moe", "joint_moe[gamma=0,zeta=0]", "fine_grained_moe")
ROUTED_INPUTS = ("E", "G")  # what sets a routed run apart from its dense model of the same active N
MIN_SPAN = 1.1  # an input spanning less than this factor identifies no exponent (e.g. D of routed runs)


@dataclass(frozen=True)
class Candidate:
    """One law, objective, N column and row rule to cross-validate."""

    law: Law  # the law (pins applied)
    objective: Objective  # the objective
    table: FitTable  # every row, N read from the candidate's column
    min_tokens_per_param: float | None = None  # fit only rows with D/N at least this (None: all)

    @property
    def fit_rows(self) -> np.ndarray:
        """[n] bool: the rows the candidate's fits use."""
        f = self.table.frame
        if self.min_tokens_per_param is None:
            return np.ones(len(f), bool)
        return (f["D"] / f["N"]).to_numpy(float) >= self.min_tokens_per_param

    @property
    def fit_table(self) -> FitTable:
        """The rows it fits, the others listed as excluded with the reason."""
        if self.min_tokens_per_param is None:
            return self.table
        keep = self.fit_rows
        why = f"D/N below {self.min_tokens_per_param:g} tokens per parameter: left out by the law chosen"
        dropped = tuple((r, why) for r in self.table.frame["row"][~keep])
        sub = self.table.subset(keep, f"fitted only runs with D/N >= {self.min_tokens_per_param:g} "
                                      f"({int((~keep).sum())} rows left out)")
        return sub.with_context(excluded=(*self.table.excluded, *dropped))

    @property
    def label(self) -> str:
        obj = "likelihood" if self.objective.scale else f"huber {self.objective.delta:g}"
        rows = "" if self.min_tokens_per_param is None else f", D/N >= {self.min_tokens_per_param:g}"
        return f"{self.law.name}, {obj}, N {self.table.n_kind}{rows}"


def varied(frame) -> set[str]:
    """The inputs the rows vary: N, and D where it spans MIN_SPAN; E and G where they take two values."""
    out = {"N"}
    if np.ptp(np.log(frame["D"].to_numpy(float))) >= math.log(MIN_SPAN):
        out.add("D")
    return out | {c for c in ROUTED_INPUTS if c in frame and len(np.unique(frame[c])) > 1}


def routed_forms(table: FitTable) -> list[Law]:
    """The `ROUTED_FORMS` the design identifies: each reads only inputs the rows vary, reads D exactly when
    D varies (a law without D at several training lengths mixes them up), and reads a routed input (E, G)
    that varies. Empty for a dense table, or an E column that holds one value."""
    have = varied(table.frame)
    out = []
    for name in ROUTED_FORMS:
        law = get_law(name)
        reads = set(law.inputs)
        if reads <= have and ("D" in reads) == ("D" in have) and reads & set(ROUTED_INPUTS):
            out.append(law)
    return out


def forms(table: FitTable) -> list[Law]:
    """The forms the table's design can identify (module docstring)."""
    frame = table.frame
    routed = routed_forms(table)
    if routed:
        return routed
    if len(np.unique(frame["D"])) < 2:
        out = [get_law("power_n"), get_law("kaplan_n")]
    elif collinear_inputs(CHINCHILLA, frame):
        # The rows order by N here (`crossval.order_key`) and a C counted as reported or exactly is not
        # 6ND: whether the loss is a power law in C or in N is the cross-validation's to say.
        out = [get_law("power_c"), get_law("kaplan_c"), get_law("power_n"), get_law("kaplan_n")]
    else:
        out = [CHINCHILLA, get_law("chinchilla_tied")]
        if "U" in frame and np.any(frame["D"] > 1.01 * frame["U"]):
            out.append(DATA_CONSTRAINED)
    return out


def _pinned(law: Law, fixed: dict) -> Law | None:
    """`law` with the user's pins, or None when it lacks one of the pinned quantities."""
    if not fixed:
        return law
    try:
        return law.with_fixed(**fixed)
    except ValueError:
        return None


def n_variants(table: FitTable, n_columns: dict | None) -> list[FitTable]:
    """The table with N from each N column it has: its own first, then `n_columns` ({kind: column}) or the
    columns named as a run store names them (N_total, N_non_embedding, N_active)."""
    if n_columns is None:
        n_columns = {k: k.store_column for k in NKind if k.store_column in table.frame}
    out, seen = [table], {table.n_kind}
    for kind, col in n_columns.items():
        kind = NKind.parse(kind)
        if kind in seen:
            continue
        variant = table.with_n(col, kind)
        if np.allclose(variant.frame["N"], table.frame["N"], rtol=1e-12):
            continue  # the same numbers under another name (e.g. active = non-embedding for dense runs)
        out.append(variant)
        seen.add(kind)
    return out


def candidates(table: FitTable, *, fixed: dict | None = None, n_columns: dict | None = None,
               deltas=DELTAS) -> list[Candidate]:
    """Every candidate law x objective x N column (module docstring)."""
    laws = [p for p in (_pinned(f, fixed or {}) for f in forms(table)) if p is not None]
    if not laws:
        raise ValueError(f"no candidate law has the pinned {', '.join(fixed)}; "
                         f"the design allows {', '.join(f.name for f in forms(table))}")
    out = []
    n_groups = len(np.unique(run_groups(table.frame)))
    for t in n_variants(table, n_columns):
        rules = [None]
        for m in MIN_TOKENS_PER_PARAM[1:]:
            keep = (t.frame["D"] / t.frame["N"]).to_numpy(float) >= m
            kept = len(np.unique(run_groups(t.frame[keep]))) if keep.any() else 0
            if 0 < (~keep).sum() and kept >= MIN_KEPT_SHARE * n_groups:
                rules.append(m)
        for law in laws:
            for m in rules if {"N", "D"} <= set(law.inputs) else [None]:
                out += [Candidate(law, Objective(delta=d), t, m) for d in deltas]
    return out


def _scored(errors: FoldErrors, folds: list[int]) -> tuple[float, float]:
    keep = np.isin(errors.fold, folds)
    if not keep.any():
        return math.inf, math.inf
    rel = np.abs(errors.rel_err[keep])
    per_fold = [np.mean(rel[errors.fold[keep] == k]) for k in folds if np.any(errors.fold[keep] == k)]
    return float(np.mean(per_fold)), float(np.max(rel))


def _calibration(table: FitTable, law: Law, errors: FoldErrors, folds: Folds) -> Calibration:
    logx = np.log(np.stack([table.frame[c].to_numpy(float) for c in law.inputs]))
    return calibrate(errors.log_err, errors.sigma, errors.dist, errors.fold, reference(law.inputs, logx))


def usable_folds(folds: Folds, n_free: int, fit_rows: np.ndarray | None = None) -> list[int]:
    """Folds with at least one more group of runs below the cut (among `fit_rows`) than the law has
    parameters."""
    rows = np.ones(folds.train.shape[1], bool) if fit_rows is None else fit_rows
    return [k for k in range(len(folds)) if len(np.unique(folds.groups[folds.train[k] & rows])) >= n_free + 1]


def _subset(folds: Folds, ks: list[int]) -> Folds:
    return Folds(key=folds.key, cutoffs=tuple(folds.cutoffs[k] for k in ks), train=folds.train[ks],
                 groups=folds.groups, train_groups=tuple(folds.train_groups[k] for k in ks), n_groups=folds.n_groups)


def calibration_for(table: FitTable, law: Law, objective: Objective, *, gtol: float = 1e-9) -> Calibration | None:
    """The leave-future-out calibration of one law's intervals on `table`, or None when no cut leaves
    enough runs below it."""
    folds = rolling_origin(table.frame)
    use = usable_folds(folds, law.n_free)
    if not use:
        return None
    sub = _subset(folds, use)
    return _calibration(table, law, cross_validate(law, objective, table.frame, sub, gtol=gtol), sub)


def choose(table: FitTable, fit_law: Callable, *, fixed: dict | None = None, n_columns: dict | None = None,
           gtol: float = 1e-9) -> tuple[Candidate, object, Selection, Calibration | None]:
    """The candidate with the lowest leave-future-out error whose full fit is neither degenerate nor
    unidentifiable, that full fit (None when it was not made), the ranking, and its calibration.
    `fit_law(table, law, objective=...)` fits one law (`scalefit.fitting.fitter`)."""
    cands = candidates(table, fixed=fixed, n_columns=n_columns)
    folds = rolling_origin(table.frame)
    usable = {c.label: usable_folds(folds, c.law.n_free, c.fit_rows) for c in cands}
    scored = [c for c in cands if usable[c.label]]
    if not scored:  # too few runs to cross-validate anything: the simplest law, uncalibrated
        simplest = min(cands, key=lambda c: (c.law.n_free, c.label))
        rows = tuple(RankRow(c.label, c.law.name, c.objective.describe(), str(c.table.n_kind), c.law.n_free,
                             math.inf, math.inf, None, "chosen: too few runs to cross-validate" if c is simplest
                             else "not scored: too few runs below any cut") for c in cands)
        return simplest, None, Selection(rows, simplest.label, "too few runs for any cut: the simplest candidate",
                                         folds.describe()), None
    common = sorted(set.intersection(*(set(usable[c.label]) for c in scored)))
    errors, results = {}, []
    for c in scored:
        sub = _subset(folds, usable[c.label])
        e = cross_validate(c.law, c.objective, c.table.frame, sub, fit_rows=c.fit_rows, gtol=gtol)
        # fold indices back to the common numbering
        e = FoldErrors(np.array(usable[c.label])[e.fold], e.row, e.rel_err, e.log_err, e.dist, e.sigma, e.converged)
        errors[c.label] = (e, sub)
        mean, mx = _scored(e, common)
        results.append((mean, c.law.n_free, c.label, c, mx))
    results.sort(key=lambda r: (r[0], r[1], r[2]))
    chosen, chosen_fit, notes = None, None, {}
    for mean, _, label, c, _ in results:
        if chosen is not None or not math.isfinite(mean):
            continue
        res = fit_law(c.fit_table, c.law, objective=c.objective, gtol=gtol)
        if res.status.ok:
            chosen, chosen_fit = c, res
            notes[label] = "chosen"
        else:
            notes[label] = f"left out: full fit {res.status} ({res.reasons[0] if res.reasons else ''})"
    if chosen is None:  # every scored candidate is degenerate: keep the best, its status says so
        chosen = next(r[3] for r in results if math.isfinite(r[0]))
        notes[chosen.label] = "chosen, though " + notes[chosen.label].removeprefix("left out: ")
    rows = []
    for mean, k, label, c, mx in results:
        e, sub = errors[label]
        cal = _calibration(c.fit_table, c.law, e, sub) if len(sub) > 1 else None
        cov = dict(cal.coverage).get(0.9) if cal is not None else None
        rows.append(RankRow(label, c.law.name, c.objective.describe() + f", delta {c.objective.delta:g}",
                            str(c.table.n_kind), k, mean, mx, cov, notes.get(label, "")))
    rows += [RankRow(c.label, c.law.name, c.objective.describe(), str(c.table.n_kind), c.law.n_free, math.inf,
                     math.inf, None, f"not scored: needs {c.law.n_free + 1} groups of runs below a cut")
             for c in cands if c not in scored]
    e, sub = errors[chosen.label]
    shown = ", ".join(str(folds.train_groups[k]) for k in common)
    rule = (f"lowest mean |relative error| on the cuts every scored candidate fits ({len(common)}: {shown} "
            f"groups below), whose full fit is neither degenerate nor unidentifiable")
    return chosen, chosen_fit, Selection(tuple(rows), chosen.label, rule, folds.describe()), _calibration(
        chosen.fit_table, chosen.law, e, sub)
