"""Leave-future-out cross-validation: fit below a cutoff, score the forecasts of the rows above it.

A scaling law is used to forecast runs larger than any it was fitted on, so it is scored that way
(rolling-origin evaluation, Tashman 2000; for scaling laws, e.g. Besiroglu et al. 2024's and Porian et al.
2024's held-out checks): the runs are ordered by compute C (by model size N where every run has the same
D/N: then they differ only in size), cut at several points, and each law is refitted below every cut and
asked for the loss of every run above it. Runs that belong together (a run's checkpoints, seeds of one
configuration: the same N, D, U, E and G) are ordered by their largest C and stay on one side of every cut.

All refits of one law run together: a fold is a vector of row weights (zero above its cut), so the folds'
starts share one compiled solver (`scalefit.fitting.solver`) with the full fit and its bootstrap; a law
with a power-sum form is refitted per fold by variable projection instead (`scalefit.fitting.varpro`), as
its full fit is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scalefit.fitting import varpro
from scalefit.fitting.calibrate import distance, reference
from scalefit.fitting.laws import Law
from scalefit.fitting.solver import BLOCK, Objective, solve

# Shares of the runs below the cuts: the first fold fits half of them, the last 85%.
TRAIN_SHARES = (0.5, 0.6, 0.7, 0.85)
MAX_STARTS = 256  # starts per fold from the law's grid (an even subsample of larger grids)
KEEP_PER_FOLD = 16  # starts per fold carried from exploration to the exact-Hessian finish
EXPLORE_ITER = 10  # IRLS steps of the exploration, as in the full fit
CUT_GAP = 1.1  # a cut separates group keys that differ by more than this factor (where any do)


def run_groups(frame: pd.DataFrame) -> np.ndarray:
    """Group index per row: rows of one run, and runs of one configuration (same N, D, U and, where the
    table has them, expert count E and granularity G: seeds),
    belong together. Union of the two relations, by union-find."""
    n = len(frame)
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    cols = [c for c in ("N", "D", "U", "E", "G") if c in frame]  # routed runs differ in E (and G) alone
    for key in (frame["run"].astype(str).to_numpy(), frame[cols].round(12).astype(str).agg("|".join, axis=1)):
        first = {}
        for i, k in enumerate(key):
            if k in first:
                a, b = find(i), find(first[k])
                parent[a] = b
            else:
                first[k] = i
    roots = np.array([find(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1]


def order_key(frame: pd.DataFrame) -> str:
    """"N" when every run has the same D/N (within 5% of the spread of N in logs): the future is bigger
    models; else "C", the compute the runs spent."""
    logn = np.log(frame["N"].to_numpy(float))
    log_ratio = np.log(frame["D"].to_numpy(float)) - logn
    spread = np.ptp(logn)
    return "N" if spread > 0 and np.ptp(log_ratio) < 0.05 * spread else "C"


@dataclass(frozen=True)
class Folds:
    """Cuts of a rolling origin: fold k fits the rows of `train[k]` and forecasts the rest."""

    key: str  # what the rows are ordered by: "C" or "N"
    cutoffs: tuple[float, ...]  # per fold: every training group has key <= cutoff < every held-out one
    train: np.ndarray = field(repr=False)  # [K, n] bool
    groups: np.ndarray = field(repr=False)  # [n] group index (runs that stay together)
    train_groups: tuple[int, ...] = ()  # groups below each cut
    n_groups: int = 0  # groups in all

    def __len__(self) -> int:
        return len(self.cutoffs)

    def describe(self) -> str:
        shares = ", ".join(f"{g}/{self.n_groups}" for g in self.train_groups)
        return (f"rolling origin by {self.key}: {len(self)} cutoffs, fitting {shares} groups of runs below each "
                "and forecasting every run above it")


def rolling_origin(frame: pd.DataFrame, *, shares=TRAIN_SHARES, min_train: int = 3) -> Folds:
    """Cuts at the group boundaries nearest to each share of the groups (at least `min_train` groups below,
    one above); duplicates dropped. Empty when the rows allow none.

    A cut lies only where consecutive groups' keys differ by more than a factor CUT_GAP (where any do),
    so the runs of one IsoFLOP budget, whose C differ by rounding or by exact FLOP counting, are not split.
    """
    groups = run_groups(frame)
    key = order_key(frame)
    value = pd.Series(frame[key].to_numpy(float)).groupby(groups).max().sort_values(kind="stable")  # per group
    n_groups = len(value)
    sorted_v = value.to_numpy()
    levels = np.unique(sorted_v)  # distinct group keys, ascending
    gap = np.r_[levels[1:] / levels[:-1], np.inf] > CUT_GAP  # a cut after this level clears a gap
    if gap[:-1].any():
        levels = levels[gap]
    below = np.searchsorted(sorted_v, levels, side="right")  # groups with key <= level
    chosen = []
    for share in shares:
        ok = (below >= min_train) & (below < n_groups)
        if not ok.any():
            break
        j = int(np.argmin(np.where(ok, np.abs(below - share * n_groups), np.inf)))
        if j not in chosen:
            chosen.append(j)
    chosen.sort()
    cut = [float(levels[j]) for j in chosen]
    gkey = value.reindex(range(n_groups)).to_numpy()  # group index -> key
    train = np.array([gkey[groups] <= c for c in cut], bool).reshape(len(cut), len(frame))
    return Folds(key=key, cutoffs=tuple(cut), train=train, groups=groups,
                 train_groups=tuple(int(below[j]) for j in chosen), n_groups=n_groups)


@dataclass(frozen=True)
class FoldErrors:
    """One candidate's forecasts of the rows above each cut: one entry per (fold, held-out row)."""

    fold: np.ndarray  # [m] fold index
    row: np.ndarray  # [m] row index into the table's frame
    rel_err: np.ndarray  # [m] (L_pred - L_obs) / L_obs
    log_err: np.ndarray  # [m] log L_obs - log L_pred
    dist: np.ndarray  # [m] log distance beyond the fold's fitted range (`scalefit.fitting.calibrate.distance`)
    sigma: np.ndarray  # [m] the fold fit's one-run scatter (RMS log residual, degrees-of-freedom corrected)
    converged: tuple[bool, ...]  # per fold: the refit met the gradient criterion

    def per_fold(self, x: np.ndarray, how=np.mean) -> np.ndarray:
        return np.array([how(x[self.fold == k]) for k in np.unique(self.fold)])

    @property
    def mean_abs(self) -> float:
        """Mean over folds of the mean |relative error| of the fold's held-out rows."""
        return float(np.mean(self.per_fold(np.abs(self.rel_err)))) if len(self.fold) else math.inf

    @property
    def max_abs(self) -> float:
        return float(np.max(np.abs(self.rel_err))) if len(self.fold) else math.inf


