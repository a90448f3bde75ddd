"""Intervals calibrated on the user's own rows: an extrapolation term learned from leave-future-out errors.

A fitted law's one-run interval (bootstrap + the scatter of single runs, `scalefit.fitting.predict`)
assumes the law's form holds wherever it is asked. Cross-validation by rolling origin
(`scalefit.fitting.crossval`) measures how wrong the form is beyond the rows it was fitted on: each
held-out row i of fold k has a log error e_i = log L_obs - log L_pred,k, a distance d_i beyond that fold's
fitted range (in log compute: how far log(N D) lies beyond its largest fitted value, or any single input
beyond its own, whichever is more: the largest budget of an IsoFLOP sweep is beyond the rest in N D
while its N and D each lie inside their fitted ranges), and the fold's one-run scatter sigma_k. The error is modelled as

    e_i ~ sigma_k' * u,   sigma_k'^2 = sigma_k^2 + tau^2 d_i^2,

tau (the growth of the form's error per unit of log distance) by maximum likelihood with u Normal, and
the multiplier of the interval by split-conformal prediction on the standardised scores
u_i = |e_i| / sigma_k' (Vovk et al. 2005; Lei et al. 2018, locally weighted): the level-p multiplier is
the weighted ceil((n + 1) p)-th smallest u_i, so that a share p of such errors fall inside it when the
cuts are exchangeable. Both tau and the multiplier weigh every cut the same (each of its rows 1 / its
row count): the rows above one cut share that cut's fit, so they are one cut's evidence, and the late
cuts, with few rows above them and the most like the forecast asked for, would otherwise be outvoted by
the early ones. A forecast at distance d then has the scale sqrt(sigma^2 + tau^2 d^2) times that
multiplier over z_p (the bootstrap mixture of `predict` is widened by the ratio). With fewer scores than
a level needs (n_eff (1 - p) < p, n_eff the effective number of scores), the multiplier is the largest
score or the Normal quantile, whichever is larger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy.special import ndtri

MAX_SCORES = 2000  # scores kept in a result (quantiles of more, for a compact JSON)


def _terms(inputs) -> list[tuple[str, list[int]]]:
    """The log quantities distance is measured in: each input, and N*D (compute) for a law reading both."""
    inputs = list(inputs)
    out = [(c, [i]) for i, c in enumerate(inputs)]
    if "N" in inputs and "D" in inputs:
        out.append(("N*D", [inputs.index("N"), inputs.index("D")]))
    return out


def reference(inputs, logx: np.ndarray) -> dict[str, float]:
    """{term: its largest value over the fitted rows' log inputs `logx` [I, n]} (`_terms`)."""
    logx = np.asarray(logx, float)
    return {name: float(np.max(logx[idx].sum(axis=0))) for name, idx in _terms(inputs)}


def distance(inputs, logx: np.ndarray, ref) -> np.ndarray:
    """How far beyond the fitted range each column of `logx` [I, n] (the law's `inputs`) lies: the largest
    excess max(0, t - ref_t) over the terms t (each input, and log N + log D) [n]."""
    logx = np.asarray(logx, float)
    ref = dict(ref)
    excess = [np.maximum(logx[idx].sum(axis=0) - ref[name], 0.0) for name, idx in _terms(inputs) if name in ref]
    return np.max(excess, axis=0)


def fold_weights(folds: np.ndarray) -> np.ndarray:
    """Weights [m] giving every fold the same total: its rows share one fold's worth of evidence."""
    folds = np.asarray(folds)
    _, inv, counts = np.unique(folds, return_inverse=True, return_counts=True)
    return 1.0 / counts[inv]


def fit_tau(err: np.ndarray, sigma: np.ndarray, dist: np.ndarray, weights=None) -> float:
    """tau >= 0 maximising sum_i w_i log Normal(err_i; 0, sigma_i^2 + tau^2 dist_i^2)."""
    err, sigma, dist = (np.asarray(x, float) for x in (err, sigma, dist))
    w = np.ones_like(err) if weights is None else np.asarray(weights, float)
    if not np.any(dist > 0):
        return 0.0
    s2 = np.maximum(sigma, 1e-6) ** 2

    def nll(log_tau):
        v = s2 + np.exp(2 * log_tau) * dist ** 2
        return float(np.sum(w * (np.log(v) + err ** 2 / v)))

    from scipy.optimize import minimize_scalar  # here, not at the top: a slow import that a plain fit never needs

    res = minimize_scalar(nll, bounds=(math.log(1e-7), math.log(10.0)), method="bounded",
                          options={"xatol": 1e-6})
    tau = float(np.exp(res.x))
    return tau if nll(res.x) < nll(math.log(1e-7)) - 1e-9 else 0.0


def fold_quantile(fold_scores, level: float) -> float:
    """The weighted conformal multiplier over the cuts' scores, each cut weighing the same in all
    (`conformal_quantile` with weights 1 / rows of the cut): the rows above one cut share its fit, so
    they count as one cut's evidence, and the late cuts, with few rows above them and the most like the
    forecast asked for, are not outvoted by the early ones."""
    fs = [np.asarray(f, float) for f in fold_scores if len(f)]
    if not fs:
        return float(ndtri(0.5 + level / 2))
    return conformal_quantile(np.concatenate(fs), level, np.concatenate([np.full(len(f), 1.0 / len(f)) for f in fs]))


def conformal_quantile(scores: np.ndarray, level: float, weights=None) -> float:
    """The split-conformal multiplier at `level` (module docstring); with `weights`, the weighted version:
    the smallest score whose share of the weight reaches level (n_eff + 1) / n_eff, n_eff = (sum w)^2 /
    sum w^2 the effective number of scores."""
    u = np.asarray(scores, float)
    w = np.ones_like(u) if weights is None else np.asarray(weights, float)
    order = np.argsort(u, kind="stable")
    u, w = u[order], w[order]
    z = float(ndtri(0.5 + level / 2))
    if len(u) == 0:
        return z
    n_eff = w.sum() ** 2 / np.sum(w ** 2)
    target = level * (n_eff + 1) / n_eff
    if target > 1:
        return max(float(u[-1]), z)
    cum = np.cumsum(w) / w.sum()
    return float(u[min(int(np.searchsorted(cum, target - 1e-12)), len(u) - 1)])


@dataclass(frozen=True)
class Calibration:
    """What the leave-future-out errors say about intervals beyond the fitted rows."""

    tau: float  # growth of the form's error scale (log loss) per unit of log distance beyond the fitted rows
    scores: tuple[tuple[float, ...], ...]  # per cut: sorted standardised |errors| u of its held-out rows
    reference: tuple[tuple[str, float], ...]  # (input or "N*D", log of its largest fitted value): distance 0 below
    n_scores: int  # held-out (fold, row) pairs behind `scores`
    n_folds: int  # cutoffs of the rolling origin
    coverage: tuple[tuple[float, float], ...] = ()  # (level, share inside) of each fold's rows, calibrated on the others

    def distance(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Log distance beyond the fitted range of the points `inputs` (arrays broadcast), flattened."""
        names = [k for k, _ in self.reference if "*" not in k]
        shape = np.broadcast_shapes(*(np.shape(inputs[k]) for k in names))
        logx = np.stack([np.log(np.broadcast_to(np.asarray(inputs[k], float), shape)).ravel() for k in names])
        return distance(names, logx, self.reference)

    def multiplier(self, level: float) -> float:
        """Conformal multiplier over the Normal quantile at `level`: how much wider than Normal."""
        return fold_quantile(self.scores, level) / float(ndtri(0.5 + level / 2))

    def sigma(self, sigma: float, dist: np.ndarray, level: float) -> np.ndarray:
        """The one-run scale in log loss at distance `dist`, widened to the calibrated level."""
        return self.multiplier(level) * np.sqrt(sigma ** 2 + (self.tau * np.asarray(dist, float)) ** 2)

    def describe(self) -> str:
        cov = ", ".join(f"{100 * p:g}%: {c:.0%}" for p, c in self.coverage)
        return (f"calibrated on {self.n_scores} leave-future-out errors ({self.n_folds} cutoffs): the form's error "
                f"grows by {self.tau:.4g} in log loss per unit of log distance beyond the fitted rows; "
                f"multiplier {self.multiplier(0.9):.3g}x the Normal one at 90%"
                + (f"; cross-validated coverage {cov}" if cov else ""))

    def to_dict(self) -> dict:
        return {"tau": self.tau, "scores": [list(x) for x in self.scores], "reference": [list(x) for x in self.reference],
                "n_scores": self.n_scores, "n_folds": self.n_folds, "coverage": [list(x) for x in self.coverage]}

    @classmethod
    def from_dict(cls, d: Mapping) -> Calibration:
        return cls(tau=float(d["tau"]), scores=tuple(tuple(float(x) for x in f) for f in d["scores"]),
                   reference=tuple((str(k), float(v)) for k, v in d["reference"]),
                   n_scores=int(d["n_scores"]), n_folds=int(d["n_folds"]),
                   coverage=tuple((float(p), float(c)) for p, c in d.get("coverage", [])))


def standardised(err, sigma, dist, tau) -> np.ndarray:
    """|err| / sqrt(sigma^2 + tau^2 dist^2)."""
    return np.abs(err) / np.sqrt(np.maximum(sigma, 1e-6) ** 2 + (tau * np.asarray(dist)) ** 2)


def calibrate(err, sigma, dist, folds, reference: Mapping[str, float],
              levels=(0.8, 0.9, 0.95)) -> Calibration:
    """A `Calibration` from held-out log errors `err` [m] with their fold's scatter `sigma` [m], distance
    `dist` [m] and fold index `folds` [m]; `reference` maps each distance term to its log maximum over the
    fitted rows. tau weighs every fold the same (`fold_weights`): the rows of one fold share that fold's
    fit and its error, so they are not independent evidence; the multiplier is `fold_quantile`. Its
    `coverage` leaves each fold out in turn: calibrated on the other folds, the share of that fold's rows
    inside the interval (averaged over folds)."""
    err, sigma, dist, folds = (np.asarray(x) for x in (err, sigma, dist, folds))
    ids = np.unique(folds)

    def scores(rest):
        t = fit_tau(err[rest], sigma[rest], dist[rest], fold_weights(folds[rest]))
        u = standardised(err, sigma, dist, t)
        return t, u, [np.sort(u[rest & (folds == k)]) for k in ids if np.any(rest & (folds == k))]

    tau, u, per_fold = scores(np.ones(len(err), bool))
    kept = tuple(tuple(float(x) for x in (f if len(f) <= MAX_SCORES else np.quantile(f, np.linspace(0, 1, MAX_SCORES))))
                 for f in per_fold)
    cover = []
    for p in levels:
        shares = []
        for k in ids if len(ids) > 1 else []:
            t, u_k, rest_scores = scores(folds != k)
            shares.append(float(np.mean(u_k[folds == k] <= fold_quantile(rest_scores, p))))
        if shares:
            cover.append((float(p), float(np.mean(shares))))
    return Calibration(tau=tau, scores=kept, reference=tuple(reference.items()), n_scores=int(len(err)),
                       n_folds=int(len(ids)), coverage=tuple(cover))
