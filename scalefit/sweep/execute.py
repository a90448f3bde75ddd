"""Train one planned run into the store: what every executor runs, in whichever process it runs.

`execute_run` records where the run sits in its sweep (plan.json), seeds a ladder branch from its
parent's final state, trains (resuming any checkpoint), and writes where the wall time went
(timing.json). A run's folder is the same whichever executor trained it: batches are a pure function
of seed and step, and the folder holds everything the run needs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import jax

from scalefit.store import folder
from scalefit.store.records import (CHECKPOINT_FILE, SUMMARY_FILE, MetricRecord, PlanRecord, RunStatus,
                                    RunSummary)
from scalefit.sweep.plan import PlannedRun, SweepPlan
from scalefit.sweep.timing import Timing, split_wall
from scalefit.training.checkpoint import checkpoint_step
from scalefit.training.corpus import default_cache_dir
from scalefit.training.loop import train_run


@dataclass(frozen=True)
class RunResult:
    """What training one planned run gave: an executor's answer to the sweep driver."""

    run_id: str  # the run's folder name
    summary: RunSummary  # summary.json: status, final losses, steps
    timing: Timing  # timing.json: where this call's wall time went


def plan_record(plan: SweepPlan, run: PlannedRun) -> PlanRecord:
    """The plan.json of ``run``: its sweep, place in the design and parent."""
    return PlanRecord(sweep=plan.name, design=plan.design, sweep_file=plan.source, label=run.label,
                      preset=run.preset, group=run.group, role=run.role, budget=run.budget, parent=run.parent,
                      start_step=run.start_step, planned_tokens=run.tokens)


def seed_from_parent(run: PlannedRun, out: Path) -> None:
    """Start a ladder run that has not started yet from its parent's final checkpoint and metrics.

    RuntimeError when the parent has not completed (its final state is not the branch point).
    """
    child, parent = out / run.spec.run_id, out / run.parent
    if (child / CHECKPOINT_FILE).exists() or (child / SUMMARY_FILE).exists():
        return  # already seeded (and maybe partly trained): resume from the child's own checkpoint
    status = folder.read_summary(parent).status if (parent / SUMMARY_FILE).exists() else None
    if status is not RunStatus.COMPLETED:
        raise RuntimeError(f"{run.label}: parent run {run.parent} is not completed ({status})")
    folder.copy_final_state(parent, child)


def compile_cache() -> None:
    """Use JAX's persistent compilation cache (under the scalefit cache) unless one is configured:
    a resumed or repeated run then skips its XLA compile."""
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(default_cache_dir() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def execute_run(plan: SweepPlan, run: PlannedRun, out: str | os.PathLike, *,
                startup: float = 0.0) -> RunResult:
    """Train one planned run into ``out/<run_id>`` (resuming it) and return its summary and timing.

    ``startup``: seconds of process start to charge to this run (its process's first). Safe to call in
    any process that sees ``out``.
    """
    compile_cache()
    out = Path(out)
    run_dir = out / run.spec.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    folder.write_plan(run_dir, plan_record(plan, run))
    if run.parent is not None:
        seed_from_parent(run, out)
    resumed_from = checkpoint_step(run_dir)
    marks: list[tuple[float, MetricRecord]] = []
    t_call = time.perf_counter()
    summary = train_run(run.spec, out, progress=False,
                        on_step=lambda rec: marks.append((time.perf_counter(), rec)))
    t_end = time.perf_counter()
    timing = split_wall(marks, t_call, t_end, startup, resumed_from, run.spec.train.checkpoint_every)
    folder.write_timing(run_dir, timing)
    return RunResult(run.spec.run_id, summary, timing)
