"""The attention kernels compute one function: chunked and XLA's fused kernel agree in value and gradient,
in f32 and bf16, with grouped queries; "auto" picks by backend and dtype from one table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalefit.training import attention
from scalefit.training.config import ModelConfig

CFG = ModelConfig(seq_len=160, d_model=64, n_layer=1, n_head=4, n_kv_head=2, d_ff=64)  # T > one query block


def _qkv(cfg, batch=2, t=160, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    g = cfg.n_head // cfg.n_kv_head
    q = jax.random.normal(k1, (batch, t, cfg.n_kv_head, g, cfg.head_dim)) / np.sqrt(cfg.head_dim)
    k = jax.random.normal(k2, (batch, t, cfg.n_kv_head, cfg.head_dim))
    v = jax.random.normal(k3, (batch, t, cfg.n_kv_head, cfg.head_dim))
    return q, k, v


def _reference(q, k, v):
    """Plain masked softmax attention in float64 numpy, query head kv * G + g reading key head kv."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = np.einsum("btkgh,bskh->bkgts", q, k)
    t = q.shape[1]
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bkgts,bskh->btkgh", p, v)


@pytest.mark.parametrize("name", ["chunked", "xla"])
def test_kernels_compute_causal_grouped_attention(name):
    q, k, v = _qkv(CFG)
    out = jax.jit(lambda q, k, v: attention.KERNELS[name].fn(q, k, v, CFG))(q, k, v)
    assert out.shape == q.shape
    np.testing.assert_allclose(np.asarray(out, np.float64), _reference(q, k, v), atol=2e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_chunked_and_xla_agree_in_value_and_gradient(dtype):
    cfg = CFG.with_overrides(compute_dtype=dtype)
    q, k, v = _qkv(cfg, seed=1)
    probe = jax.random.normal(jax.random.PRNGKey(2), q.shape)

    def loss(name):
        return jax.jit(jax.value_and_grad(
            lambda q, k, v: jnp.sum(attention.KERNELS[name].fn(q, k, v, cfg).astype(jnp.float32) * probe),
            argnums=(0, 1, 2)))

    (la, ga), (lb, gb) = loss("chunked")(q, k, v), loss("xla")(q, k, v)
    tol = 1e-4 if dtype == "float32" else 3e-2  # bf16 inputs: 8 bits of mantissa
    np.testing.assert_allclose(la, lb, rtol=tol)
    for a, b in zip(ga, gb):
        np.testing.assert_allclose(a, b, atol=tol * float(jnp.max(jnp.abs(b))))


def test_auto_is_one_table_and_named_kernels_are_checked():
    assert attention.resolve("auto", "cpu", "float32") == "chunked"
    assert attention.resolve("auto", "gpu", "bfloat16") == "cudnn"  # cuDNN's fused kernel where it runs
    assert attention.resolve("auto", "gpu", "float32") == "xla"  # cuDNN takes no f32
    assert attention.resolve("auto", "tpu", "float32") == "xla"
    assert attention.resolve("xla", "cpu", "bfloat16") == "xla"
    with pytest.raises(ValueError, match="attention kernel must be 'auto' or one of 'chunked', 'xla', 'cudnn'"):
        attention.resolve("flash", "cpu", "float32")
    with pytest.raises(ValueError, match=r"'cudnn' .* this run is on 'gpu' with 'float32'"):
        attention.resolve("cudnn", "gpu", "float32")
