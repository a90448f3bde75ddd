"""What a planned model weighs and spends: weights at a precision, training memory with AdamW, the KV cache
at a context, and FLOPs per token with the share attention takes as the context grows.

Every number is a function of a `ModelConfig` through the one count there is,
`scalefit.training.counting` (parameters: `param_counts`; FLOPs: `flops_per_token`), so the calculators
and the trainer never disagree. A config comes from a preset name, a config itself, or a planned N
(`scalefit.analysis.cost.model_shape`, also for MoE shapes). Bytes are exact; GB = 1e9 bytes,
GiB = 2^30 bytes (both are printed: vendors quote GB, memory is addressed in GiB).

Not counted: activations (they depend on batch, sequence, recomputation and parallelism), framework
buffers and fragmentation, the optimizer's temporary buffers; the KV cache is that of a plain
(unpaged) cache holding K and V of every layer for every position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scalefit.training.config import ModelConfig, get_preset
from scalefit.training.counting import FlopCounts, ParamCounts, flops_per_token, param_counts

# Bytes per stored number. FP8 (E4M3 / E5M2) and INT8 are one byte; INT4 packs two numbers per byte.
# Quantised formats also store scales (e.g. one FP16 scale per group of 128 weights: +1.6% for INT4);
# `weight_bytes(..., group_size=...)` counts them when asked.
PRECISION_BYTES: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
PRECISIONS = ("fp32", "bf16", "fp8", "int8", "int4")  # the ones a sheet lists
GB, GIB = 1e9, float(2**30)


def bytes_per_param(precision: str) -> float:
    """Bytes one number takes at `precision` (fp32, bf16, fp16, fp8, int8, int4)."""
    key = str(precision).strip().lower()
    if key not in PRECISION_BYTES:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISION_BYTES)}")
    return PRECISION_BYTES[key]


def resolve_config(model) -> ModelConfig:
    """A `ModelConfig` from a config, a preset name (`scalefit.training.config.PRESETS`) or anything with
    a `.config` (a `scalefit.analysis.cost.ModelShape`)."""
    if isinstance(model, ModelConfig):
        return model
    if isinstance(model, str):
        return get_preset(model)
    cfg = getattr(model, "config", None)
    if isinstance(cfg, ModelConfig):
        return cfg
    raise TypeError(f"expected a ModelConfig, a preset name or a model shape, got {type(model).__name__}")


def weight_bytes(model, precision: str = "bf16", *, group_size: int | None = None,
                 scale_precision: str = "fp16") -> float:
    """Bytes of all weights (every expert, embeddings included) at `precision`: N_total x bytes per number.

    With `group_size`, quantised weights also store one `scale_precision` scale per group of that many
    weights (e.g. group-wise INT4 with FP16 scales, Frantar et al. 2023, GPTQ): N_total / group_size
    scales more.
    """
    n = param_counts(resolve_config(model)).total
    scales = 0.0 if group_size is None else math.ceil(n / _positive_int("group_size", group_size)) * \
        bytes_per_param(scale_precision)
    return n * bytes_per_param(precision) + scales


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes of model state during training with AdamW, by part (activations not included)."""

    weights: float  # the weights the forward pass reads, at the compute precision
    master: float  # an FP32 copy the optimizer updates when the compute weights are lower precision (else 0)
    gradients: float  # one gradient per parameter
    optimizer: float  # AdamW's first and second moments, two numbers per parameter
    n_params: int  # parameters trained (N_total)

    @property
    def total(self) -> float:
        return self.weights + self.master + self.gradients + self.optimizer

    @property
    def bytes_per_param(self) -> float:
        return self.total / self.n_params


