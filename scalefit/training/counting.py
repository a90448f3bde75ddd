"""Exact parameter counts and training FLOPs per token of a `ModelConfig`, from the config alone.

Conventions (also in docs/conventions.md):
- embedding parameters = the input token embedding [V, d] plus the output layer [d, V] when it is
  untied (a tied output layer is the same matrix, counted once). There are no learned positional
  embeddings (RoPE has no parameters).
- non-embedding parameters = everything else: attention, MLP/experts, router, RMSNorm gains. This
  is Kaplan et al. (2020)'s N (they drop embeddings and, in the 12*L*d^2 approximation, also norms
  and biases; here norms are counted exactly, a few hundred parameters). Chinchilla (Hoffmann et
  al. 2022) instead fits total N = embedding + non-embedding.
- active parameters (MoE) = non-embedding parameters one token actually uses: attention, norms,
  router and top_k of the E experts. Equal to non-embedding for dense models.
- FLOPs: one multiply-add = 2 FLOPs; training = forward + backward = 3 x forward (the backward pass
  does two matmuls per forward matmul: gradient w.r.t. inputs and w.r.t. weights).
- Budgets: a run trains for whole optimizer steps of batch_size * seq_len tokens; a token budget D or
  a FLOP budget C is rounded down to the steps it pays for (`total_steps`).

Pure arithmetic on configs (no JAX), so planning a sweep never imports the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from scalefit.conventions import CKind
from scalefit.training.config import ModelConfig, TrainConfig


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of one model (see the module docstring for what each includes)."""

    total: int  # every parameter leaf: embedding + non_embedding
    embedding: int  # input embedding, plus the output layer when untied
    non_embedding: int  # Kaplan's N: attention, MLP/experts, router, norms
    active: int  # non-embedding parameters one token uses (top_k experts); non_embedding if dense


@dataclass(frozen=True)
class FlopCounts:
    """Training (forward + backward) FLOPs per token, two ways, plus the exact forward breakdown."""

    six_n: float  # 6 x active non-embedding parameters (Kaplan et al. 2020, C = 6ND)
    exact: float  # 3 x forward matmul FLOPs below
    forward_proj: float  # Q/K/V and attention output projections
    forward_attention: float  # q k^T scores and probability-weighted values
    forward_mlp: float  # SwiGLU MLP, or the top_k experts a token uses
    forward_router: float  # router logits (MoE only)
    forward_output: float  # output layer (logits)


def _attention_params(cfg: ModelConfig) -> int:
    qkv = cfg.d_model * (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim
    out = cfg.n_head * cfg.head_dim * cfg.d_model
    return qkv + out


def _expert_params(cfg: ModelConfig) -> int:
    """One SwiGLU MLP: gate and up [d, F], down [F, d]."""
    return 3 * cfg.d_model * cfg.d_ff


def param_counts(cfg: ModelConfig) -> ParamCounts:
    """Exact parameter counts of `init_params(cfg)`.

    Per layer: attention d*(H + 2K)*hd + H*hd*d, two RMSNorm gains 2d, and E SwiGLU experts of
    3*d*F each plus a router d*E when E > 1 (one MLP, no router, when dense); then a final
    RMSNorm d.
    """
    d, e, n_layer = cfg.d_model, cfg.n_expert, cfg.n_layer
    router = d * e if cfg.is_moe else 0
    per_layer = _attention_params(cfg) + 2 * d + e * _expert_params(cfg) + router
    non_embedding = n_layer * per_layer + d
    embedding = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    inactive = n_layer * (e - cfg.top_k) * _expert_params(cfg) if cfg.is_moe else 0
    return ParamCounts(total=embedding + non_embedding, embedding=embedding,
                       non_embedding=non_embedding, active=non_embedding - inactive)


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None, *,
                    causal_savings: bool = False) -> FlopCounts:
    """Training FLOPs per token (forward + backward) at context length seq_len (cfg.seq_len if None).

    six_n = 6 * N_active (non-embedding, Kaplan et al. 2020 eq. 2.1 without the attention term).
    exact = 3 * forward, forward = sum of all matmuls per token:
      projections 2*d*(H + 2K)*hd + 2*H*hd*d, per layer;
      attention   2 * 2*T*H*hd per layer (scores and weighted values), i.e. the full T x T score
                  matrix that a masked dense attention computes (the Chinchilla appendix F
                  convention); causal_savings=True counts the average causal context (T + 1)/2
                  instead, what a kernel skipping masked blocks would do;
      MLP         top_k * 2*3*d*F per layer (1 expert when dense) plus router 2*d*E when MoE;
      output      2*d*V.
    Not counted: norms, softmax, activations, rotary embeddings, the embedding gather, routing
    bookkeeping and the optimizer (all O(d) per token, small next to the matmuls), nor the wasted
    compute on padding slots of capacity-limited or block-padded experts.
    """
    t = cfg.seq_len if seq_len is None else seq_len
    if t <= 0:
        raise ValueError(f"seq_len must be positive, got {t}")
    context = (t + 1) / 2 if causal_savings else t
    n_layer = cfg.n_layer
    proj = n_layer * 2 * _attention_params(cfg)
    attn = n_layer * 2 * 2 * context * cfg.n_head * cfg.head_dim
    experts_used = cfg.top_k if cfg.is_moe else 1
    mlp = n_layer * experts_used * 2 * _expert_params(cfg)
    router = n_layer * 2 * cfg.d_model * cfg.n_expert if cfg.is_moe else 0
    output = 2 * cfg.d_model * cfg.vocab_size
    forward = proj + attn + mlp + router + output
    return FlopCounts(six_n=6.0 * param_counts(cfg).active, exact=3.0 * forward,
                      forward_proj=float(proj), forward_attention=float(attn),
                      forward_mlp=float(mlp), forward_router=float(router),
                      forward_output=float(output))


def tokens_per_step(model_cfg: ModelConfig, train_cfg: TrainConfig) -> int:
    """Training tokens in one optimizer step: batch_size * seq_len."""
    return train_cfg.batch_size * model_cfg.seq_len


def total_steps(model_cfg: ModelConfig, train_cfg: TrainConfig) -> int:
    """Optimizer steps the budget pays for, rounded down: D / (B*T), or C / (flops_per_token * B*T).

    The FLOPs of a token are `flops_per_token`'s exact count or 6 N_active, as
    ``train_cfg.flops_convention`` says. ValueError when the budget does not cover a single step,
    before anything is compiled.
    """
    tps = tokens_per_step(model_cfg, train_cfg)
    if train_cfg.tokens is not None:
        per_step, budget, unit = tps, train_cfg.tokens, "tokens"
    else:
        fpt = flops_per_token(model_cfg)
        per_token = fpt.exact if train_cfg.flops_convention == CKind.EXACT else fpt.six_n
        per_step, budget, unit = per_token * tps, train_cfg.flops, f"FLOPs ({train_cfg.flops_convention})"
    steps = int(budget // per_step)
    if steps < 1:
        raise ValueError(
            f"budget of {budget:.4g} {unit} is smaller than one optimizer step ({per_step:.4g} {unit} "
            f"= batch_size {train_cfg.batch_size} x seq_len {model_cfg.seq_len} tokens); raise the "
            "budget or shrink the batch")
    return steps
