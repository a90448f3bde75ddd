"""Curves into (N, D) points: the final loss a run would have reached had it cooled down earlier.

A constant-rate (or WSD) run passes every shorter budget on its way, but its loss at step S is not the loss
of a run trained to S: that one would have decayed its rate at the end, and the decay is worth several
percent of the loss (Hägele et al. 2024). A fitted curve law knows the decay's worth: for each curve and
each length S it predicts the final loss of the schedule that follows the curve's own up to S - K and then
cools down over K = cooldown_frac * S steps (`scalefit.fitting.schedules.cooled_down`; with the trainer's
1-sqrt shape this is exactly a WSD-ladder branch). The rows are (N, D = S x tokens per step, C, loss) as the
Chinchilla-type fit reads them, marked `derived`, with the law's bootstrap interval and the interval of one
run, and with `run` = the source curve, so a bootstrap of the (N, D) fit resamples a curve's points together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalefit.fitting.curvefit import CurveFit
from scalefit.fitting.curves import CurveTable
from scalefit.fitting.schedules import cooled_down


def derived_points(fit: CurveFit, curves: CurveTable, lengths=None, *, cooldown_frac: float = 0.2,
                   min_ratio: float = 0.1, shape: str = "1-sqrt", n_lengths: int = 6,
                   level: float | None = None) -> pd.DataFrame:
    """Derived (N, D) rows: for every curve of `curves` and every length S in `lengths` (steps; default
    `n_lengths` log-spaced from a quarter of the curve's last step to it), the predicted final loss of the
    curve's schedule cooled down over its last cooldown_frac * S steps to min_ratio x its peak.

    Columns: run (source curve), N, D, C, loss, loss_low / loss_high (one run's interval), param_low /
    param_high (the law's bootstrap interval, NaN without a bootstrap), steps, derived (True), source, and
    weight (1). D is tokens where the curve's tokens per step are known, else steps (noted in attrs).
    """
    f = curves.frame
    rows, scheds, ends_all, sizes = [], [], [], []
    for c in curves.curves:
        g = f[f["curve"] == c]
        sched = curves.schedules[c]
        last = int(g["step"].max())
        ends = (np.unique(np.round(np.geomspace(max(2, last // 4), last, n_lengths)).astype(int)) if lengths is None
                else np.asarray(lengths, int))
        N = float(g["N"].iloc[0])
        tps = float(g["tokens_per_step"].iloc[0])
        fpt = curves.flops_per_token.get(c, np.nan)
        for S in ends[(ends >= 2) & (ends <= len(sched))]:
            k = max(1, int(round(cooldown_frac * S)))
            scheds.append(cooled_down(sched, int(S), k, min_ratio, shape))
            ends_all.append(int(S))
            sizes.append(N)
            D = S * tps if np.isfinite(tps) else float(S)
            rows.append({"run": c, "N": N, "D": D, "C": fpt * D if np.isfinite(fpt) else 6.0 * N * D,
                         "steps": int(S), "derived": True, "weight": 1.0,
                         "source": f"{fit.result.law.name} on {curves.source}: {c} cooled down ({shape}) over "
                                   f"{k} of {S} steps"})
    if not rows:
        raise ValueError(f"{curves.source}: no lengths within the curves' schedules")
    p = fit.predict_each(scheds, ends_all, None if np.any(~np.isfinite(sizes)) else sizes, level)
    for i, r in enumerate(rows):
        r.update({"loss": float(p.loss[i]), "loss_low": float(p.low[i]), "loss_high": float(p.high[i]),
                  "param_low": np.nan if p.param_low is None else float(p.param_low[i]),
                  "param_high": np.nan if p.param_high is None else float(p.param_high[i])})
    out = pd.DataFrame(rows)
    out.attrs.update({"n_convention": curves.n_kind.value,
                      "c_convention": "exact" if curves.flops_per_token else "6ND",
                      "d_convention": "tokens" if np.all(np.isfinite(f["tokens_per_step"])) else "steps where tokens "
                                      "per step are unknown",
                      "loss": "predicted final loss of a cooled-down run, nats per token"})
    return out


__all__ = ["derived_points"]
