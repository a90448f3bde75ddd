"""Runs drawn from a known law: the table a fit must recover the law from.

A fit is checked by what it recovers from rows a known law generated (as optax and equinox test their
solvers on known minima); the same rows size a benchmark or a planned pilot sweep before anything is trained.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalefit.fitting.laws.base import Law


def draw_runs(law: Law, params: dict, n: int, *, N: tuple[float, float] = (1e7, 3e9),
              tokens_per_param: tuple[float, float] = (5.0, 100.0), noise: float = 0.01,
              seed: int = 0) -> pd.DataFrame:
    """``n`` runs (N, D, loss) of a law in (N, D), its parameters ``params`` (by name).

    N is log-uniform on ``N``, D / N log-uniform on ``tokens_per_param``, and the loss the law's value
    times exp(noise z), z ~ Normal(0, 1): a multiplicative scatter of ``noise`` in log loss, the scatter
    Hoffmann et al. (2022) model with their Huber objective on log loss. One generator draws N, D/N, then z,
    so a seed gives the same table every time.
    """
    if set(law.inputs) != {"N", "D"}:
        raise ValueError(f"draw_runs draws (N, D) designs; law {law.name} takes {list(law.inputs)}")
    if n < 1 or not (0 < N[0] <= N[1]) or not (0 < tokens_per_param[0] <= tokens_per_param[1]) or noise < 0:
        raise ValueError(f"draw_runs needs n >= 1, 0 < low <= high ranges and noise >= 0; got n={n}, N={N}, "
                         f"tokens_per_param={tokens_per_param}, noise={noise}")
    rng = np.random.default_rng(seed)
    n_params = np.exp(rng.uniform(np.log(N[0]), np.log(N[1]), n))
    tokens = n_params * np.exp(rng.uniform(np.log(tokens_per_param[0]), np.log(tokens_per_param[1]), n))
    loss = law.predict(params, N=n_params, D=tokens) * np.exp(rng.normal(0.0, noise, n))
    return pd.DataFrame({"N": n_params, "D": tokens, "loss": loss})
