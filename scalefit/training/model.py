"""Decoder-only transformer, dense or mixture-of-experts, as pure functions over a dict of arrays.

Recipe: token embedding -> L x [RMSNorm -> causal grouped-query attention with rotary embeddings ->
residual; RMSNorm -> SwiGLU MLP (or E SwiGLU experts behind a learned top-k router) -> residual]
-> RMSNorm -> output layer. References: RMSNorm (Zhang & Sennrich 2019), RoPE (Su et al. 2021),
GQA (Ainslie et al. 2023), SwiGLU (Shazeer 2020), Switch Transformer (Fedus et al. 2021), GShard
(Lepikhin et al. 2020).

Layout choices made for speed on CPU: activations stay 2-D [B*T, d] between attention blocks (3-D
activations made XLA insert transpose copies), layers are an unrolled Python loop (faster than
`lax.scan` at these sizes), causal attention skips fully masked key blocks, expert dispatch moves
rows by gathers only, and with compute_dtype="bfloat16" matmul inputs are cast to bf16 with f32
accumulation while the master weights, norms, softmax and loss stay f32.

Params pytree (f32):
    embed [V, d]; unembed [d, V] (absent when tied); final_norm [d];
    layers: list of L dicts with attn_norm [d], wq [d, H * hd], wk and wv [d, K * hd],
      wo [H * hd, d], mlp_norm [d], and dense: w_gate, w_up [d, F], w_down [F, d];
      MoE: router [d, E], w_gate, w_up [E, d, F], w_down [E, F, d].
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from scalefit.training.attention import KERNELS
from scalefit.training.attention import einsum as _einsum
from scalefit.training.config import ModelConfig

_NORM_EPS = 1e-5
_EMBED_STD = 0.02  # GPT-2 / nanoGPT init for the (un)embedding matrices


def init_params(cfg: ModelConfig, *, key: jax.Array) -> dict:
    """Random float32 master weights.

    Hidden matrices are N(0, 1/fan_in); the residual-branch output projections (wo, w_down) are
    further scaled by 1/sqrt(2L) so the residual stream variance does not grow with depth (GPT-2,
    Radford et al. 2019). Norm gains start at 1.

    Each matrix is drawn by one compiled sampler per shape (`_normal`), shared by every matrix,
    layer and model of that shape: one program for the whole initialisation cost as much to compile
    as a training step, for every new config, and each small random op run on its own would be
    compiled separately for every new shape.
    """
    d, f, e, n_layer = cfg.d_model, cfg.d_ff, cfg.n_expert, cfg.n_layer
    kv_width = cfg.n_kv_head * cfg.head_dim
    depth_scale = 1.0 / math.sqrt(2 * n_layer)
    expert_shape = (e,) if cfg.is_moe else ()
    key_embed, key_unembed, *layer_keys = jax.random.split(key, 2 + n_layer)
    ones = _ones((d,))

    def normal(k, shape, std):
        return _normal(k, shape, np.float32(std))

    layers = []
    for k in layer_keys:
        k_q, k_k, k_v, k_o, k_gate, k_up, k_down, k_router = jax.random.split(k, 8)
        layer = {
            "attn_norm": ones,
            "wq": normal(k_q, (d, cfg.n_head * cfg.head_dim), 1.0 / math.sqrt(d)),
            "wk": normal(k_k, (d, kv_width), 1.0 / math.sqrt(d)),
            "wv": normal(k_v, (d, kv_width), 1.0 / math.sqrt(d)),
            "wo": normal(k_o, (cfg.n_head * cfg.head_dim, d), depth_scale / math.sqrt(d)),
            "mlp_norm": ones,
            "w_gate": normal(k_gate, expert_shape + (d, f), 1.0 / math.sqrt(d)),
            "w_up": normal(k_up, expert_shape + (d, f), 1.0 / math.sqrt(d)),
            "w_down": normal(k_down, expert_shape + (f, d), depth_scale / math.sqrt(f)),
        }
        if cfg.is_moe:
            layer["router"] = normal(k_router, (d, e), _EMBED_STD)
        layers.append(layer)
    params = {
        "embed": normal(key_embed, (cfg.vocab_size, d), _EMBED_STD),
        "layers": layers,
        "final_norm": ones,
    }
    if not cfg.tie_embeddings:
        params["unembed"] = normal(key_unembed, (d, cfg.vocab_size), _EMBED_STD)
    return params


@partial(jax.jit, static_argnums=1)
def _normal(key: jax.Array, shape: tuple[int, ...], std: jax.Array) -> jax.Array:
    """std * N(0, 1) samples of ``shape`` (f32) from ``key``; ``std`` a traced f32 [], so one program serves
    every scale. The barrier stops XLA folding ``std`` into the sampler's own scaling, which rounds
    differently: values are those of drawing and scaling op by op."""
    return std * jax.lax.optimization_barrier(jax.random.normal(key, shape, jnp.float32))


@partial(jax.jit, static_argnums=0)
def _ones(shape: tuple[int, ...]) -> jax.Array:
    return jnp.ones(shape, jnp.float32)


def rms_norm(x: jax.Array, gain: jax.Array) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) * gain over the last axis (Zhang & Sennrich 2019)."""
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + _NORM_EPS) * gain


