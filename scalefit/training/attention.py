"""Causal attention kernels, as a registry: the same softmax(q k^T + causal mask) v, computed three ways.

`KERNELS` maps a name (`ComputeConfig.attention`) to a `Kernel`: the function, the backends it runs on
and the compute dtypes it takes. ``"auto"`` picks the first kernel of `AUTO[backend]` that supports the
run: that table, and nothing else, says which kernel is fastest where (measured figures: docs/training.md).

- ``chunked``: this project's own, for CPU: query blocks that only score the keys they can see, with
  the normalisation deferred to the output (`chunked_attention`).
- ``xla``: `jax.nn.dot_product_attention(implementation="xla")`: the full masked score matrix, which
  XLA fuses on any backend.
- ``cudnn``: `jax.nn.dot_product_attention(implementation="cudnn")`: cuDNN's fused (flash) attention on
  NVIDIA GPUs; it takes bf16 or fp16 inputs only.

Every kernel takes q [B, T, K, G, hd] already scaled by 1/sqrt(hd) (query head h = kv * G + g reads
key/value head kv, the grouping `jax.nn.dot_product_attention` uses too) and k, v [B, T, K, hd], and
returns [B, T, K, G, hd]. The kernels agree to float rounding (tests/training/test_attention.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scalefit.training.config import ModelConfig

_QUERY_CHUNK = 64  # query rows per causal block; T <= 64 runs as one block


def einsum(spec: str, a: jax.Array, b: jax.Array, cfg: ModelConfig) -> jax.Array:
    """Matmul in the configured dtype (bf16 inputs when ``cfg.compute_dtype`` says so), always accumulated
    and returned in f32: the one matmul of the model and its kernels."""
    if cfg.compute_dtype == "bfloat16":
        return jnp.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                          preferred_element_type=jnp.float32)
    return jnp.einsum(spec, a, b)


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, cfg: ModelConfig) -> jax.Array:
    """softmax(q k^T + causal mask) v: q [B, T, K, G, hd], k and v [B, T, K, hd] -> [B, T, K, G, hd].

    Queries run in blocks of _QUERY_CHUNK rows and block i only scores the keys it can see
    (positions < its end), which skips ~3/8 of the masked score matrix at T = 256 (all of it would
    need blocks of one row). Normalisation is deferred: o = (exp(s - max) v) / sum(exp(s - max)),
    dividing the [T, hd] output instead of the [T, T] probabilities. Both halved the attention
    time of a training step on CPU. Softmax statistics are f32.
    """
    t = q.shape[1]
    bounds = list(range(0, t, _QUERY_CHUNK)) + [t]
    causal = np.tril(np.ones((t, t), dtype=bool))  # [T, T] query t sees keys s <= t
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        scores = einsum("btkgh,bskh->bkgts", q[:, start:end], k[:, :end], cfg)  # [B, K, G, c, end]
        scores = jnp.where(causal[start:end, :end], scores, -jnp.inf)
        # The max only guards exp against overflow; the result does not depend on it.
        peak = jax.lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))  # [B, K, G, c, 1]
        weights = jnp.exp(scores - peak)  # [B, K, G, c, end] unnormalised probabilities
        total = jnp.sum(weights, axis=-1)  # [B, K, G, c]
        out = einsum("bkgts,bskh->btkgh", weights, v[:, :end], cfg)  # [B, c, K, G, hd]
        outs.append(out / jnp.transpose(total, (0, 3, 1, 2))[..., None])  # [B, c, K, G, hd]
    return jnp.concatenate(outs, axis=1) if len(outs) > 1 else outs[0]  # [B, T, K, G, hd]


def _fused(implementation: str) -> Callable:
    """`jax.nn.dot_product_attention` with the given implementation, in the compute dtype."""

    def kernel(q: jax.Array, k: jax.Array, v: jax.Array, cfg: ModelConfig) -> jax.Array:
        b, t, kv, g, hd = q.shape
        dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
        out = jax.nn.dot_product_attention(
            q.reshape(b, t, kv * g, hd).astype(dtype), k.astype(dtype), v.astype(dtype),  # [B, T, H, hd]
            scale=1.0, is_causal=True, implementation=implementation)  # q carries the 1/sqrt(hd)
        return out.reshape(b, t, kv, g, hd)  # [B, T, K, G, hd]

    return kernel


@dataclass(frozen=True)
class Kernel:
    """One attention implementation of the registry."""

    fn: Callable[[jax.Array, jax.Array, jax.Array, ModelConfig], jax.Array]  # (q, k, v, cfg) -> out
    backends: frozenset[str]  # jax.default_backend() values it runs on
    dtypes: frozenset[str]  # ModelConfig.compute_dtype values it takes
    help: str  # one line for docs and errors


_ANY = frozenset({"cpu", "gpu", "cuda", "rocm", "tpu"})
_ALL_DTYPES = frozenset({"float32", "bfloat16"})
KERNELS: dict[str, Kernel] = {
    "chunked": Kernel(chunked_attention, _ANY, _ALL_DTYPES, "causal query blocks, deferred normalisation"),
    "xla": Kernel(_fused("xla"), _ANY, _ALL_DTYPES, "jax.nn.dot_product_attention, XLA's fusion"),
    "cudnn": Kernel(_fused("cudnn"), frozenset({"gpu", "cuda"}), frozenset({"bfloat16"}),
                    "cuDNN fused attention (NVIDIA GPUs, bf16)"),
}
# The kernels "auto" tries on each backend, fastest first.
AUTO: dict[str, tuple[str, ...]] = {"cpu": ("chunked",), "gpu": ("cudnn", "xla"), "cuda": ("cudnn", "xla"),
                                    "rocm": ("xla",), "tpu": ("xla",)}


def resolve(name: str, backend: str, compute_dtype: str) -> str:
    """The kernel ``name`` stands for on ``backend`` with ``compute_dtype``: ``"auto"`` is the first of
    `AUTO[backend]` that supports it; a named kernel is checked. ValueError naming what is supported."""
    def ok(k: str) -> bool:
        return backend in KERNELS[k].backends and compute_dtype in KERNELS[k].dtypes

    if name == "auto":
        for k in AUTO.get(backend, ("xla",)):
            if ok(k):
                return k
        return "xla"
    if name not in KERNELS:
        raise ValueError(f"attention kernel must be 'auto' or one of {', '.join(map(repr, KERNELS))}, got {name!r}")
    if not ok(name):
        k = KERNELS[name]
        raise ValueError(f"attention kernel {name!r} ({k.help}) runs on {sorted(k.backends)} with compute dtype "
                         f"{sorted(k.dtypes)}; this run is on {backend!r} with {compute_dtype!r}")
    return name
