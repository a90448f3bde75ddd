"""The schedule sums of curve laws, computed once per table and compressed, so a fit evaluates them fast.

A curve law's loss at a point after n updates of a schedule eta depends on sums over every earlier step at
which the rate changed (d_k = eta_{k-1} - eta_k, k = 1 .. n-1):

    multi-power (Luo et al. 2025):  LD(n) = B sum_k d_k G(eta_k^-gamma S_k(n)),  S_k(n) = eta_k + ... + eta_{n-1}
    momentum (Tissue et al. 2024):  S2(n) = sum_k d_k (1 - lambda^(n-k)) / (1 - lambda)

with parameters inside each term, so the sums cannot be precomputed as numbers. Summed term by term they
cost O(T) per point: a 72,000-step cosine curve has 546 points and 20 million terms per evaluation, and a
damped-Newton fit evaluates thousands of times. But each term is a smooth function of (log eta_k,
log S_k(n), log(n - k)), so consecutive steps whose coordinates agree to within a resolution h can be
merged into one node: the sum of their d_k, at the d-weighted mean of log eta, of S and of n - k (the
midpoint rule; the first-order error cancels, the second is O(h^2) of the merged weight). Near the point
each step stays its own node; far from it (geometrically, as in a multipole sum) and where the rate is
flat, many merge. At h = 0.1 the multi-power law's loss on the shipped curves agrees with the term-by-term
sum to about 1e-6 relative (docs/curves.md; the tests check it), with 20x fewer terms.

`CurvePoints` holds, for every point of a table of curves, the area S1(n) and these nodes as flat arrays
(node -> point index `seg`); a curve law (`scalefit.fitting.laws.curves`) reads nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from scalefit.fitting.schedules import Schedule

# Coordinates a node can resolve; each law names the ones its terms depend on.
COORDINATES = ("eta", "area", "steps")
DEFAULT_RESOLUTION = 0.1  # h, in natural log units (docs/curves.md: measured error against the exact sum)
_TINY_RATE = 1e-300  # log of a zero rate (a schedule that decays to 0): its term saturates, G -> 1


@dataclass(frozen=True)
class NodeSpec:
    """What a law's sums must resolve."""

    resolve: tuple[str, ...] = ("eta", "area")  # coordinates merged nodes must agree on to within h
    flat_warmup: bool = False  # count warmup steps at the rate the ramp reaches (Tissue et al.'s convention)
    resolution: float = DEFAULT_RESOLUTION  # h: merged steps differ by less than this in each log coordinate

    def __post_init__(self):
        unknown = [c for c in self.resolve if c not in COORDINATES]
        if unknown:
            raise ValueError(f"unknown node coordinate {unknown[0]!r}; known: {COORDINATES}")
        if not self.resolution >= 0:
            raise ValueError(f"resolution must be >= 0 (0: every step its own node), got {self.resolution}")


@dataclass(frozen=True, eq=False)
class CurvePoints:
    """Every point of a set of curves, with its schedule sums, as flat arrays. Hashed by identity (a bound
    law closes over one of these, and jit caches on the law)."""

    curve: np.ndarray  # int [n]: index into `schedules` of each point's curve
    updates: np.ndarray  # int [n]: optimizer steps done at the point (>= 1)
    N: np.ndarray  # float [n]: parameters of the point's model (NaN where unknown)
    log_area: np.ndarray  # float [n]: log S1(n) = log sum(eta[:n]) (warmup at the ramp's end rate if flat_warmup)
    seg: np.ndarray  # int [m]: point of each node (sorted)
    weight: np.ndarray  # float [m]: sum of d_k over the node's steps (> 0 where the rate fell)
    log_eta: np.ndarray  # float [m]: d-weighted mean of log eta_k
    log_s: np.ndarray  # float [m]: log of the d-weighted mean of S_k(n)
    log_steps: np.ndarray  # float [m]: log of the d-weighted mean of n - k
    schedules: tuple[Schedule, ...]  # the curves' schedules
    spec: NodeSpec  # how the nodes were merged

    def __len__(self) -> int:
        return int(self.updates.size)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays a law's log-prediction reads, by name."""
        return {"N": self.N, "log_updates": np.log(self.updates.astype(float)), "log_area": self.log_area,
                "seg": self.seg, "weight": self.weight, "log_eta": self.log_eta, "log_s": self.log_s,
                "log_steps": self.log_steps}

    def exact_sum(self, term, i: int) -> float:
        """sum_k d_k term(eta_k, S_k(n), n - k) at point i, step by step (no merging): the reference the
        nodes approximate. `term` takes numpy arrays."""
        sched = _prepared(self.schedules[int(self.curve[i])], self.spec)
        n = int(self.updates[i])
        r, area = sched.rates, sched.area
        k = np.arange(1, n)
        d = r[k - 1] - r[k]
        return float(np.sum(d * term(r[k], area[n] - area[k], n - k)))


