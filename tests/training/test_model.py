"""Model correctness: training works, MoE/GQA reduce to their dense/MHA forms, routing is counted
exactly, attention is causal, configs are validated and jit compiles once."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scalefit.training.config import PRESETS, ModelConfig, TrainConfig, get_preset
from scalefit.training import model
from scalefit.training.model import forward, init_params, loss_fn, moe_mlp

CFG = ModelConfig(seq_len=16, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=64)
MOE = dataclasses.replace(CFG, n_expert=4, top_k=2)
B, T = 3, 16


def _tokens(seed=1, shape=(B, T)):
    return jax.random.randint(jax.random.PRNGKey(seed), shape, 0, CFG.vocab_size, dtype=jnp.int32)


@pytest.mark.parametrize("cfg", [CFG, MOE], ids=["dense", "moe"])
def test_memorises_one_batch(cfg):
    tokens = _tokens(seed=2, shape=(4, T + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    params = init_params(cfg, key=jax.random.PRNGKey(0))
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y, cfg)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, aux["ce"]

    first = None
    for _ in range(300):
        params, state, ce = step(params, state)
        first = float(ce) if first is None else first
    assert first > 5.0  # ~ln(256) = 5.55 at init
    assert float(ce) < 0.05


def _moe_from_dense(dense_params, moe_cfg, key):
    """MoE params whose experts are all copies of the dense MLP, with a random (non-uniform) router."""
    layers = []
    for layer, k in zip(dense_params["layers"], jax.random.split(key, moe_cfg.n_layer)):
        layer = dict(layer)
        for name in ("w_gate", "w_up", "w_down"):
            layer[name] = jnp.broadcast_to(layer[name], (moe_cfg.n_expert,) + layer[name].shape)
        layer["router"] = jax.random.normal(k, (moe_cfg.d_model, moe_cfg.n_expert))
        layers.append(layer)
    return {**dense_params, "layers": layers}


@pytest.mark.parametrize("capacity_factor", [None, 2.0], ids=["dropless", "capacity-no-drops"])
def test_identical_experts_equal_dense(capacity_factor):
    moe_cfg = dataclasses.replace(MOE, capacity_factor=capacity_factor)  # cf = E/k: nothing dropped
    dense_params = init_params(CFG, key=jax.random.PRNGKey(0))
    moe_params = _moe_from_dense(dense_params, moe_cfg, jax.random.PRNGKey(5))
    tokens = _tokens()
    dense_logits, _ = forward(dense_params, tokens, CFG)
    moe_logits, aux = forward(moe_params, tokens, moe_cfg)
    assert float(aux["dropped_frac"]) == 0.0
    assert float(jnp.min(jnp.max(aux["expert_load"], axis=1))) < 0.99  # routing really spread out
    np.testing.assert_allclose(moe_logits, dense_logits, atol=2e-5, rtol=1e-5)

    # Gradients too: each dense MLP weight's gradient is the sum of its copies' gradients.
    probe = jax.random.normal(jax.random.PRNGKey(6), dense_logits.shape)
    g_dense = jax.grad(lambda p: jnp.sum(forward(p, tokens, CFG)[0] * probe))(dense_params)
    g_moe = jax.grad(lambda p: jnp.sum(forward(p, tokens, moe_cfg)[0] * probe))(moe_params)
    np.testing.assert_allclose(g_moe["embed"], g_dense["embed"], atol=1e-5, rtol=1e-4)
    for gm, gd in zip(g_moe["layers"], g_dense["layers"]):
        for name in ("w_gate", "w_up", "w_down"):
            np.testing.assert_allclose(jnp.sum(gm[name], axis=0), gd[name], atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(gm["wq"], gd["wq"], atol=1e-5, rtol=1e-4)


def _reference_forward(params, tokens, cfg):
    """Straightforward multi-head attention with each key/value head repeated for its query group,
    rotary embedding as complex rotation, one head at a time. Dense models only."""
    b, t = tokens.shape
    h, kv, hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    freqs = cfg.rope_base ** (-np.arange(hd // 2) * 2.0 / hd)
    rot = np.exp(1j * np.arange(t)[:, None] * freqs[None, :])  # [T, hd/2]

    def rope(z):  # z [B, T, hd]; channel i pairs with i + hd/2
        c = (z[..., : hd // 2] + 1j * z[..., hd // 2:]) * rot
        return np.concatenate([c.real, c.imag], axis=-1)

    def norm(z, g):
        return z / np.sqrt(np.mean(z * z, -1, keepdims=True) + 1e-5) * g

    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = p["embed"][np.asarray(tokens)]  # [B, T, d]
    mask = np.tril(np.ones((t, t), bool))
    for layer in p["layers"]:
        z = norm(x, layer["attn_norm"])
        q = (z @ layer["wq"]).reshape(b, t, h, hd)
        k = np.repeat((z @ layer["wk"]).reshape(b, t, kv, hd), h // kv, axis=2)
        v = np.repeat((z @ layer["wv"]).reshape(b, t, kv, hd), h // kv, axis=2)
        heads = []
        for i in range(h):
            s = rope(q[:, :, i]) @ rope(k[:, :, i]).transpose(0, 2, 1) / math.sqrt(hd)
            s = np.where(mask, s, -np.inf)
            a = np.exp(s - s.max(-1, keepdims=True))
            heads.append((a / a.sum(-1, keepdims=True)) @ v[:, :, i])
        x = x + np.concatenate(heads, axis=-1) @ layer["wo"]
        z = norm(x, layer["mlp_norm"])
        gate, up = z @ layer["w_gate"], z @ layer["w_up"]
        x = x + (gate / (1 + np.exp(-gate)) * up) @ layer["w_down"]
    out = p["embed"].T if cfg.tie_embeddings else p["unembed"]
    return norm(x, p["final_norm"]) @ out


@pytest.mark.parametrize("n_kv_head,tied,t", [(4, False, T), (2, False, T), (1, True, T), (2, False, 150)],
                         ids=["mha", "gqa2", "mqa-tied", "gqa2-long"])
def test_attention_matches_repeated_kv_reference(n_kv_head, tied, t):
    # t = 150 runs the blocked causal path with a ragged last block (64 + 64 + 22 query rows).
    cfg = dataclasses.replace(CFG, n_kv_head=n_kv_head, tie_embeddings=tied, seq_len=max(t, T))
    params = init_params(cfg, key=jax.random.PRNGKey(3))
    tokens = _tokens(shape=(2, t))
    logits, _ = forward(params, tokens, cfg)
    np.testing.assert_allclose(logits, _reference_forward(params, tokens, cfg), atol=1e-4, rtol=1e-4)


def test_gqa_with_all_heads_equals_mha_with_repeated_kv():
    """A GQA model's K/V projections, repeated per query group, give an MHA model with equal logits."""
    gqa = dataclasses.replace(CFG, n_kv_head=1)
    mha = dataclasses.replace(CFG, n_kv_head=CFG.n_head)
    params = init_params(gqa, key=jax.random.PRNGKey(4))
    layers = [{**layer, "wk": jnp.tile(layer["wk"], (1, CFG.n_head)),  # [d, hd] -> [d, H * hd]
               "wv": jnp.tile(layer["wv"], (1, CFG.n_head))} for layer in params["layers"]]
    tokens = _tokens()
    np.testing.assert_allclose(forward({**params, "layers": layers}, tokens, mha)[0],
                               forward(params, tokens, gqa)[0], atol=1e-5, rtol=1e-5)


