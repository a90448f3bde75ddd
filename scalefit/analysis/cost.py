"""What a planned model is and costs: a concrete shape near a parameter count, and accelerator-hours.

A shape is a real `ModelConfig` of the trainer's recipe (RMSNorm, RoPE, SwiGLU MLP of width ~8d/3,
untied output layer by default), counted by the one parameter count there is
(`scalefit.training.counting.param_counts`), so the N a plan names is the N the trainer would build.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scalefit.conventions import NKind
from scalefit.training.config import ModelConfig, swiglu_width
from scalefit.training.counting import ParamCounts, param_counts


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer shape and its exact parameter counts."""

    config: ModelConfig  # the shape, as the trainer takes it
    counts: ParamCounts  # total, embedding, non-embedding and active parameters of `config`

    @property
    def d_model(self) -> int:
        return self.config.d_model

    @property
    def n_layer(self) -> int:
        return self.config.n_layer

    @property
    def n_head(self) -> int:
        return self.config.n_head

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def N(self) -> int:
        """Total parameters, embeddings included."""
        return self.counts.total

    @property
    def N_non_embedding(self) -> int:
        """Non-embedding parameters (Kaplan et al. 2020's N)."""
        return self.counts.non_embedding


def shape_at(d_model: int, n_layer: int, *, vocab_size: int = 50257, head_dim: int = 64, seq_len: int = 2048,
             tie_embeddings: bool = False, n_expert: int = 1, top_k: int = 1,
             n_kv_head: int | None = None) -> ModelShape:
    """The recipe's shape of width `d_model` and depth `n_layer` (d_model // head_dim heads; `n_kv_head`
    key/value heads, default all of them). With `n_expert` > 1 each MLP is that many experts, each token
    routed to `top_k`, every expert d_ff / top_k wide (the sweep's `moe` design: k experts cost about one
    dense MLP, so the active count matches the dense shape's)."""
    heads = d_model // head_dim
    d_ff = swiglu_width(d_model) if n_expert == 1 else max(16, round(swiglu_width(d_model) / top_k / 16) * 16)
    cfg = ModelConfig(vocab_size=vocab_size, seq_len=seq_len, d_model=d_model, n_layer=n_layer, n_head=heads,
                      n_kv_head=heads if n_kv_head is None else n_kv_head, d_ff=d_ff, tie_embeddings=tie_embeddings,
                      n_expert=n_expert, top_k=top_k)
    return ModelShape(cfg, param_counts(cfg))


def model_shape(N_target: float, vocab_size: int = 50257, aspect_ratio: float = 64.0, head_dim: int = 64,
                max_d_model: int = 65536, n_kind: str = "total", seq_len: int = 2048,
                tie_embeddings: bool = False, n_expert: int = 1, top_k: int = 1) -> ModelShape:
    """The shape on a simple ladder whose parameter count (of kind `n_kind`) is closest to N_target in log N;
    with `n_expert` > 1 a mixture of experts (`shape_at`), e.g. n_kind="active" for the shape an MoE law's
    N_opt names.

    Ladder: d_model = head_dim * k (k = 1, 2, ...), n_layer = max(1, round(d_model / aspect_ratio)),
    n_head = k. Kaplan et al. (2020, Fig. 5) found loss nearly flat for aspect ratios d_model/n_layer
    between about 20 and 200, so the exact ratio matters little; 64 keeps small models deep enough.
    """
    N_target = _positive("N_target", N_target)
    field = NKind.parse(n_kind).count_field
    best = None
    for d in range(head_dim, max_d_model + 1, head_dim):
        s = shape_at(d, max(1, round(d / aspect_ratio)), vocab_size=vocab_size, head_dim=head_dim,
                     seq_len=seq_len, tie_embeddings=tie_embeddings, n_expert=n_expert, top_k=top_k)
        n = getattr(s.counts, field)
        err = abs(math.log(n / N_target))
        if best is None or err < best[0]:
            best = (err, s)
        if n > 2 * N_target:
            break
    return best[1]


# Vendor datasheet peak dense (no sparsity) BF16 tensor throughput, FLOP/s per accelerator:
# NVIDIA H100 SXM5 989 TFLOP/s, H200 SXM 989 TFLOP/s, A100 SXM4 312 TFLOP/s, Google TPU v5e 197 TFLOP/s.
PEAK_BF16_FLOPS = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "tpu-v5e": 197e12}


def accelerator_hours(C: float, hardware: str = "h100", mfu: float = 0.4,
                      peak_flops: float | None = None) -> float:
    """Accelerator-hours to spend C FLOPs: C / (peak_flops * mfu * 3600).

    mfu is model FLOPs utilisation (Chowdhery et al. 2022, PaLM, App. B): the fraction of the peak
    that the 6ND model FLOPs actually achieve; 0.3-0.5 is typical for well-tuned dense training.
    """
    C = _positive("C", C)
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu!r}")
    if peak_flops is None:
        if hardware not in PEAK_BF16_FLOPS:
            raise ValueError(f"unknown hardware {hardware!r}; known: {sorted(PEAK_BF16_FLOPS)} "
                             "(or pass peak_flops)")
        peak_flops = PEAK_BF16_FLOPS[hardware]
    return C / (_positive("peak_flops", peak_flops) * mfu * 3600.0)


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value