def _prepared(schedule: Schedule, spec: NodeSpec) -> Schedule:
    """The schedule the sums are taken over: with flat_warmup, the ramp's steps at the rate it ends on."""
    if not spec.flat_warmup or schedule.warmup < 2:
        return schedule
    r = schedule.rates.copy()
    r[: schedule.warmup] = r[schedule.warmup - 1]
    return Schedule(r, 0, f"{schedule.label} (warmup counted at its end rate)")


def build_points(schedules: Sequence[Schedule], curve, updates, N=None, spec: NodeSpec = NodeSpec()) -> CurvePoints:
    """`CurvePoints` for points (curve index, updates done) in the given order.

    ValueError naming the point when its step lies outside its schedule.
    """
    schedules = tuple(schedules)
    curve = np.asarray(curve, dtype=np.int64).reshape(-1)
    updates = np.asarray(updates, dtype=np.int64).reshape(-1)
    n = curve.size
    if updates.size != n:
        raise ValueError(f"{n} curve indices but {updates.size} step counts")
    N = np.full(n, np.nan) if N is None else np.asarray(N, float).reshape(-1)
    for i in np.flatnonzero((updates < 1) | (updates > np.array([len(schedules[c]) for c in curve]))):
        raise ValueError(f"point {i}: {updates[i]} updates is outside its schedule "
                         f"({schedules[curve[i]].label!r}, {len(schedules[curve[i]])} steps)")
    prepared = [_prepared(s, spec) for s in schedules]
    merged = [_Merger(s, spec) for s in prepared]
    parts = [merged[c].nodes(int(u)) for c, u in zip(curve, updates)]
    seg = np.concatenate([np.full(len(p[0]), i, np.int64) for i, p in enumerate(parts)] or [np.zeros(0, np.int64)])
    cols = [np.concatenate([p[j] for p in parts]) if parts else np.zeros(0) for j in range(4)]
    log_area = np.log(np.array([prepared[c].area[u] for c, u in zip(curve, updates)], float))
    return CurvePoints(curve=curve, updates=updates, N=N, log_area=log_area, seg=seg, weight=cols[0],
                       log_eta=cols[1], log_s=cols[2], log_steps=cols[3], schedules=schedules, spec=spec)


class _Merger:
    """One schedule's rate changes, ready to be merged into nodes for any point of its curve."""

    def __init__(self, schedule: Schedule, spec: NodeSpec):
        r = schedule.rates
        d = r[:-1] - r[1:]  # d[k - 1] = eta_{k-1} - eta_k
        self.k = np.flatnonzero(d != 0) + 1  # steps where the rate changes
        self.d = d[self.k - 1]
        self.log_eta = np.log(np.maximum(r[self.k], _TINY_RATE))
        self.area_k = schedule.area[self.k]
        self.area = schedule.area
        self.h = spec.resolution
        self.resolve = spec.resolve
        # Keys that do not depend on the point: the sign of d (merged weights never cancel) and the rate bin.
        self.key0 = np.sign(self.d)
        if "eta" in self.resolve and self.h > 0:
            self.key0 = self.key0 * 1e6 + np.floor(self.log_eta / self.h)

    def nodes(self, n: int) -> tuple[np.ndarray, ...]:
        """(weight, log_eta, log_s, log_steps) of the merged nodes for the point after n updates."""
        m = int(np.searchsorted(self.k, n))  # changes at steps k < n
        if m == 0:
            return (np.zeros(0),) * 4
        k, d = self.k[:m], self.d[:m]
        s = self.area[n] - self.area_k[:m]  # S_k(n) > 0
        steps = (n - k).astype(float)
        if self.h > 0:
            keys = [self.key0[:m]]
            if "area" in self.resolve:
                keys.append(np.floor(np.log(s) / self.h))
            if "steps" in self.resolve:
                keys.append(np.floor(np.log(steps) / self.h))
            change = np.zeros(m - 1, bool)
            for key in keys:
                change |= key[1:] != key[:-1]
            starts = np.concatenate([[0], np.flatnonzero(change) + 1])
        else:
            starts = np.arange(m)
        w = np.add.reduceat(d, starts)
        mean = lambda x: np.add.reduceat(d * x, starts) / w  # noqa: E731  d-weighted mean within each node
        return w, mean(self.log_eta[:m]), np.log(mean(s)), np.log(mean(steps))


__all__ = ["COORDINATES", "DEFAULT_RESOLUTION", "CurvePoints", "NodeSpec", "build_points"]
