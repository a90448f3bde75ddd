"""Frozen, hashable configuration dataclasses and named size presets.

Configs are frozen dataclasses so they can be passed to `jax.jit` as static arguments: two equal
configs hash equal and reuse one compiled program. Every invalid combination is rejected in
`__post_init__`, before anything is traced or compiled.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from scalefit.conventions import COUNTED, CKind

_DTYPES = ("float32", "bfloat16")

# The annotation's words -> (what a value must be, how a message names it); a field whose annotation has
# another word (a tuple of knots) is checked by its own rule in __post_init__.
_TYPES = {"int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
          "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
          "bool": (lambda v: isinstance(v, bool), "true or false"),
          "str": (lambda v: isinstance(v, str), "a string"),
          "None": (lambda v: v is None, "None")}


def _check_types(cfg) -> None:
    """ValueError naming the field when a value is not of its annotated type (``lr=True`` is not a rate:
    Python would take it as 1.0, and ``tie_embeddings="no"`` as true)."""
    for f in dataclasses.fields(cfg):
        words = [w.strip() for w in str(f.type).split("|")]
        if not all(w in _TYPES for w in words):
            continue
        v = getattr(cfg, f.name)
        if not any(_TYPES[w][0](v) for w in words):
            expected = " or ".join(_TYPES[w][1] for w in words)
            raise ValueError(f"{type(cfg).__name__}.{f.name} must be {expected}, got {v!r} ({type(v).__name__})")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape of a decoder-only transformer: dense when n_expert == 1, mixture-of-experts otherwise.

    Recipe: RMSNorm pre-norm blocks, rotary position embeddings, causal grouped-query attention,
    SwiGLU MLP (or E SwiGLU experts with a learned top-k router), final RMSNorm, output layer.
    """

    vocab_size: int = 256  # tokens in the vocabulary (256 = raw bytes)
    seq_len: int  # context length T; forward accepts any T <= seq_len
    d_model: int  # residual stream width d
    n_layer: int  # number of transformer blocks L
    n_head: int  # query heads H; head_dim = d_model // n_head
    n_kv_head: int  # key/value heads (grouped-query attention): == n_head is MHA, 1 is MQA
    d_ff: int  # SwiGLU hidden width (per expert for MoE)
    tie_embeddings: bool = False  # output layer reuses the input embedding matrix (transposed)
    n_expert: int = 1  # experts per MLP layer E; 1 = dense model
    top_k: int = 1  # experts each token is routed to (MoE only)
    capacity_factor: float | None = None  # capacity = ceil(cf * tokens * k / E); None = dropless
    aux_loss_coef: float = 0.01  # weight of the Switch/GShard load-balancing loss in the total loss
    rope_base: float = 10000.0  # rotary embedding base frequency (RoFormer, Su et al. 2021)
    compute_dtype: str = "float32"  # matmul input dtype; "bfloat16" = bf16 inputs, f32 accumulation

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("vocab_size", "seq_len", "d_model", "n_layer", "n_head", "n_kv_head", "d_ff",
                     "n_expert", "top_k"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {v!r}")
        if self.d_model % self.n_head:
            raise ValueError(
                f"ModelConfig.d_model={self.d_model} must be divisible by n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(
                f"ModelConfig.n_head={self.n_head} must be divisible by n_kv_head={self.n_kv_head} "
                "(each key/value head serves a whole group of query heads)")
        if self.head_dim % 2:
            raise ValueError(
                f"ModelConfig head_dim = d_model / n_head = {self.head_dim} must be even "
                "(rotary embeddings rotate pairs of channels)")
        if self.top_k > self.n_expert:
            raise ValueError(
                f"ModelConfig.top_k={self.top_k} cannot exceed n_expert={self.n_expert}")
        if self.capacity_factor is not None and not self.capacity_factor > 0:
            raise ValueError(
                "ModelConfig.capacity_factor must be > 0 or None (dropless), "
                f"got {self.capacity_factor!r}")
        if not self.aux_loss_coef >= 0:
            raise ValueError(f"ModelConfig.aux_loss_coef must be >= 0, got {self.aux_loss_coef!r}")
        if not self.rope_base > 0:
            raise ValueError(f"ModelConfig.rope_base must be > 0, got {self.rope_base!r}")
        if self.compute_dtype not in _DTYPES:
            raise ValueError(
                f"ModelConfig.compute_dtype must be one of {_DTYPES}, got {self.compute_dtype!r}")

    @property
    def head_dim(self) -> int:
        """Channels per attention head."""
        return self.d_model // self.n_head

    @property
    def is_moe(self) -> bool:
        """True when the MLP is a mixture of experts."""
        return self.n_expert > 1

    def with_overrides(self, **changes) -> ModelConfig:
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The canonical JSON form (`dataclasses.asdict`): spec.json's ``model`` and the run id hash it."""
        return dataclasses.asdict(self)


def _ff(d: int) -> int:
    """SwiGLU width 8d/3 rounded up to a multiple of 16, so 3*d*d_ff ~ 8d^2 and a block has ~12d^2
    parameters like a GPT-2 block (Shazeer 2020; the LLaMA convention)."""
    return -(-8 * d // 48) * 16


def _dense(d: int, n_layer: int, n_head: int, n_kv_head: int | None = None, **kw) -> ModelConfig:
    return ModelConfig(seq_len=256, d_model=d, n_layer=n_layer, n_head=n_head,
                       n_kv_head=n_head if n_kv_head is None else n_kv_head, d_ff=_ff(d), **kw)


# Named sizes from ~3e3 to ~1e7 non-embedding parameters (see scalefit.training.counting.param_counts); the
# d16/d24 ones are small enough for an IsoFLOP budget of ~1e11 FLOPs to sit at ~20k total parameters.
# Names: d<d_model>-l<n_layer>; "-gqa<K>" = K key/value heads; "-tied" = tied embeddings;
# "moe<E>-top<k>-" = E experts, each token routed to k of them (dropless).
PRESETS: dict[str, ModelConfig] = {
    "d16-l1": _dense(16, 1, 1),
    "d24-l1": _dense(24, 1, 1),
    "d32-l1": _dense(32, 1, 2),
    "d32-l2": _dense(32, 2, 2),
    "d48-l2": _dense(48, 2, 2),
    "d64-l2": _dense(64, 2, 2),
    "d64-l4": _dense(64, 4, 2),
    "d96-l3": _dense(96, 3, 3),
    "d128-l4": _dense(128, 4, 4),
    "d128-l4-tied": _dense(128, 4, 4, tie_embeddings=True),
    "d192-l4": _dense(192, 4, 3),
    "d256-l4": _dense(256, 4, 4),
    "d256-l4-gqa1": _dense(256, 4, 4, n_kv_head=1),
    "d384-l6": _dense(384, 6, 6),
    "d384-l6-gqa2": _dense(384, 6, 6, n_kv_head=2),
    "d512-l6": _dense(512, 6, 8),
    "moe4-top1-d64-l2": _dense(64, 2, 2, n_expert=4, top_k=1),
    "moe8-top2-d64-l2": _dense(64, 2, 2, n_expert=8, top_k=2),
    "moe8-top2-d128-l4": _dense(128, 4, 4, n_expert=8, top_k=2),
    "moe8-top1-d256-l4": _dense(256, 4, 4, n_expert=8, top_k=1),
}


def get_preset(name: str) -> ModelConfig:
    """The named size preset; ValueError listing the known names for an unknown one."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}") from None


_SCHEDULES = ("cosine", "constant", "wsd", "table")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How one model is trained: optimizer, learning-rate schedule, budget, evaluation, checkpoints.

    The budget is tokens or FLOPs (exactly one of the two); the number of optimizer steps is the
    budget divided by the tokens (or FLOPs) of one step, rounded down.
    """

    batch_size: int = 16  # sequences per optimizer step (tokens per step = batch_size * seq_len)
    lr: float = 3e-3  # peak learning rate (AdamW)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay; 0.95 is steadier than 0.999 for short runs
    eps: float = 1e-8  # AdamW denominator floor
    weight_decay: float = 0.1  # decoupled weight decay on matrices (ndim >= 2), scaled by the schedule
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 disables clipping
    warmup_frac: float = 0.05  # linear warmup as a fraction of all steps (ignored if warmup_steps set)
    warmup_steps: int | None = None  # linear warmup in steps; overrides warmup_frac
    schedule: str = "cosine"  # "cosine" (to min_lr_ratio), "constant", "wsd" (warmup-stable-decay), or "table"
    # "table": knots (step, rate / lr), the rate linear between knots and held beyond the last; the whole
    # schedule, warmup included (warmup_* and cooldown_frac are not used), so spec.json records it exactly.
    schedule_table: tuple[tuple[int, float], ...] | None = None
    cooldown_frac: float = 0.2  # WSD: fraction of all steps spent in the 1-sqrt cooldown
    min_lr_ratio: float = 0.1  # final lr / peak lr for the cosine and WSD decays
    tokens: float | None = None  # token budget (training tokens), or None when flops is given
    flops: float | None = None  # FLOP budget (training FLOPs), or None when tokens is given
    flops_convention: str = "exact"  # how a FLOP budget is counted per token: "exact" or "6ND" (6 N_active)
    n_evals: int = 12  # validation passes at log-spaced steps; one more always runs at the end
    eval_batches: int = 4  # validation batches (of batch_size sequences) per pass
    log_every: int = 10  # write a metrics line every this many steps (and at every eval step)
    checkpoint_every: int = 200  # save params + optimizer state every this many steps (and at the end)
    seed: int = 0  # parameter init and the data order (batches are a pure function of seed and step)

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("batch_size", "n_evals", "eval_batches", "log_every", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        for name in ("lr", "eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("warmup_frac", "min_lr_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not 0 < self.cooldown_frac <= 1:
            raise ValueError(f"TrainConfig.cooldown_frac must be in (0, 1], got {self.cooldown_frac!r}")
        if self.warmup_steps is not None and (not isinstance(self.warmup_steps, int) or self.warmup_steps < 0):
            raise ValueError(f"TrainConfig.warmup_steps must be an integer >= 0 or None, got {self.warmup_steps!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if (self.schedule == "table") != (self.schedule_table is not None):
            raise ValueError("TrainConfig.schedule_table is given exactly when schedule is 'table' "
                             f"(schedule={self.schedule!r}, schedule_table {'set' if self.schedule_table else 'None'})")
        if self.schedule_table is not None:
            object.__setattr__(self, "schedule_table", _knots(self.schedule_table))
        conv = CKind.parse(self.flops_convention, "TrainConfig.flops_convention")
        if conv not in COUNTED:
            raise ValueError(f"TrainConfig.flops_convention must be one of {', '.join(COUNTED)}, "
                             f"got {self.flops_convention!r}")
        object.__setattr__(self, "flops_convention", conv.value)  # one spelling: "6N" is read as "6ND"
        if (self.tokens is None) == (self.flops is None):
            raise ValueError("TrainConfig needs exactly one budget: tokens or flops "
                             f"(got tokens={self.tokens!r}, flops={self.flops!r})")
        budget = self.tokens if self.tokens is not None else self.flops
        if not budget > 0:
            raise ValueError(f"TrainConfig budget must be > 0, got {budget!r}")

    def with_overrides(self, **changes) -> TrainConfig:
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The canonical JSON form (`dataclasses.asdict` through JSON, so the knots of a "table" schedule are
        lists as spec.json reads back): spec.json's ``train`` and the run id hash it."""
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        if d["schedule_table"] is None:  # a field added later: left out at its default, so earlier ids stand
            del d["schedule_table"]
        return d


def _knots(table) -> tuple[tuple[int, float], ...]:
    """Knots (step, rate / lr) as a tuple of (int, float) pairs (a JSON round trip gives lists), validated."""
    try:
        knots = tuple((int(s), float(v)) for s, v in table)
    except (TypeError, ValueError):
        raise ValueError(f"TrainConfig.schedule_table must be (step, value) pairs, got {table!r:.80}") from None
    if not knots:
        raise ValueError("TrainConfig.schedule_table has no knots")
    steps = [s for s, _ in knots]
    if steps[0] < 0 or any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError("TrainConfig.schedule_table steps must be >= 0 and strictly increasing")
    if any(not (v >= 0 and v < float("inf")) for _, v in knots):
        raise ValueError("TrainConfig.schedule_table values must be finite and >= 0 (rates relative to lr)")
    if any(s != round(s) for s, _ in table):
        raise ValueError("TrainConfig.schedule_table steps must be whole numbers")
    return knots


PARAM_LAYOUTS = ("replicated", "fsdp")


@dataclass(frozen=True, kw_only=True)
class ComputeConfig:
    """Where and how a run is computed: the devices, how the training state is laid out on them, and
    the attention kernel.

    Not part of a run's identity (its run id, the configs spec.json checks on resume): every setting
    computes the same function, so the losses agree to float rounding (tests/training/test_parallel.py),
    and a checkpoint written under one setting resumes under any other (4 devices, then 1).
    """

    devices: int | None = None  # devices on the mesh's data axis (the first n of jax.devices()); None = all
    params: str = "replicated"  # "replicated": each device holds the whole state; "fsdp": parameters and
    #                             optimizer moments sharded over the data axis, gathered for each step
    attention: str = "auto"  # a kernel of scalefit.training.attention.KERNELS, or "auto": the fastest
    #                          the backend supports for the compute dtype (attention.AUTO)

    def __post_init__(self) -> None:
        _check_types(self)
        if self.devices is not None and (not isinstance(self.devices, int) or isinstance(self.devices, bool)
                                         or self.devices <= 0):
            raise ValueError(f"ComputeConfig.devices must be a positive integer or None (all), got {self.devices!r}")
        if self.params not in PARAM_LAYOUTS:
            raise ValueError(f"ComputeConfig.params must be one of {PARAM_LAYOUTS}, got {self.params!r}")
        if not isinstance(self.attention, str) or not self.attention:
            raise ValueError(f"ComputeConfig.attention must be a kernel name or 'auto', got {self.attention!r}")


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One training run: what to train, how, on which corpus, and the name of its run folder."""

    run_id: str  # run folder name under a sweep's root; unique within the sweep
    model: ModelConfig  # the model shape
    train: TrainConfig  # optimizer, schedule and budget
    corpus: str | None = None  # text file or folder; None = the Python standard-library corpus

    def __post_init__(self) -> None:
        if not self.run_id or "/" in self.run_id or self.run_id in (".", ".."):
            raise ValueError(f"RunSpec.run_id must be a plain folder name, got {self.run_id!r}")

    def to_dict(self) -> dict:
        """JSON-ready form: the configs as their ``to_dict()``, the form spec.json records and the run
        id hashes; :meth:`from_dict` inverts it."""
        return {"run_id": self.run_id, "model": self.model.to_dict(), "train": self.train.to_dict(),
                "corpus": self.corpus}

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        """Rebuild from :meth:`to_dict` output (configs are validated again)."""
        return cls(run_id=d["run_id"], model=ModelConfig(**d["model"]), train=TrainConfig(**d["train"]),
                   corpus=d.get("corpus"))


def swiglu_width(d_model: int) -> int:
    """The SwiGLU hidden width of the presets' recipe for a residual width `d_model` (8d/3, rounded up to
    a multiple of 16), for shapes built outside the preset table (`scalefit.analysis.cost.model_shape`)."""
    return _ff(d_model)
