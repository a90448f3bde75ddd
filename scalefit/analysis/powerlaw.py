"""Straight lines in log-log: the power laws N_opt ~ C^a, D_opt ~ C^b that Approaches 1 and 2 fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import linregress


@dataclass(frozen=True)
class PowerLaw:
    """y = coef * x^exponent, fitted by ordinary least squares of log y on log x."""

    exponent: float  # slope in log-log
    exponent_se: float  # its standard error from the regression (n - 2 degrees of freedom)
    coef: float  # prefactor, exp(intercept)
    log_coef_se: float  # standard error of the intercept, ln(coef)
    r2: float  # coefficient of determination in log-log
    n_points: int  # points in the regression

    def __call__(self, x):
        return self.coef * np.power(x, self.exponent)


def fit_power_law(x, y) -> PowerLaw:
    """OLS fit of ln y = ln coef + exponent ln x, with the textbook standard errors.

    Porian et al. 2024 fit their published exponents this way ("basic" fits: unweighted
    sklearn LinearRegression on logs), so matching them needs nothing fancier.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D and the same length, got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ValueError(f"a power-law fit with standard errors needs >= 3 points, got {len(x)}")
    if not (np.all(x > 0) and np.all(y > 0) and np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("power-law fit needs finite, positive x and y")
    r = linregress(np.log(x), np.log(y))
    return PowerLaw(exponent=float(r.slope), exponent_se=float(r.stderr), coef=float(np.exp(r.intercept)),
                    log_coef_se=float(r.intercept_stderr), r2=float(r.rvalue**2), n_points=len(x))


class AllocationExponents:
    """Mixin for results holding power laws `N_fit` (N_opt ~ C^a) and `D_fit` (D_opt ~ C^b)."""

    @property
    def a(self) -> float:
        """Exponent of N_opt ~ C^a."""
        return self.N_fit.exponent

    @property
    def b(self) -> float:
        """Exponent of D_opt ~ C^b."""
        return self.D_fit.exponent
