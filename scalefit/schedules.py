"""Learning-rate schedules and the AdamW optimizer built from optax parts.

Step convention: ``lr(s)`` is the rate of the update applied at optimizer step ``s = 0 .. S-1``.
Warmup is linear and reaches the peak at its last step (``lr(W-1) = peak``), so no update is wasted
at rate zero; decays end exactly at ``min_lr_ratio * peak`` on the last step ``S-1``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from scalefit.config import TrainConfig


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Warmup length in steps: ``cfg.warmup_steps`` or ``round(warmup_frac * S)``, at most S."""
    w = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_frac * total_steps)
    return min(int(w), total_steps)


def _warmup(s, peak: float, w: int):
    """Linear ramp ``peak * (s+1)/W`` for s < W, else peak."""
    return peak * jnp.minimum(1.0, (s + 1.0) / max(w, 1))


def cosine_schedule(peak: float, total_steps: int, warmup: int, min_ratio: float) -> optax.Schedule:
    """Linear warmup, then half a cosine from ``peak`` to ``min_ratio * peak`` at the last step.

    lr(s) = peak * (m + (1 - m) * (1 + cos(pi * p)) / 2),  p = (s - W + 1) / (S - W)  for s >= W
    (Loshchilov & Hutter 2017, SGDR; the Chinchilla runs decay to 10% of the peak, Hoffmann et al. 2022).
    """
    span = max(total_steps - warmup, 1)

    def lr(s):
        p = jnp.clip((s - warmup + 1.0) / span, 0.0, 1.0)
        decay = min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + jnp.cos(jnp.pi * p))
        return jnp.where(s < warmup, _warmup(s, peak, warmup), peak * decay)

    return lr


def constant_schedule(peak: float, warmup: int) -> optax.Schedule:
    """Linear warmup, then ``peak`` for the rest of training."""
    return lambda s: _warmup(s, peak, warmup)


def wsd_schedule(peak: float, total_steps: int, warmup: int, cooldown: int,
                 min_ratio: float) -> optax.Schedule:
    """Warmup-stable-decay with a 1-sqrt cooldown over the last ``cooldown`` steps.

    lr(s) = peak * (m + (1 - m) * (1 - sqrt(p))),  p = (s - (S - K) + 1) / K  for s >= S - K
    (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations":
    1-sqrt matches or beats a cosine of the same length, and a run can branch off the stable phase).
    """
    cooldown = max(1, min(cooldown, total_steps))
    start = total_steps - cooldown

    def lr(s):
        p = jnp.clip((s - start + 1.0) / cooldown, 0.0, 1.0)
        decay = min_ratio + (1.0 - min_ratio) * (1.0 - jnp.sqrt(p))
        stable = _warmup(s, peak, warmup)
        return jnp.where(s < start, stable, jnp.minimum(stable, peak * decay))

    return lr


def make_schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    """The schedule ``cfg.schedule`` names, for a run of ``total_steps`` optimizer steps."""
    w = warmup_steps(cfg, total_steps)
    if cfg.schedule == "cosine":
        return cosine_schedule(cfg.lr, total_steps, w, cfg.min_lr_ratio)
    if cfg.schedule == "constant":
        return constant_schedule(cfg.lr, w)
    if cfg.schedule == "wsd":
        return wsd_schedule(cfg.lr, total_steps, w, round(cfg.cooldown_frac * total_steps), cfg.min_lr_ratio)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def _decay_mask(params):
    """Decay matrices only: norm gains (and any vectors) keep their scale (GPT-2/nanoGPT practice)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW with global-norm clipping, as an optax chain.

    clip_by_global_norm -> Adam moments -> decoupled weight decay (Loshchilov & Hutter 2019) ->
    scale by -lr(s). The decay sits before the learning-rate scaling, so it follows the schedule like
    ``optax.adamw``.
    """
    parts = []
    if cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    parts += [
        optax.scale_by_adam(b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps),
        optax.add_decayed_weights(cfg.weight_decay, mask=_decay_mask),
        optax.scale_by_learning_rate(make_schedule(cfg, total_steps)),
    ]
    return optax.chain(*parts)
