"""`Estimate`: a number with its bootstrap standard error and percentile interval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A number with its bootstrap standard error and percentile interval (None without bootstrap)."""

    value: float  # point estimate from the full-data fit
    se: float | None = None  # bootstrap standard deviation
    ci: tuple[float, float] | None = None  # percentile interval at the result's ci_level

    @staticmethod
    def of(value: float, samples: np.ndarray | None, level: float) -> Estimate:
        """The point `value` with the spread of its bootstrap `samples` (non-finite ones left out).

        The interval is the percentile interval of the samples (Efron & Tibshirani 1993).
        """
        s = None if samples is None else np.asarray(samples, float)
        s = None if s is None else s[np.isfinite(s)]
        if s is None or len(s) < 2:
            return Estimate(float(value))
        q = 100 * (1 - level) / 2
        lo, hi = np.percentile(s, [q, 100 - q])
        with np.errstate(over="ignore"):  # refits far out along a flat direction: an SE of inf says so
            se = float(np.std(s, ddof=1))
        return Estimate(float(value), se, (float(lo), float(hi)))

    def to_dict(self) -> dict:
        return {"value": self.value, "se": self.se, "ci": None if self.ci is None else list(self.ci)}

    @classmethod
    def from_dict(cls, d) -> Estimate:
        ci = d.get("ci")
        return cls(float(d["value"]), None if d.get("se") is None else float(d["se"]),
                   None if ci is None else (float(ci[0]), float(ci[1])))

    def __format__(self, spec: str) -> str:
        spec = spec or ".4g"
        ci = "" if self.ci is None else f" [{self.ci[0]:{spec}}, {self.ci[1]:{spec}}]"
        return f"{self.value:{spec}}{ci}"
