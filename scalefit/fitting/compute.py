"""How a table's compute C relates to its N and D: the bridge between a law in (N, D) and a budget.

A law L(N, D) knows nothing of FLOPs; a budget C does not say which (N, D) it buys until C is tied to
them. Hoffmann et al. (2022, eq. 4) take C = 6 N D: 6 FLOPs per parameter per token, forward and
backward matmuls (Kaplan et al. 2020, Sec. 2.1). That holds for total N of large models. It does not
hold for the runs' own count when N leaves parameters out or the model is small: the exact count of a
tiny transformer with non-embedding N adds the output layer (6 V d per token) and attention
(~12 L T d per token), 1.4-2.8x 6ND for the quickstart's sizes; Cerebras-GPT's reported FLOPs are
1.15-1.76x 6ND of total N. An allocation or forecast "at C" that silently assumed 6ND would then stand
at the wrong compute.

`ComputeModel` is the training FLOPs per token as a function of N,

    C = D * F(N),   F(N) = k N^gamma + m N^p,

fitted to the rows of the table (`fit_compute_model`), so that a budget means what it meant in the
runs. 6ND is k = 6, gamma = 1, m = 0. Where every row costs more than 6 N per token, the excess
F - 6N is fitted as m N^p: the right form for non-embedding N (attention and the output layer grow
slower than N, so F/N -> 6 for large models); otherwise a single power k N^gamma. Either is an
interpolation over the N the runs span (`n_range`), reported with its scatter; how far a forecast's N
lies beyond that range is the caller's to say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from scalefit.conventions import SIXND_EXACT_RTOL

# Least N_max / N_min for fitting how F varies with N; below it F = k N with k the median ratio.
MIN_N_SPAN = 1.5


@dataclass(frozen=True)
class ComputeModel:
    """Training FLOPs per token as a function of N: C = D (k N^gamma + m N^p)."""

    k: float = 6.0  # coefficient of the leading term, FLOPs per token per parameter^gamma
    gamma: float = 1.0  # exponent of N in the leading term
    m: float = 0.0  # coefficient of the secondary term (0: a single power)
    p: float = 0.0  # exponent of N in the secondary term
    basis: str = "6ND"  # the form: "6ND" (the convention itself), or fitted "6N + m N^p", "k N^gamma", "k N"
    n_rows: int = 0  # rows it was fitted to (0: not fitted)
    rms_log: float = 0.0  # RMS of log(C / (D F(N))) over those rows
    n_range: tuple[float, float] | None = None  # smallest and largest N it was fitted over

    def per_token(self, N):
        """F(N): training FLOPs per token of a model with N parameters (arrays broadcast)."""
        N = np.asarray(N, float)
        out = self.k * N**self.gamma
        return out + self.m * N**self.p if self.m else out

    def flops(self, N, D):
        """C = D F(N)."""
        return np.asarray(D, float) * self.per_token(N)

    def tokens(self, C, N):
        """D = C / F(N): the tokens a budget C buys for a model of N parameters."""
        return np.asarray(C, float) / self.per_token(N)

    def params_for(self, C: float, D: float) -> float:
        """N with D F(N) = C (F increasing in N): the model a budget C and D tokens allow."""
        target = float(C) / float(D)
        if self.m == 0:
            return (target / self.k) ** (1.0 / self.gamma)
        from scipy.optimize import brentq

        g = lambda x: math.log(float(self.per_token(math.exp(x)))) - math.log(target)  # noqa: E731
        lo, hi = -10.0, 80.0
        if g(lo) > 0 or g(hi) < 0:
            raise ValueError(f"no N with F(N) = C/D = {target:.4g} FLOPs per token under {self.describe()}")
        return math.exp(brentq(g, lo, hi, xtol=1e-13, rtol=1e-13))

    @property
    def is_6nd(self) -> bool:
        return self.k == 6.0 and self.gamma == 1.0 and self.m == 0.0

    def describe(self) -> str:
        """The formula, e.g. 'C = D (6 N + 512 N^0.554)'."""
        lead = f"{self.k:.4g} N" if self.gamma == 1 else f"{self.k:.4g} N^{self.gamma:.4g}"
        rest = f" + {self.m:.4g} N^{self.p:.4g}" if self.m else ""
        return "C = 6 N D" if self.is_6nd else f"C = D ({lead}{rest})"

    def summary(self) -> str:
        """The formula and where it came from, one line."""
        if self.n_rows == 0:
            return f"{self.describe()} ({self.basis})"
        span = "" if self.n_range is None else f", N {self.n_range[0]:.3g} to {self.n_range[1]:.3g}"
        return (f"{self.describe()}: form {self.basis} fitted to {self.n_rows} rows "
                f"(RMS log residual {self.rms_log:.2g}{span})")

    def to_dict(self) -> dict:
        return {"k": self.k, "gamma": self.gamma, "m": self.m, "p": self.p, "basis": self.basis,
                "n_rows": self.n_rows, "rms_log": self.rms_log,
                "n_range": None if self.n_range is None else list(self.n_range)}

    @classmethod
    def from_dict(cls, d) -> "ComputeModel":
        r = d.get("n_range")
        return cls(k=float(d["k"]), gamma=float(d["gamma"]), m=float(d["m"]), p=float(d["p"]),
                   basis=str(d["basis"]), n_rows=int(d["n_rows"]), rms_log=float(d["rms_log"]),
                   n_range=None if r is None else (float(r[0]), float(r[1])))


SIX_ND = ComputeModel()


def _rms(model: ComputeModel, N, F) -> float:
    return float(np.sqrt(np.mean(np.log(F / model.per_token(N)) ** 2)))


def fit_compute_model(N, D, C) -> ComputeModel:
    """The `ComputeModel` of a table's rows: F(N) = C / D as a function of N, by least squares in logs.

    - C = 6ND to 1e-6 on every row (C or D derived from the other, or counted that way): 6ND itself.
    - N spans less than a factor MIN_N_SPAN: F = k N, k the median of C / (N D).
    - otherwise, of the forms below that apply, the one with the smaller RMS log residual:
      6N + m N^p (every row has F > 6N; log(F - 6N) = log m + p log N) and k N^gamma
      (log F = log k + gamma log N).
    """
    N, D, C = (np.asarray(x, float).ravel() for x in (N, D, C))
    if not (len(N) == len(D) == len(C) and len(N) > 0):
        raise ValueError(f"compute model needs matching non-empty N, D, C; got {len(N)}, {len(D)}, {len(C)}")
    if not np.all(np.isfinite(N * D * C) & (N > 0) & (D > 0) & (C > 0)):
        raise ValueError("compute model needs finite, positive N, D and C in every row")
    F = C / D
    if np.all(np.abs(F / (6.0 * N) - 1.0) <= SIXND_EXACT_RTOL):
        return SIX_ND
    common = dict(n_rows=len(N), n_range=(float(N.min()), float(N.max())))
    if N.max() / N.min() < MIN_N_SPAN:
        candidates = [ComputeModel(k=float(np.median(F / N)), basis=f"k N (N spans under {MIN_N_SPAN:g}x)",
                                   **common)]
    else:
        x = np.log(N)
        gamma, logk = np.polyfit(x, np.log(F), 1)
        candidates = [ComputeModel(k=float(np.exp(logk)), gamma=float(gamma), basis="k N^gamma", **common)]
        excess = F - 6.0 * N
        if np.all(excess > 0):
            p, logm = np.polyfit(x, np.log(excess), 1)
            candidates.append(ComputeModel(m=float(np.exp(logm)), p=float(p), basis="6N + m N^p", **common))
    rms, best = min(((_rms(c, N, F), c) for c in candidates), key=lambda t: t[0])
    return replace(best, rms_log=rms)
