"""Learning-rate schedules: numpy functions of the step, one definition for the trainer and the fitter.

Step convention: ``lr(s)`` is the rate of the update applied at optimizer step ``s = 0 .. S-1``.
Warmup is linear and reaches the peak at its last step (``lr(W-1) = peak``), so no update is wasted
at rate zero; decays end exactly at ``min_lr_ratio * peak`` on the last step ``S-1``.

They are evaluated on the host (float64, stored as the float32 the update uses): the trainer builds the
table ``lr_table`` once per run and feeds each step's rate to the compiled step; the curve laws
(`scalefit.fitting.schedules`) rebuild a run's rates from its spec.json by these same functions. No JAX here,
so the fitting side may import it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from scalefit.training.config import TrainConfig

Schedule = Callable[[Any], np.ndarray]  # step(s) (int or int array) -> lr, float64 of the same shape


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Warmup length in steps: ``cfg.warmup_steps`` or ``round(warmup_frac * S)``, at most S; for a "table"
    schedule, the steps up to the first knot at its largest value when the table starts below it, else 0."""
    if cfg.schedule == "table":
        values = [v for _, v in cfg.schedule_table]
        top = values.index(max(values))
        return min(cfg.schedule_table[top][0] + 1, total_steps) if top > 0 else 0
    w = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_frac * total_steps)
    return min(int(w), total_steps)


Schedule = Callable[[Any], np.ndarray]  # step(s) (int or int array) -> lr, float64 of the same shape


def _warmup(s, peak: float, w: int):
    """Linear ramp ``peak * (s+1)/W`` for s < W, else peak."""
    return peak * np.minimum(1.0, (np.asarray(s, np.float64) + 1.0) / max(w, 1))


def cosine_schedule(peak: float, total_steps: int, warmup: int, min_ratio: float) -> Schedule:
    """Linear warmup, then half a cosine from ``peak`` to ``min_ratio * peak`` at the last step.

    lr(s) = peak * (m + (1 - m) * (1 + cos(pi * p)) / 2),  p = (s - W + 1) / (S - W)  for s >= W
    (Loshchilov & Hutter 2017, SGDR; the Chinchilla runs decay to 10% of the peak, Hoffmann et al. 2022).
    """
    span = max(total_steps - warmup, 1)

    def lr(s):
        s = np.asarray(s, np.float64)
        p = np.clip((s - warmup + 1.0) / span, 0.0, 1.0)
        decay = min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + np.cos(np.pi * p))
        return np.where(s < warmup, _warmup(s, peak, warmup), peak * decay)

    return lr


def constant_schedule(peak: float, warmup: int) -> Schedule:
    """Linear warmup, then ``peak`` for the rest of training."""
    return lambda s: _warmup(s, peak, warmup)


def wsd_schedule(peak: float, total_steps: int, warmup: int, cooldown: int,
                 min_ratio: float) -> Schedule:
    """Warmup-stable-decay with a 1-sqrt cooldown over the last ``cooldown`` steps.

    lr(s) = peak * (m + (1 - m) * (1 - sqrt(p))),  p = (s - (S - K) + 1) / K  for s >= S - K
    (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations":
    1-sqrt matches or beats a cosine of the same length, and a run can branch off the stable phase).
    """
    cooldown = max(1, min(cooldown, total_steps))
    start = total_steps - cooldown

    def lr(s):
        s = np.asarray(s, np.float64)
        p = np.clip((s - start + 1.0) / cooldown, 0.0, 1.0)
        decay = min_ratio + (1.0 - min_ratio) * (1.0 - np.sqrt(p))
        stable = _warmup(s, peak, warmup)
        return np.where(s < start, stable, np.minimum(stable, peak * decay))

    return lr


def table_schedule(peak: float, knots) -> Schedule:
    """``peak`` times the knots (step, value) interpolated linearly, held constant outside them
    (``np.interp``): a schedule from a file, e.g. one optimised for a fitted loss-curve law."""
    steps = np.array([s for s, _ in knots], np.float64)
    values = np.array([v for _, v in knots], np.float64)
    return lambda s: np.interp(np.asarray(s, np.float64), steps, values) * peak


def make_schedule(cfg: TrainConfig, total_steps: int) -> Schedule:
    """The schedule ``cfg.schedule`` names, for a run of ``total_steps`` optimizer steps."""
    w = warmup_steps(cfg, total_steps)
    if cfg.schedule == "cosine":
        return cosine_schedule(cfg.lr, total_steps, w, cfg.min_lr_ratio)
    if cfg.schedule == "constant":
        return constant_schedule(cfg.lr, w)
    if cfg.schedule == "wsd":
        return wsd_schedule(cfg.lr, total_steps, w, round(cfg.cooldown_frac * total_steps), cfg.min_lr_ratio)
    if cfg.schedule == "table":
        return table_schedule(cfg.lr, cfg.schedule_table)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def lr_table(cfg: TrainConfig, total_steps: int) -> np.ndarray:
    """float32 [total_steps]: the rate of every optimizer step, ``make_schedule(cfg, S)(s)``."""
    return make_schedule(cfg, total_steps)(np.arange(total_steps)).astype(np.float32)


__all__ = ["Schedule", "constant_schedule", "cosine_schedule", "lr_table", "make_schedule", "table_schedule",
           "warmup_steps", "wsd_schedule"]