def _moe_layer(cfg, seed=0):
    return init_params(cfg, key=jax.random.PRNGKey(seed))["layers"][0]


def test_load_balancing_loss_is_one_for_uniform_router_and_large_when_collapsed():
    layer = _moe_layer(MOE)
    x = jax.random.normal(jax.random.PRNGKey(1), (64, MOE.d_model))
    uniform = {**layer, "router": jnp.zeros_like(layer["router"])}
    assert float(moe_mlp(uniform, x, MOE)[1]["aux_loss"]) == pytest.approx(1.0, abs=1e-6)
    # Every token strongly prefers expert 0 (then 1): f_0 = f_1 = 1/k, p_0 ~ 1, so the loss reaches
    # its maximum E/k.
    collapsed = {**layer, "router": jnp.zeros_like(layer["router"]).at[:, 0].set(50.0).at[:, 1].set(1.0)}
    x_pos = jnp.abs(x)
    assert float(moe_mlp(collapsed, x_pos, MOE)[1]["aux_loss"]) == pytest.approx(
        MOE.n_expert / MOE.top_k, rel=1e-3)


def _reference_moe(layer, x, cfg):
    """Token-by-token MoE: choice-major order, each expert takes the first C assignments."""
    x = np.asarray(x, np.float64)
    layer = jax.tree.map(lambda a: np.asarray(a, np.float64), layer)
    n, e, k = x.shape[0], cfg.n_expert, cfg.top_k
    logits = x @ layer["router"]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    cap = math.ceil(cfg.capacity_factor * n * k / e) if cfg.capacity_factor else n * k
    used, out, dropped = np.zeros(e, int), np.zeros_like(x), 0
    for choice in range(k):
        for i in range(n):
            ex = top[i, choice]
            if used[ex] >= cap:
                dropped += 1
                continue
            used[ex] += 1
            gate, up = x[i] @ layer["w_gate"][ex], x[i] @ layer["w_up"][ex]
            y = (gate / (1 + np.exp(-gate)) * up) @ layer["w_down"][ex]
            weight = probs[i, ex] if k == 1 else probs[i, ex] / probs[i, top[i]].sum()  # Switch gate at k = 1
            out[i] += weight * y
    return out, dropped / (n * k)


