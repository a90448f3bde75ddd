"""Run a `SweepPlan` resumably into one run store: the one driver, over any executor.

Run store ``<out>/<run_id>/``: the trainer's run folder (spec.json, metrics.jsonl, summary.json,
ckpt/) plus ``plan.json`` (where the run sits in its sweep: name, design, label, group, role, budget,
parent) and, once finished here, ``timing.json`` (wall time split into training and overhead); the
format is scalefit.store.records'.

Resume: a run whose status (scalefit.store.folder.run_status) is completed is skipped; one with a
checkpoint continues from it (the trainer cuts metrics.jsonl back to the checkpoint); a diverged one
is skipped unless ``retry_diverged`` (its folder is then moved aside to ``<run_id>.diverged-<n>`` and
trained again). Ladder runs start from their parent's final checkpoint, copied in before their first
step, so a run is submitted only once its parent has completed; one whose parent ended otherwise is
skipped, with a line saying so.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from tqdm.auto import tqdm

from scalefit.store import folder
from scalefit.store.records import RunStatus, SweepIndex, TimingRecord
from scalefit.sweep.executors import EXECUTORS, Executor
from scalefit.sweep.plan import PlannedRun, SweepPlan, plan_sweep


@dataclass(frozen=True)
class SweepReport:
    """What one `run_sweep` call found and did."""

    out: Path  # the run store
    found: Mapping[str, RunStatus]  # run id -> its state before this call
    trained: tuple[str, ...]  # run ids trained by this call, in the order they finished
    timings: Mapping[str, TimingRecord]  # run id -> where its wall time went (scalefit.sweep.timing.Timing)
    wall: float  # seconds this call spent training (the executor's life)


def _todo(plan: SweepPlan, out: Path, retry_diverged: bool) -> tuple[list[PlannedRun], dict[str, RunStatus]]:
    """Runs still to train, in plan order, and the state every run was found in."""
    found, todo = {}, []
    for r in plan.runs:
        d = out / r.spec.run_id
        st = folder.run_status(d)
        found[r.spec.run_id] = st
        if st is RunStatus.DIVERGED and retry_diverged:
            folder.move_aside(d)
            st = RunStatus.PENDING
        if st in (RunStatus.PENDING, RunStatus.PARTIAL):
            todo.append(r)
    return todo, found


def run_sweep(sweep: str | os.PathLike | SweepPlan, out: str | os.PathLike | None = None, *,
              executor: str = "local", ray_address: str | None = None, retry_diverged: bool = False,
              progress: bool = True, log: Callable[[str], None] = print) -> SweepReport:
    """Train every run of a sweep file (or plan) that is not finished; return what was found and done.

    out: run store folder (default runs/<sweep name>). executor: a name in
    scalefit.sweep.executors.EXECUTORS: "local" (one run after another in this process) or "ray" (one
    worker per CPU of the Ray cluster at ``ray_address``, a local one if None; every worker writes to
    ``out``, which must be a shared filesystem).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(map(repr, EXECUTORS))}, got {executor!r}")
    plan = sweep if isinstance(sweep, SweepPlan) else plan_sweep(sweep)
    out = Path(out) if out is not None else Path("runs") / plan.name
    out.mkdir(parents=True, exist_ok=True)
    folder.write_sweep_index(out, SweepIndex(plan.name, plan.design, plan.source,
                                             tuple(r.spec.run_id for r in plan.runs)))
    todo, found = _todo(plan, out, retry_diverged)
    for w in plan.warnings:
        log(f"warning: {w}")
    counts = {st: sum(v is st for v in found.values()) for st in RunStatus}
    log(f"{plan.name}: {len(plan.runs)} runs, {counts[RunStatus.COMPLETED]} completed, "
        f"{counts[RunStatus.PARTIAL]} partial (resumed), {counts[RunStatus.DIVERGED]} diverged"
        f"{' (retried)' if retry_diverged else ' (kept; --retry-diverged trains them again)'}, "
        f"{len(todo)} to train -> {out}")
    t0 = time.perf_counter()
    pool = EXECUTORS[executor].open(plan, out, address=ray_address, log=log)
    try:
        timings = _drive(plan, todo, out, pool, progress, log)
    finally:
        pool.close()
    return SweepReport(out, found, tuple(timings), timings, time.perf_counter() - t0)


def _drive(plan: SweepPlan, todo: list[PlannedRun], out: Path, pool: Executor, progress: bool,
           log: Callable[[str], None]) -> dict[str, TimingRecord]:
    """Submit each run of ``todo`` once its parent has completed, in plan order and at most
    ``pool.slots`` at a time; log each result. Returns run id -> timing, in the order they finished."""
    own = {r.spec.run_id: r.flops_exact * r.own_steps / r.steps for r in todo}  # FLOPs each run computes
    bar = tqdm(total=sum(own.values()), unit="FLOP", unit_scale=True, disable=not progress, dynamic_ncols=True,
               desc=f"{plan.name} 0/{len(todo)} runs")
    say = bar.write if progress else log
    waiting = list(todo)  # plan order: a parent comes before its children
    running: dict[str, PlannedRun] = {}
    timings: dict[str, TimingRecord] = {}
    try:
        while waiting or running:
            for r in list(waiting):
                if len(running) >= pool.slots:
                    break
                if r.parent in running or any(w.spec.run_id == r.parent for w in waiting):
                    continue  # its parent trains first
                waiting.remove(r)
                st = folder.run_status(out / r.parent) if r.parent is not None else RunStatus.COMPLETED
                if st is not RunStatus.COMPLETED:
                    say(f"{r.label:24s} skipped: its parent {r.parent} is {st}")
                    continue
                pool.submit(r)
                running[r.spec.run_id] = r
            if not running:
                continue  # every run left was skipped
            res = pool.wait()
            r = running.pop(res.run_id)
            timings[res.run_id] = res.timing
            bar.update(own[res.run_id])
            bar.set_description(f"{plan.name} {len(timings)}/{len(todo)} runs")
            ev = res.summary.final_eval_loss
            say(f"{r.label:24s} {res.summary.status:9s} eval {ev if ev is None else f'{ev:.4f}'}  "
                + res.timing.line())
    finally:
        bar.close()
    return timings
