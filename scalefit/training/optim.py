"""The AdamW optimizer built from optax parts, fed the rates of `scalefit.training.lr`.

The trainer builds the table ``lr_table`` once per run and feeds each step's rate to the compiled step as
an argument, so the step's graph does not depend on the run length and every budget of one model shares
one compilation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scalefit.training.config import TrainConfig
from scalefit.training.lr import (  # noqa: F401  (re-exported: the optimizer's schedules)
    Schedule, constant_schedule, cosine_schedule, lr_table, make_schedule, table_schedule, warmup_steps, wsd_schedule)


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