def _rope_tables(t: int, head_dim: int, base: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of position * base^(-2i/hd), each [T, hd/2], times `scale` (a numpy constant,
    so XLA sees a literal rather than recomputing it every step)."""
    inv_freq = base ** (-np.arange(0, head_dim // 2, dtype=np.float64) * 2.0 / head_dim)  # [hd/2]
    angle = np.arange(t, dtype=np.float64)[:, None] * inv_freq[None, :]  # [T, hd/2]
    return ((np.cos(angle) * scale).astype(np.float32), (np.sin(angle) * scale).astype(np.float32))


def _rope(x: jax.Array, cos: np.ndarray, sin: np.ndarray) -> jax.Array:
    """Rotate channel pairs (i, i + hd/2) of x [B, T, n, hd] by the position angle (the
    "rotate half" layout of GPT-NeoX / LLaMA)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # each [B, T, n, hd/2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]  # [1, T, 1, hd/2]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)  # [B, T, n, hd]


def attention(layer: dict, x: jax.Array, batch: int, cfg: ModelConfig, kernel: str = "chunked") -> jax.Array:
    """Causal grouped-query self-attention of x [B*T, d] -> [B*T, d], the scores by ``kernel`` (a name in
    scalefit.training.attention.KERNELS).

    Query head h = kv * G + g reads key/value head kv (G = n_head / n_kv_head query heads per
    group), which is `jnp.repeat(k, G, axis=heads)` without materialising the repeat.
    softmax(q k^T / sqrt(hd) + causal mask) v, softmax in f32.
    """
    n_tok = x.shape[0]
    t = n_tok // batch
    h, kv, hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
    g = h // kv
    q = _einsum("nd,de->ne", x, layer["wq"], cfg).reshape(batch, t, h, hd)  # [B, T, H, hd]
    k = _einsum("nd,de->ne", x, layer["wk"], cfg).reshape(batch, t, kv, hd)  # [B, T, K, hd]
    v = _einsum("nd,de->ne", x, layer["wv"], cfg).reshape(batch, t, kv, hd)  # [B, T, K, hd]
    cos, sin = _rope_tables(t, hd, cfg.rope_base, 1.0)
    # The 1/sqrt(hd) score scale is folded into q's rotation tables: T*hd multiplies, not T*T.
    cos_q, sin_q = _rope_tables(t, hd, cfg.rope_base, 1.0 / math.sqrt(hd))
    q = _rope(q, cos_q, sin_q).reshape(batch, t, kv, g, hd)  # [B, T, K, G, hd]
    k = _rope(k, cos, sin)  # [B, T, K, hd]
    out = KERNELS[kernel].fn(q, k, v, cfg)  # [B, T, K, G, hd]
    out = out.reshape(n_tok, h * hd)  # [B*T, H * hd]
    return _einsum("ne,ed->nd", out, layer["wo"], cfg)  # [B*T, d]


_EXPERT_WEIGHTS = ("w_gate", "w_up", "w_down")


@jax.custom_vjp
def _gated(gate: jax.Array, up: jax.Array) -> jax.Array:
    """silu(gate) * up = gate * sigmoid(gate) * up, elementwise.

    With s = sigmoid(g) the gradients are d/du = g s and d/dg = u s (1 + g (1 - s)). Written out, the
    backward pass is one elementwise loop over (g, u, upstream) that recomputes s; differentiated
    through `jax.nn.silu` it was several loops with the sigmoid and products kept in memory between
    them, which on CPU were memory-bound passes over [N, F] arrays.
    """
    return gate * jax.nn.sigmoid(gate) * up


def _gated_fwd(gate, up):
    return _gated(gate, up), (gate, up)


def _gated_bwd(res, ct):
    gate, up = res
    s = jax.nn.sigmoid(gate)
    return ct * up * s * (1 + gate * (1 - s)), ct * gate * s


_gated.defvjp(_gated_fwd, _gated_bwd)


def _swiglu(w: dict, x: jax.Array, cfg: ModelConfig) -> jax.Array:
    """silu(x W_gate) * (x W_up) W_down for x [..., n, d] and weights with matching leading axes
    (Shazeer 2020). Gate and up stay separate matmuls: one fused [d, 2F] matmul plus slicing was
    ~9% slower on CPU."""
    gate = _einsum("...nd,...df->...nf", x, w["w_gate"], cfg)  # [..., n, F]
    up = _einsum("...nd,...df->...nf", x, w["w_up"], cfg)  # [..., n, F]
    return _einsum("...nf,...fd->...nd", _gated(gate, up), w["w_down"], cfg)  # [..., n, d]


@jax.custom_vjp
def _gather_rows(x: jax.Array, index: jax.Array, inverse: jax.Array) -> jax.Array:
    """out[i] = x[index[i]] (0 where index[i] is out of range) for x [n, d], index [m] -> [m, d].

    `inverse` is the inverse partial map (x row j lands in out row inverse[j], out of range when it
    is not used), so the gradient is again a gather rather than a scatter-add, which XLA runs
    slowly on CPU. Expert dispatch and combine are such one-to-one row moves.
    """
    return x.at[index].get(mode="fill", fill_value=0)


def _gather_rows_fwd(x, index, inverse):
    return _gather_rows(x, index, inverse), (index, inverse)


def _gather_rows_bwd(res, ct):
    index, inverse = res
    return ct.at[inverse].get(mode="fill", fill_value=0), None, None


_gather_rows.defvjp(_gather_rows_fwd, _gather_rows_bwd)


def _dropless_block(n_assign: int, n_expert: int) -> int:
    """Rows per block in dropless dispatch: a power of two near n_assign / (4E), so padding each
    expert's group to whole blocks costs at most ~1/4 extra expert compute. Smaller blocks waste
    less compute but gather more copies of the expert weights; at d=128, E=8 this size was
    fastest."""
    target = max(1, n_assign // (4 * n_expert))
    return int(min(256, max(8, 2 ** int(math.log2(target)))))


def moe_mlp(layer: dict, x: jax.Array, cfg: ModelConfig) -> tuple[jax.Array, dict]:
    """Mixture of SwiGLU experts on x [N, d] -> ([N, d], stats).

    Router: p = softmax(x W_r) in f32; each token goes to its top-k experts with gates renormalised
    over the chosen k when k > 1 (Mixtral); with k = 1 the gate is p itself (Switch, Fedus et al. 2021):
    renormalised over one expert it would be exactly 1, and the router would learn nothing from the
    loss, only from the balancing term. Assignments are ordered choice-major (every token's first choice before any
    second choice, as in GShard) to decide who is dropped when an expert is full.
    - capacity_factor cf: each expert takes C = ceil(cf * N * k / E) assignments; the rest are
      dropped (they contribute 0, the residual carries the token) and counted in dropped_frac.
    - dropless (cf None): each expert's assignments are packed into whole blocks of a fixed size;
      each block multiplies by its expert's weights (MegaBlocks-style, Gale et al. 2022), so the
      work is N * k rows plus at most E * (block - 1) padding rows, rather than N * E rows.
    Load-balancing loss (Switch, Fedus et al. 2021): E * sum_e f_e * P_e with f_e the fraction of
    the N*k assignments routed to e (before dropping) and P_e the mean router probability; it is 1
    for a uniform router and balanced load.
    """
    n, d = x.shape
    e, k = cfg.n_expert, cfg.top_k
    n_assign = n * k
    logits = x @ layer["router"]  # [N, E] kept f32: routing decisions are precision-sensitive
    probs = jax.nn.softmax(logits, axis=-1)  # [N, E]
    top_p, top_e = jax.lax.top_k(probs, k)  # each [N, k]
    gates = top_p if k == 1 else top_p / jnp.sum(top_p, axis=-1, keepdims=True)  # [N, k]
    expert = top_e.T.reshape(n_assign)  # [k*N] choice-major
    onehot = jax.nn.one_hot(expert, e, dtype=jnp.int32)  # [k*N, E]
    pos = jnp.sum((jnp.cumsum(onehot, axis=0) - 1) * onehot, axis=-1)  # [k*N] rank within expert
    counts = jnp.sum(onehot, axis=0)  # [E]
    load = counts.astype(jnp.float32) / n_assign  # [E] f_e
    aux_loss = e * jnp.sum(load * jnp.mean(probs, axis=0))

    if cfg.capacity_factor is not None:
        cap = math.ceil(cfg.capacity_factor * n_assign / e)
        kept = pos < cap
        n_rows, block = e * cap, cap
        slot = jnp.where(kept, expert * cap + pos, n_rows)  # [k*N]; n_rows = out of range = dropped
        experts = {name: layer[name] for name in _EXPERT_WEIGHTS}  # block b is expert b
        dropped = n_assign - jnp.sum(kept)
    else:
        block = _dropless_block(n_assign, e)
        padded = (counts + block - 1) // block * block  # [E] rows per expert, whole blocks
        ends = jnp.cumsum(padded)  # [E]
        slot = ends[expert] - padded[expert] + pos  # [k*N]
        n_blocks = (n_assign + e * (block - 1)) // block  # static bound on sum(padded) / block
        n_rows = n_blocks * block
        block_start = jnp.arange(n_blocks) * block  # [n_blocks]
        block_expert = jnp.minimum(jnp.searchsorted(ends, block_start, side="right"), e - 1)
        # [n_blocks, ...]: each block's expert weights
        experts = {name: layer[name][block_expert] for name in _EXPERT_WEIGHTS}
        dropped = jnp.zeros((), jnp.int32)

    # source[r] = the assignment held in buffer row r (n_assign = empty row): the inverse of slot.
    source = jnp.full((n_rows,), n_assign, jnp.int32).at[slot].set(
        jnp.arange(n_assign, dtype=jnp.int32), mode="drop")  # [rows]
    x_rep = jnp.tile(x, (k, 1))  # [k*N, d] choice-major copies of the tokens
    buf = _gather_rows(x_rep, source, slot)  # [rows, d]
    y = _swiglu(experts, buf.reshape(n_rows // block, block, d), cfg)  # [blocks, block, d]
    y = _gather_rows(y.reshape(n_rows, d), slot, source)  # [k*N, d]; dropped -> 0
    out = jnp.einsum("kn,knd->nd", gates.T, y.reshape(k, n, d))  # [N, d] gate-weighted sum
    stats = {"aux_loss": aux_loss, "expert_load": load,
             "dropped_frac": dropped.astype(jnp.float32) / n_assign}
    return out, stats


def mlp(layer: dict, x: jax.Array, cfg: ModelConfig) -> tuple[jax.Array, dict]:
    """The position-wise block on x [N, d]: a SwiGLU MLP, or experts when cfg.is_moe."""
    if cfg.is_moe:
        return moe_mlp(layer, x, cfg)
    stats = {"aux_loss": jnp.zeros((), jnp.float32), "expert_load": jnp.ones((1,), jnp.float32),
             "dropped_frac": jnp.zeros((), jnp.float32)}
    return _swiglu(layer, x, cfg), stats


def _forward_flat(params: dict, tokens: jax.Array, cfg: ModelConfig,
                  attention_kernel: str) -> tuple[jax.Array, dict]:
    """Logits [B*T, V] (f32) and aux stats for tokens [B, T]."""
    batch, t = tokens.shape
    if t > cfg.seq_len:
        raise ValueError(f"sequence length {t} exceeds the model's seq_len={cfg.seq_len}")
    x = params["embed"][tokens.reshape(batch * t)]  # [B*T, d]
    layer_stats = []
    for layer in params["layers"]:
        x = x + attention(layer, rms_norm(x, layer["attn_norm"]), batch, cfg, attention_kernel)
        h, stats = mlp(layer, rms_norm(x, layer["mlp_norm"]), cfg)
        x = x + h
        layer_stats.append(stats)
    x = rms_norm(x, params["final_norm"])
    if cfg.tie_embeddings:
        logits = _einsum("nd,vd->nv", x, params["embed"], cfg)  # [B*T, V]
    else:
        logits = _einsum("nd,dv->nv", x, params["unembed"], cfg)  # [B*T, V]
    aux = {
        "aux_loss": jnp.mean(jnp.stack([s["aux_loss"] for s in layer_stats])),
        "expert_load": jnp.stack([s["expert_load"] for s in layer_stats]),  # [L, E]
        "dropped_frac": jnp.mean(jnp.stack([s["dropped_frac"] for s in layer_stats])),
    }
    return logits, aux


def forward(params: dict, tokens: jax.Array, cfg: ModelConfig, *,
            attention_kernel: str = "chunked") -> tuple[jax.Array, dict]:
    """Logits [B, T, V] (f32) for int32 tokens [B, T] with T <= cfg.seq_len, and aux:
    aux_loss (load-balancing loss averaged over layers; 0 for dense), expert_load [L, E] (fraction
    of routed token-slots per expert; [L, 1] ones for dense), dropped_frac (fraction of token-slots
    dropped over capacity, averaged over layers; 0 for dense and dropless)."""
    batch, t = tokens.shape
    logits, aux = _forward_flat(params, tokens, cfg, attention_kernel)
    return logits.reshape(batch, t, cfg.vocab_size), aux  # [B, T, V]


def loss_fn(params: dict, tokens: jax.Array, targets: jax.Array, cfg: ModelConfig, *,
            attention_kernel: str = "chunked") -> tuple[jax.Array, dict]:
    """Training objective: mean next-token cross-entropy in nats + aux_loss_coef * aux_loss.

    Returns (loss, aux) where aux is forward's aux plus "ce" (the plain cross-entropy, nats/token).
    targets [B, T] int32 are the tokens to predict at each position (tokens shifted by one).
    """
    logits, aux = _forward_flat(params, tokens, cfg, attention_kernel)  # [B*T, V]
    flat_targets = targets.reshape(-1)  # [B*T]
    lse = jax.nn.logsumexp(logits, axis=-1)  # [B*T]
    # A one-hot product fuses into the reduction; take_along_axis would backpropagate by scatter.
    onehot = jax.nn.one_hot(flat_targets, cfg.vocab_size, dtype=logits.dtype)  # [B*T, V]
    target_logit = jnp.sum(logits * onehot, axis=-1)  # [B*T]
    ce = jnp.mean(lse - target_logit)
    loss = ce + cfg.aux_loss_coef * aux["aux_loss"] if cfg.is_moe else ce
    return loss, {**aux, "ce": ce}