def training_bytes(model, weights: str = "bf16", gradients: str | None = None, optimizer: str = "fp32",
                   master: bool | None = None) -> TrainingMemory:
    """Weights, gradients and AdamW state of a model in training.

    Mixed precision (the default): bf16 weights and gradients, an fp32 master copy and fp32 moments,
    2 + 2 + 4 + 4 + 4 = 16 bytes per parameter (Rajbhandari et al. 2020, ZeRO, Sec. 3.1: "16 Psi");
    weights="fp32": 4 + 4 + 8 = 16 bytes as well, with no master copy. AdamW keeps two moments per
    parameter (Loshchilov & Hutter 2019); decoupled weight decay adds no state. Sharding (ZeRO, FSDP)
    divides these totals across devices; this is the unsharded sum.
    """
    n = param_counts(resolve_config(model)).total
    w = bytes_per_param(weights)
    g = w if gradients is None else bytes_per_param(gradients)
    keep_master = (w < 4.0) if master is None else bool(master)
    return TrainingMemory(weights=n * w, master=n * 4.0 if keep_master else 0.0, gradients=n * g,
                          optimizer=2.0 * n * bytes_per_param(optimizer), n_params=n)


def kv_cache_bytes(model, context: int, batch: int = 1, precision: str = "bf16",
                   n_kv_head: int | None = None) -> float:
    """Bytes of the key/value cache at `context` positions for `batch` sequences:

        2 (K and V) x n_layer x n_kv_head x head_dim x context x batch x bytes per number.

    Multi-head attention caches every head (n_kv_head = n_head), grouped-query attention n_kv_head < n_head
    groups (Ainslie et al. 2023), multi-query attention one (Shazeer 2019). `n_kv_head` overrides the
    config's, to compare the three on one shape.
    """
    cfg = resolve_config(model)
    kv = cfg.n_kv_head if n_kv_head is None else _positive_int("n_kv_head", n_kv_head)
    if cfg.n_head % kv:
        raise ValueError(f"n_kv_head={kv} must divide n_head={cfg.n_head}")
    return (2.0 * cfg.n_layer * kv * cfg.head_dim * _positive_int("context", context) * _positive_int("batch", batch)
            * bytes_per_param(precision))


def attention_variants(model) -> dict[str, int]:
    """Key/value heads of MHA, a GQA and MQA on the same shape, by name: the config's own GQA when it is
    one, else 8 groups (LLaMA-2 70B's and LLaMA-3's choice) when the heads split into 8."""
    cfg = resolve_config(model)
    gqa = cfg.n_kv_head if 1 < cfg.n_kv_head < cfg.n_head else (8 if cfg.n_head > 8 and cfg.n_head % 8 == 0 else 0)
    return {"MHA": cfg.n_head, **({f"GQA-{gqa}": gqa} if gqa else {}), "MQA": 1}


@dataclass(frozen=True)
class TokenFlops:
    """FLOPs per token at one context length (`scalefit.training.counting.flops_per_token`)."""

    context: int  # positions attended over
    forward: float  # one forward pass per token: what inference spends per token
    training: float  # forward + backward (3 x forward)
    attention: float  # forward FLOPs of q k^T and the weighted values: the part that grows with context
    attention_layers: float  # `attention` plus the Q/K/V/output projections
    counts: FlopCounts  # the full breakdown

    @property
    def attention_share(self) -> float:
        """Share of a forward pass spent in q k^T and weighted values."""
        return self.attention / self.forward

    @property
    def attention_layers_share(self) -> float:
        """Share spent in attention layers, projections included."""
        return self.attention_layers / self.forward


def token_flops(model, context: int | None = None, *, causal: bool = False) -> TokenFlops:
    """FLOPs per token at `context` (default: the config's seq_len). The attention term grows as
    4 x n_layer x context x n_head x head_dim per token, the rest is fixed, so its share rises with the
    context. causal=True counts the mean causal context (T + 1) / 2, as a kernel that skips masked
    blocks spends (`flops_per_token`'s causal_savings)."""
    cfg = resolve_config(model)
    t = cfg.seq_len if context is None else _positive_int("context", context)
    fc = flops_per_token(cfg, t, causal_savings=causal)
    forward = fc.forward_proj + fc.forward_attention + fc.forward_mlp + fc.forward_router + fc.forward_output
    return TokenFlops(context=t, forward=forward, training=fc.exact, attention=fc.forward_attention,
                      attention_layers=fc.forward_attention + fc.forward_proj, counts=fc)


