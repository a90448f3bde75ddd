"""The vocabulary of scalefit's numbers: which parameters N counts, how compute C was counted, and the
loss unit. Every module, the CLI's choices and the sweep files take their values from here.

N kinds (docs/conventions.md):

- ``total``: every parameter, embeddings included (Hoffmann et al. 2022's N).
- ``non-embedding``: all but the input embedding and an untied output layer (Kaplan et al. 2020's N).
- ``active``: the non-embedding parameters one token uses (MoE: top_k of the E experts, plus attention,
  norms and router); equal to non-embedding for a dense model.

C kinds:

- ``6ND``: C = 6 N D, with N the table's own N kind (Kaplan et al. 2020, Sec. 2.1: 6 FLOPs per parameter
  per token, forward and backward matmuls). A trainer budget "in 6ND" counts 6 N_active per token: the
  FLOPs a dense or MoE step does. Old run files spell it "6N"; it is read as 6ND.
- ``exact``: the matmul FLOPs of forward and backward, attention and the output layer included
  (`scalefit.training.counting`).
- ``reported``: what the source reported, however it counted (e.g. Cerebras-GPT).
- ``unspecified``: unknown.

Loss: cross-entropy in nats per token (natural log) of the runs' own tokenizer.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class _Vocabulary(StrEnum):
    def __repr__(self) -> str:
        # Messages quote a value as the user typed it: 'total', not <NKind.TOTAL: 'total'>.
        return repr(self.value)


class NKind(_Vocabulary):
    """Which parameters N counts."""

    TOTAL = "total"
    NON_EMBEDDING = "non-embedding"
    ACTIVE = "active"

    @classmethod
    def parse(cls, value, where: str = "n_kind") -> NKind:
        """The N kind `value` names (also "non_embedding"); ValueError naming `where` otherwise."""
        if isinstance(value, cls):
            return value
        key = str(value).strip().lower().replace("_", "-") if isinstance(value, str) else value
        if key == "nonembedding":
            key = "non-embedding"
        try:
            return cls(key)
        except ValueError:
            raise ValueError(f"{where} must be one of {', '.join(k.value for k in cls)}, got {value!r}") from None

    @property
    def store_column(self) -> str:
        """The run table's column of this count (`scalefit.store.tables.SCHEMA`)."""
        return {"total": "N_total", "non-embedding": "N_non_embedding", "active": "N_active"}[self.value]

    @property
    def count_field(self) -> str:
        """The field of `scalefit.training.counting.ParamCounts` (and of spec.json's params) holding it."""
        return {"total": "total", "non-embedding": "non_embedding", "active": "active"}[self.value]


class CKind(_Vocabulary):
    """How training compute C was counted."""

    SIX_ND = "6ND"
    EXACT = "exact"
    REPORTED = "reported"
    UNSPECIFIED = "unspecified"

    @classmethod
    def parse(cls, value, where: str = "c_kind") -> CKind:
        """The C kind `value` names (also the trainer's old spelling "6N"); ValueError naming `where`."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip()
            key = {"6n": "6ND", "6nd": "6ND"}.get(key.lower(), key.lower())
            for k in cls:
                if k.value.lower() == key.lower():
                    return k
        raise ValueError(f"{where} must be one of {', '.join(k.value for k in cls)}, got {value!r}")


# What a run folder records for every step and a trainer can spend a FLOP budget in.
COUNTED = (CKind.EXACT, CKind.SIX_ND)

# Relative deviation from 6ND below which a table's C is taken to be exactly 6ND (rounding, float32).
SIXND_EXACT_RTOL = 1e-6
# A column declared 6ND may deviate from 6ND by this much (relative) before it is an error.
SIXND_RTOL = 1e-2

LOSS_UNIT = "nats per token"


def six_nd(N, D):
    """C = 6 N D (Kaplan et al. 2020, Sec. 2.1), arrays broadcast."""
    return 6.0 * np.asarray(N, float) * np.asarray(D, float)


def run_flops(c_kind, N, D, exact):
    """The C of a trained run (or of one step of its curve) in `c_kind`: 6 N D with the chosen N, or the
    exact count the trainer logged. The one rule the final points and the curves both follow, so every
    approach reads the same C."""
    c_kind = CKind.parse(c_kind)
    if c_kind is CKind.SIX_ND:
        return six_nd(N, D)
    if c_kind is CKind.EXACT:
        return np.asarray(exact, float)
    raise ValueError(f"a run store counts C as {' or '.join(COUNTED)}, not {c_kind.value!r}")