def fold_fits(law: Law, objective: Objective, logx, logy, w, train: np.ndarray, *, gtol: float = 1e-9,
              max_iter: int = 60, max_starts: int = MAX_STARTS, keep: int = KEEP_PER_FOLD):
    """Best fit-space parameters per fold [K, P], its convergence [K] and its scale [K] (likelihood; else
    None), all folds' starts solved together. Each fold starts from the law's grid for its own rows only
    (an even subsample of `max_starts` where the grid is larger), explored, and its best `keep` finished."""
    K = len(train)
    if varpro.applies(law, objective, w):  # a power-sum law: each fold by variable projection, no compiling
        fits = [varpro.multistart(law, logx, logy, np.asarray(w, float) * train[k], objective=objective, gtol=gtol)
                for k in range(K)]
        return np.stack([f.best for f in fits]), np.array([f.converged for f in fits]), None
    rng = np.random.default_rng(0)
    starts, owner = [], []
    for k in range(K):
        g = law.grid(logx[:, train[k]], logy[train[k]])
        if len(g) > max_starts:
            g = g[np.sort(rng.choice(len(g), max_starts, replace=False))]
        starts.append(g)
        owner.append(np.full(len(g), k))
    theta0, owner = np.concatenate(starts), np.concatenate(owner)
    W = (np.asarray(w, float)[None, :] * train)[owner]  # [S, n]
    s1 = solve(law, theta0, logx, logy, W, objective=objective, gtol=gtol, max_iter=EXPLORE_ITER)
    top = np.concatenate([np.flatnonzero(owner == k)[np.argsort(s1.value[owner == k], kind="stable")[:keep]]
                          for k in range(K)])
    top = np.concatenate([top, np.repeat(top[-1:], (-len(top)) % BLOCK)])
    s2 = solve(law, s1.theta[top], logx, logy, W[top], objective=objective, gtol=gtol, max_iter=max_iter,
               hessian="exact", scale0=None if s1.scale is None else s1.scale[top])
    best = [top[owner[top] == k][np.argmin(s2.value[owner[top] == k])] for k in range(K)]
    pos = [int(np.flatnonzero(top == b)[0]) for b in best]
    return (s2.theta[pos], s2.converged[pos], None if s2.scale is None else s2.scale[pos])


