"""Learning-rate schedules and the AdamW optimizer built from optax parts.

Step convention: ``lr(s)`` is the rate of the update applied at optimizer step ``s = 0 .. S-1``.
Warmup is linear and reaches the peak at its last step (``lr(W-1) = peak``), so no update is wasted
at rate zero; decays end exactly at ``min_lr_ratio * peak`` on the last step ``S-1``.

The schedules are numpy functions evaluated on the host (float64, stored as the float32 the update
uses): the trainer builds the table ``lr_table`` once per run and feeds each step's rate to the
compiled step as an argument, so the step's graph does not depend on the run length and every budget
of one model shares one compilation.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scalefit.training.config import TrainConfig


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


def _decay_mask(params):
    """Decay matrices only: norm gains (and any vectors) keep their scale (GPT-2/nanoGPT practice)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def scale_by_fed_lr(table: np.ndarray | None = None) -> optax.GradientTransformationExtraArgs:
    """Scale updates by ``-lr``, with ``lr`` passed to ``update(..., lr=...)`` each step.

    Without a fed ``lr`` the rate is ``table[count]`` (the last entry past the end), with the table
    compiled into the graph, for callers that build an optimizer for one run. The state is
    ``optax.ScaleByScheduleState(count)`` either way (as ``optax.scale_by_learning_rate``), so
    checkpoints of both match.
    """

    def init(params):
        del params
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None, *, lr=None, **extra):
        del params, extra
        if lr is None:
            if table is None:
                raise ValueError("this optimizer has no schedule: pass the step's lr to update(lr=...)")
            lr = jnp.asarray(table)[jnp.minimum(state.count, len(table) - 1)]
        lr = jnp.asarray(lr, jnp.float32)
        updates = jax.tree.map(lambda u: (-lr).astype(u.dtype) * u, updates)
        return updates, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(init, update)


def make_optimizer(cfg: TrainConfig, total_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
    """AdamW with global-norm clipping, as an optax chain.

    clip_by_global_norm -> Adam moments -> decoupled weight decay (Loshchilov & Hutter 2019) ->
    scale by -lr(s). The decay sits before the learning-rate scaling, so it follows the schedule like
    ``optax.adamw``. Without ``total_steps`` the rate is fed to every ``update(..., lr=lr_table[s])``
    and the optimizer depends only on the hyperparameters that shape its graph (one object per
    distinct set, so a compiled step built on it is shared); with it, the rate of
    ``make_schedule(cfg, total_steps)`` is used when none is fed.
    """
    if total_steps is None:
        return _fed_lr_adamw(*graph_hyperparams(cfg))
    return _adamw(*graph_hyperparams(cfg), scale_by_fed_lr(lr_table(cfg, total_steps)))


def graph_hyperparams(cfg: TrainConfig) -> tuple[float, float, float, float, float]:
    """The optimizer settings compiled into a train step: (grad_clip, beta1, beta2, eps, weight_decay)."""
    return (cfg.grad_clip, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay)


@functools.lru_cache(maxsize=None)
def _fed_lr_adamw(grad_clip, beta1, beta2, eps, weight_decay) -> optax.GradientTransformationExtraArgs:
    return _adamw(grad_clip, beta1, beta2, eps, weight_decay, scale_by_fed_lr())


def _adamw(grad_clip, beta1, beta2, eps, weight_decay, scale_lr) -> optax.GradientTransformationExtraArgs:
    parts = []
    if grad_clip > 0:
        parts.append(optax.clip_by_global_norm(grad_clip))
    parts += [
        optax.scale_by_adam(b1=beta1, b2=beta2, eps=eps),
        optax.add_decayed_weights(weight_decay, mask=_decay_mask),
        scale_lr,
    ]
    return optax.chain(*parts)