@dataclass(frozen=True)
class ModelSheet:
    """Everything the calculators say about one model, for printing (`lines`) or as data."""

    config: ModelConfig  # the shape
    counts: ParamCounts  # total, embedding, non-embedding, active parameters
    weights: dict[str, float]  # precision -> bytes of the weights
    training: TrainingMemory  # weights, master copy, gradients, AdamW moments (mixed precision)
    kv_cache: dict[str, float]  # attention variant -> cache bytes at (context, batch, kv_precision)
    context: int  # positions of the KV cache and of `flops`
    batch: int  # sequences of the KV cache
    kv_precision: str  # precision of the cached keys and values
    flops: tuple[TokenFlops, ...]  # FLOPs per token at `context` and longer contexts

    def lines(self) -> list[str]:
        c, cfg = self.counts, self.config
        moe = f", {cfg.n_expert} experts top-{cfg.top_k} (d_ff {cfg.d_ff} each)" if cfg.is_moe else f", d_ff {cfg.d_ff}"
        out = [f"shape: d_model {cfg.d_model}, n_layer {cfg.n_layer}, n_head {cfg.n_head} (kv {cfg.n_kv_head}, "
               f"head_dim {cfg.head_dim}){moe}, vocab {cfg.vocab_size}"
               f"{', tied embeddings' if cfg.tie_embeddings else ''}",
               f"parameters: total {c.total:,} = embedding {c.embedding:,} + non-embedding {c.non_embedding:,}; "
               f"active {c.active:,} per token",
               "weights: " + ", ".join(f"{k} {_size(v)}" for k, v in self.weights.items()),
               f"training (AdamW, mixed precision, no activations): {_size(self.training.total)} = weights "
               f"{_size(self.training.weights)} + fp32 master {_size(self.training.master)} + gradients "
               f"{_size(self.training.gradients)} + moments {_size(self.training.optimizer)} "
               f"({self.training.bytes_per_param:g} bytes/param)",
               f"KV cache at {self.context:,} tokens x batch {self.batch}, {self.kv_precision}: "
               + ", ".join(f"{k} {_size(v)}" for k, v in self.kv_cache.items())]
        f0 = self.flops[0]
        out.append(f"FLOPs per token at {f0.context:,} tokens: forward {f0.forward:.4g}, training {f0.training:.4g} "
                   f"(6 N_active = {6 * c.active:.4g})")
        out.append("attention share of the forward pass (q k^T + values; with projections): " + ", ".join(
            f"{f.context:,}: {f.attention_share:.1%} ({f.attention_layers_share:.1%})" for f in self.flops))
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def model_sheet(model, context: int | None = None, batch: int = 1, kv_precision: str = "bf16",
                contexts: tuple[int, ...] | None = None) -> ModelSheet:
    """The calculators on one model: parameter counts, weights at FP32/BF16/FP8/INT8/INT4, training memory,
    the KV cache of MHA, its GQA and MQA at (context, batch), and FLOPs per token at `context` and at 4x,
    16x and 64x it (or `contexts`) with the attention share."""
    cfg = resolve_config(model)
    t = cfg.seq_len if context is None else _positive_int("context", context)
    grid = (t, 4 * t, 16 * t, 64 * t) if contexts is None else tuple(_positive_int("context", x) for x in contexts)
    return ModelSheet(
        config=cfg, counts=param_counts(cfg), weights={p: weight_bytes(cfg, p) for p in PRECISIONS},
        training=training_bytes(cfg),
        kv_cache={k: kv_cache_bytes(cfg, t, batch, kv_precision, n_kv_head=h)
                  for k, h in attention_variants(cfg).items()},
        context=t, batch=_positive_int("batch", batch), kv_precision=kv_precision,
        flops=tuple(token_flops(cfg, x) for x in grid))


def _size(b: float) -> str:
    return f"{b / GB:.4g} GB ({b / GIB:.4g} GiB)" if b >= 1e8 else f"{b / 1e6:.4g} MB"


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or value <= 0:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)