def cross_validate(law: Law, objective: Objective, frame: pd.DataFrame, folds: Folds, *,
                   fit_rows: np.ndarray | None = None, gtol: float = 1e-9) -> FoldErrors:
    """Refit `law` below every cut of `folds` and score its forecasts of the rows above (one solve).
    `fit_rows` [n] (bool) restricts the rows a refit may use; every row above a cut is scored."""
    logx = np.log(np.stack([frame[c].to_numpy(float) for c in law.inputs]))  # [I, n]
    logy = np.log(frame["loss"].to_numpy(float))  # [n]
    w = frame["weight"].to_numpy(float)
    train = folds.train & (w > 0)[None, :] & (True if fit_rows is None else np.asarray(fit_rows, bool)[None, :])
    theta, converged, _ = fold_fits(law, objective, logx, logy, w, train, gtol=gtol)
    pred = law.log_loss_many(theta, logx)  # [K, n]
    parts = []
    P = law.n_free
    for k in range(len(folds)):
        used, held = train[k], ~folds.train[k] & (w > 0)
        r = pred[k, used] - logy[used]
        n_k = int(used.sum())
        s = float(np.sqrt(np.average(r ** 2, weights=w[used])) * math.sqrt(n_k / max(n_k - P, 1)))
        ref = reference(law.inputs, logx[:, used])
        rows = np.flatnonzero(held)
        e = logy[rows] - pred[k, rows]
        parts.append((np.full(len(rows), k), rows, np.expm1(-e), e, distance(law.inputs, logx[:, rows], ref),
                      np.full(len(rows), s)))
    cat = [np.concatenate(x) for x in zip(*parts)] if parts else [np.empty(0)] * 6
    return FoldErrors(fold=cat[0].astype(int), row=cat[1].astype(int), rel_err=cat[2], log_err=cat[3],
                      dist=cat[4], sigma=cat[5], converged=tuple(bool(c) for c in converged))


@dataclass(frozen=True)
class RankRow:
    """One candidate of a cross-validated choice, as the ranking table shows it."""

    candidate: str  # label: law, objective, N
    law: str  # law name
    objective: str  # the objective in words, with delta
    n_kind: str  # which N the candidate read
    n_free: int  # parameters it fits
    cv_mean: float  # mean over cutoffs of the mean |relative error| above the cut (inf: not scored)
    cv_max: float  # the worst |relative error| above any cut
    coverage90: float | None  # share of held-out rows inside the calibrated 90% interval, each fold
    # calibrated on the others (None: not computed)
    note: str = ""  # "chosen", or why it was left out


@dataclass(frozen=True)
class Selection:
    """A law chosen by leave-future-out cross-validation on the rows the fit saw."""

    rows: tuple[RankRow, ...]  # ranked best first; left-out candidates last
    chosen: str  # label of the candidate fitted
    rule: str  # how it was chosen, in words
    folds: str  # the cross-validation, in words

    def table(self) -> str:
        """The ranking as text: candidate, CV mean and max |error|, coverage, parameters."""
        lines = [f"law chosen by cross-validation: {self.folds}; {self.rule}",
                 f"  {'rank':<5}{'candidate':<58}{'CV mean':>9}{'CV max':>9}{'cov90':>7}{'k':>3}  note"]
        for i, r in enumerate(self.rows, 1):
            mean = "" if not math.isfinite(r.cv_mean) else f"{r.cv_mean:.2%}"
            mx = "" if not math.isfinite(r.cv_max) else f"{r.cv_max:.2%}"
            cov = "" if r.coverage90 is None else f"{r.coverage90:.0%}"
            lines.append(f"  {i:<5}{r.candidate[:57]:<58}{mean:>9}{mx:>9}{cov:>7}{r.n_free:>3}  {r.note}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in vars(r).items()}
                for r in self.rows]
        return {"rows": rows, "chosen": self.chosen, "rule": self.rule, "folds": self.folds}

    @classmethod
    def from_dict(cls, d) -> Selection:
        def row(x):
            x = dict(x)
            for k in ("cv_mean", "cv_max"):
                x[k] = math.inf if x.get(k) is None else float(x[k])
            return RankRow(**x)

        return cls(rows=tuple(row(x) for x in d["rows"]), chosen=d["chosen"], rule=d["rule"], folds=d["folds"])