@pytest.mark.parametrize("capacity_factor", [None, 0.3, 1.0], ids=["dropless", "cf0.3", "cf1"])
def test_moe_dispatch_matches_token_by_token_reference(capacity_factor):
    cfg = dataclasses.replace(MOE, capacity_factor=capacity_factor)
    layer = _moe_layer(cfg, seed=7)
    layer = {**layer, "router": layer["router"] * 50.0}  # unbalanced routing so experts overflow
    x = jax.random.normal(jax.random.PRNGKey(2), (40, cfg.d_model))
    out, stats = moe_mlp(layer, x, cfg)
    ref_out, ref_dropped = _reference_moe(layer, x, cfg)
    np.testing.assert_allclose(out, ref_out, atol=1e-4, rtol=1e-4)
    assert float(stats["dropped_frac"]) == pytest.approx(ref_dropped, abs=1e-7)
    if capacity_factor is None:
        assert ref_dropped == 0.0
    else:
        # Dropped slots follow from the load alone: sum_e max(0, count_e - C).
        counts = np.rint(np.asarray(stats["expert_load"]) * 40 * cfg.top_k)
        cap = math.ceil(capacity_factor * 40 * cfg.top_k / cfg.n_expert)
        assert float(stats["dropped_frac"]) == pytest.approx(
            np.maximum(counts - cap, 0).sum() / (40 * cfg.top_k), abs=1e-7)
        assert ref_dropped > (0.5 if capacity_factor < 1 else 0.0)


@pytest.mark.parametrize("k", [1, 2])
def test_moe_dispatch_matches_reference_at_each_top_k(k):
    cfg = dataclasses.replace(MOE, top_k=k)
    layer = _moe_layer(cfg, seed=3)
    x = jax.random.normal(jax.random.PRNGKey(4), (24, cfg.d_model))
    np.testing.assert_allclose(moe_mlp(layer, x, cfg)[0], _reference_moe(layer, x, cfg)[0], atol=1e-4, rtol=1e-4)


def test_top1_router_learns_from_the_loss():
    # Renormalising one gate over itself gives exactly 1: the router would get no gradient from the loss.
    cfg = dataclasses.replace(MOE, top_k=1, aux_loss_coef=0.0)
    params = init_params(cfg, key=jax.random.PRNGKey(0))
    tokens = _tokens(seed=5, shape=(2, T + 1))
    grads = jax.grad(lambda p: loss_fn(p, tokens[:, :-1], tokens[:, 1:], cfg)[0])(params)
    router = [layer["router"] for layer in grads["layers"]]  # [d, E] per layer
    assert len(router) == cfg.n_layer and all(float(jnp.abs(r).max()) > 1e-5 for r in router)


def test_model_reports_dropped_fraction_per_layer_mean():
    cfg = dataclasses.replace(MOE, capacity_factor=0.25)
    _, aux = forward(init_params(cfg, key=jax.random.PRNGKey(0)), _tokens(), cfg)
    assert aux["expert_load"].shape == (cfg.n_layer, cfg.n_expert)
    np.testing.assert_allclose(jnp.sum(aux["expert_load"], axis=1), 1.0, rtol=1e-6)
    assert 0.5 < float(aux["dropped_frac"]) < 1.0  # capacity holds 1/4 of the assignments


@pytest.mark.parametrize("cfg", [CFG, MOE], ids=["dense", "moe"])
def test_causal(cfg):
    params = init_params(cfg, key=jax.random.PRNGKey(0))
    tokens = _tokens()
    j = 9
    changed = tokens.at[:, j].set((tokens[:, j] + 1) % cfg.vocab_size)
    a, _ = forward(params, tokens, cfg)
    b, _ = forward(params, changed, cfg)
    np.testing.assert_allclose(a[:, :j], b[:, :j], atol=1e-6, rtol=0)
    assert float(jnp.max(jnp.abs(a[:, j:] - b[:, j:]))) > 1e-3


def test_shorter_sequences_and_too_long_rejected():
    params = init_params(CFG, key=jax.random.PRNGKey(0))
    logits, _ = forward(params, _tokens(shape=(2, 5)), CFG)
    assert logits.shape == (2, 5, CFG.vocab_size) and logits.dtype == jnp.float32
    with pytest.raises(ValueError, match="exceeds the model's seq_len=16"):
        forward(params, _tokens(shape=(2, 17)), CFG)


