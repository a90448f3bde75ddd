"""Parameter counts equal the real parameter leaves; exact FLOPs agree with XLA's own count."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scalefit.training.config import PRESETS, ModelConfig
from scalefit.training.counting import flops_per_token, param_counts
from scalefit.training.model import _dropless_block, init_params, loss_fn

BASE = ModelConfig(seq_len=64, d_model=64, n_layer=2, n_head=4, n_kv_head=4, d_ff=176)
CONFIGS = {
    "dense": BASE,
    "gqa": dataclasses.replace(BASE, n_kv_head=1),
    "tied": dataclasses.replace(BASE, tie_embeddings=True),
    "moe": dataclasses.replace(BASE, n_expert=4, top_k=2),
    "moe-top1-tied-gqa": dataclasses.replace(BASE, n_expert=8, top_k=1, tie_embeddings=True, n_kv_head=2),
}


def _leaf_sizes(cfg):
    """Parameter sizes read off the initialised pytree: (total, embedding, expert MLP weights)."""
    params = jax.eval_shape(lambda: init_params(cfg, key=jax.random.PRNGKey(0)))
    total = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    embedding = sum(int(np.prod(params[k].shape)) for k in ("embed", "unembed") if k in params)
    experts = sum(int(np.prod(layer[k].shape)) for layer in params["layers"] for k in ("w_gate", "w_up", "w_down"))
    return total, embedding, experts


@pytest.mark.parametrize("name", list(CONFIGS))
def test_param_counts_equal_leaf_sizes(name):
    cfg = CONFIGS[name]
    total, embedding, experts = _leaf_sizes(cfg)
    counts = param_counts(cfg)
    assert counts.total == total
    assert counts.embedding == embedding
    assert counts.non_embedding == total - embedding
    # A token uses top_k of the E experts; every other non-embedding weight is always active.
    assert counts.active == total - embedding - experts * (cfg.n_expert - cfg.top_k) // cfg.n_expert
    if not cfg.is_moe:
        assert counts.active == counts.non_embedding


def test_presets_span_1e4_to_1e7_and_match_kaplan_approximation():
    n = {name: param_counts(cfg).non_embedding for name, cfg in PRESETS.items()}
    assert 3e3 <= min(n.values()) < 1e4 and 5e6 < max(n.values()) <= 3e7
    for name, cfg in PRESETS.items():
        if not cfg.is_moe and cfg.n_kv_head == cfg.n_head:
            # d_ff ~ 8d/3 makes a SwiGLU block ~12 d^2, Kaplan's N = 12 L d^2.
            assert n[name] == pytest.approx(12 * cfg.n_layer * cfg.d_model ** 2, rel=0.10), name
    assert param_counts(PRESETS["d256-l4-gqa1"]).non_embedding < n["d256-l4"]
    assert param_counts(PRESETS["moe8-top2-d128-l4"]).active < n["moe8-top2-d128-l4"]


def test_six_n_and_attention_conventions():
    cfg = CONFIGS["moe"]
    f = flops_per_token(cfg)
    assert f.six_n == 6 * param_counts(cfg).active
    assert f.exact == 3 * (f.forward_proj + f.forward_attention + f.forward_mlp
                           + f.forward_router + f.forward_output)
    assert f.forward_attention == cfg.n_layer * 4 * cfg.seq_len * cfg.d_model
    assert flops_per_token(cfg, seq_len=32).forward_attention == f.forward_attention / 2
    causal = flops_per_token(cfg, causal_savings=True).forward_attention
    assert causal == f.forward_attention * (cfg.seq_len + 1) / (2 * cfg.seq_len)


def _xla_train_flops(cfg, batch, t):
    tokens = jnp.zeros((batch, t), jnp.int32)
    params = init_params(cfg, key=jax.random.PRNGKey(0))
    grad = jax.jit(jax.grad(loss_fn, has_aux=True), static_argnums=3)
    cost = grad.lower(params, tokens, tokens, cfg).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"]


@pytest.mark.parametrize("name,capacity_factor", [
    ("dense", None), ("gqa", None), ("tied", None), ("moe", 1.0), ("moe-top1-tied-gqa", 1.0)])
def test_exact_flops_match_xla_cost_analysis(name, capacity_factor):
    # capacity_factor 1.0 with N*k divisible by E: the expert buffers hold exactly N*k rows.
    cfg = dataclasses.replace(CONFIGS[name], capacity_factor=capacity_factor)
    batch, t = 4, cfg.seq_len
    xla = _xla_train_flops(cfg, batch, t)
    exact = flops_per_token(cfg).exact * batch * t
    assert xla == pytest.approx(exact, rel=0.10)


def test_dropless_moe_flops_match_xla_up_to_block_padding():
    """Dropless dispatch runs whole blocks: XLA also counts the padding rows (at most E * (block - 1)
    assignments), which `exact` leaves out as wasted work."""
    cfg = CONFIGS["moe"]
    batch, t = 4, cfg.seq_len
    n_assign = batch * t * cfg.top_k
    block = _dropless_block(n_assign, cfg.n_expert)
    pad_rows = (n_assign + cfg.n_expert * (block - 1)) // block * block - n_assign
    per_row = 3 * 2 * 3 * cfg.d_model * cfg.d_ff * cfg.n_layer  # one expert MLP, fwd + bwd
    exact = flops_per_token(cfg).exact * batch * t
    xla = _xla_train_flops(cfg, batch, t)
    assert xla == pytest.approx(exact + pad_rows * per_row, rel=0.10)
    assert xla > exact
