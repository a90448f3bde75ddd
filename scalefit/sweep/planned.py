"""A sweep's plan as data: `PlannedRun` (one run and where it sits in its design) and `SweepPlan`
(every run of one sweep file). The designs build them, the checks read them, the driver executes them."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalefit.store.records import Role
from scalefit.training.config import RunSpec


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its RunSpec plus where it sits in the design."""

    spec: RunSpec  # model, train config, corpus; spec.run_id = label + hash of everything below
    label: str  # human-readable name, e.g. "C3e+11/d64-l2" or "d64-l2/D2.1e+06"
    preset: str  # ladder shape the model came from
    group: str  # the design's group: budget for isoflop, size for grid/ladder, base size for moe
    role: Role  # run (independent), trunk (ladder stable phase) or branch (ladder cooldown)
    budget: float | None  # requested FLOPs for isoflop runs (in flops_convention), else None
    parent: str | None  # run_id whose final checkpoint this run starts from (ladder), else None
    start_step: int  # steps inherited from the parent (0 when trained from scratch)
    steps: int  # optimizer steps at the end of the run (inherited steps included)
    tokens: int  # D: training tokens at the end = steps * batch_size * seq_len
    n_total: int  # N with embeddings (Chinchilla's N)
    n_non_embedding: int  # Kaplan's N
    n_active: int  # non-embedding parameters used per token (MoE); == n_non_embedding when dense
    flops_6n: float  # 6 * n_active * tokens
    flops_exact: float  # exact matmul FLOPs per token * tokens (scalefit.training.counting)

    @property
    def own_steps(self) -> int:
        """Steps this run computes itself (a branch reuses its trunk's first start_step steps)."""
        return self.steps - self.start_step


@dataclass(frozen=True)
class SweepPlan:
    """Every run of one sweep file, in an order where each parent precedes its children."""

    name: str  # sweep name (default: the file's stem); also the default output folder runs/<name>
    design: str  # a name in scalefit.sweep.designs.DESIGNS
    source: str  # the sweep file
    corpus: str | None  # corpus path (None = standard library)
    runs: tuple[PlannedRun, ...]  # in execution order
    notes: tuple[str, ...]  # conventions used (which N centres the prior, which C sets D)
    warnings: tuple[str, ...] = field(default=())  # why the design may fail to identify the law

    def by_id(self) -> dict[str, PlannedRun]:
        """Runs keyed by run id."""
        return {r.spec.run_id: r for r in self.runs}

    def total_flops(self, own: bool = True) -> float:
        """Exact training FLOPs of the whole sweep; own=True counts inherited trunk steps once."""
        return sum(r.flops_exact * (r.own_steps / r.steps if own else 1.0) for r in self.runs)