def test_bfloat16_compute_is_close_to_float32():
    bf16 = dataclasses.replace(CFG, compute_dtype="bfloat16")
    params = init_params(CFG, key=jax.random.PRNGKey(0))
    tokens = _tokens()
    ce32 = loss_fn(params, tokens, tokens, CFG)[1]["ce"]
    ce16 = loss_fn(params, tokens, tokens, bf16)[1]["ce"]
    assert float(ce16) == pytest.approx(float(ce32), rel=1e-2)


@pytest.mark.parametrize("change,message", [
    (dict(d_model=30), "divisible by n_head"),
    (dict(n_kv_head=3), "divisible by n_kv_head"),
    (dict(n_expert=2, top_k=3), "top_k=3 cannot exceed n_expert=2"),
    (dict(n_layer=0), "n_layer must be a positive integer"),
    (dict(d_ff=-4), "d_ff must be a positive integer"),
    (dict(compute_dtype="float16"), "compute_dtype must be one of"),
    (dict(d_model=12, n_head=4, n_kv_head=4), "head_dim .* must be even"),
    (dict(n_expert=2, capacity_factor=0.0), "capacity_factor must be > 0"),
    (dict(tie_embeddings="no"), r"tie_embeddings must be true or false, got 'no' \(str\)"),
    (dict(rope_base="1e4"), "rope_base must be a number"),
])
def test_bad_configs_raise_before_compile(change, message):
    traces = []

    def traced(cfg):
        traces.append(cfg)
        return init_params(cfg, key=jax.random.PRNGKey(0))

    with pytest.raises(ValueError, match=message):
        traced(dataclasses.replace(CFG, **change))
    assert traces == []


@pytest.mark.parametrize("change, message", [
    (dict(lr=True), r"TrainConfig.lr must be a number, got True \(bool\)"),
    (dict(seed="abc"), "TrainConfig.seed must be an integer, got 'abc'"),
    (dict(tokens="1e6"), "TrainConfig.tokens must be a number or None"),
    (dict(warmup_steps=2.5), "TrainConfig.warmup_steps must be an integer or None"),
])
def test_train_config_refuses_values_of_the_wrong_type(change, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{"tokens": 1e5, **change})
    assert TrainConfig(tokens=100_000, lr=1).lr == 1  # an int where a number is asked is a number


def test_unknown_preset_lists_names():
    with pytest.raises(ValueError, match="unknown model preset 'd7-l9'.*d128-l4.*moe8-top2-d128-l4"):
        get_preset("d7-l9")
    assert get_preset("d384-l6") is PRESETS["d384-l6"]


def test_jit_compiles_once_for_equal_configs_and_shapes():
    traces = []

    def counted_loss(params, tokens, cfg):
        traces.append(1)  # runs only while tracing
        return loss_fn(params, tokens, tokens, cfg)[0]

    fn = jax.jit(counted_loss, static_argnums=2)
    params = init_params(CFG, key=jax.random.PRNGKey(0))
    fn(params, _tokens(1), CFG)
    fn(params, _tokens(2), dataclasses.replace(CFG))  # equal but distinct config object
    assert len(traces) == 1
    fn(params, _tokens(2, shape=(B, 8)), CFG)  # new shape: one more trace
    assert len(traces) == 2


def test_init_compiles_once_per_shape_and_matches_op_by_op():
    cfg = dataclasses.replace(MOE, d_ff=48)  # a shape no other test initialises
    before = model._normal._cache_size()
    a = init_params(cfg, key=jax.random.PRNGKey(0))
    compiled = model._normal._cache_size()
    assert compiled > before
    b = init_params(cfg, key=jax.random.PRNGKey(1))
    init_params(dataclasses.replace(cfg, n_layer=3), key=jax.random.PRNGKey(0))  # the same matrix shapes
    assert model._normal._cache_size() == compiled  # other seeds and depths reuse the samplers
    again = init_params(cfg, key=jax.random.PRNGKey(0))
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(again)))
    assert not np.array_equal(a["embed"], b["embed"])
    # Compiled samplers keep every value bit for bit.
    with jax.disable_jit():
        eager = init_params(cfg, key=jax.random.PRNGKey(0))
    assert jax.tree.structure(eager) == jax.tree.structure(a)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(eager)):
        np.testing.assert_array_equal(x, y)


def test_swiglu_gate_gradient_matches_autodiff_of_silu():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    g, u, ct = (jax.random.normal(k, (64, 40)) * s for k, s in zip(keys, (4.0, 1.0, 1.0)))
    np.testing.assert_array_equal(model._gated(g, u), jax.nn.silu(g) * u)
    ours = jax.grad(lambda g, u: jnp.sum(model._gated(g, u) * ct), (0, 1))(g, u)
    ref = jax.grad(lambda g, u: jnp.sum(jax.nn.silu(g) * u * ct), (0, 1))(g, u)
    for x, y in zip(ours, ref):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
