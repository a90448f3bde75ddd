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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from tqdm.auto import tqdm

from scalefit.store import folder
from scalefit.store.records import SPEC_FILE, RunStatus, SweepIndex, TimingRecord, check_sweep_name
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
    workers: int = 1  # runs the executor trained at once (its slots)


def _todo(plan: SweepPlan, out: Path, retry_diverged: bool,
          log: Callable[[str], None]) -> tuple[list[PlannedRun], dict[str, RunStatus]]:
    """Runs still to train, in plan order, and the state every run was found in.

    A finished run that lost its spec.json is handed to the trainer too, which writes the file again
    (the run table cannot read a run without it), and a line says so."""
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
            continue
        # A kill can cut a write made after the summary (timing.json). Its writer may still be dying (a
        # worker killed with its parent finishes the fsync it is in first) and holds the lock until it is
        # gone; a finished run's lock is only held for such short writes, so wait for it, then clean.
        if folder.temp_files(d):
            with folder.locked(d, wait=True):
                folder.remove_temp_files(d)
        if not (d / SPEC_FILE).exists():
            log(f"{r.label}: {st} but {d / SPEC_FILE} is missing (the run table leaves it out): writing it again")
            todo.append(r)
    return todo, found


def _check_writable(out: Path, n: int) -> None:
    """OSError naming the store when no file can be created in it (read-only, no permission, no space)."""
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise OSError(e.errno, f"run store {out} is not writable ({e.strerror}): {n} runs left to train; the "
                               f"finished ones read as they are (scalefit runs ls {out})") from None


def run_sweep(sweep: str | os.PathLike | SweepPlan, out: str | os.PathLike | None = None, *,
              executor: str = "local", ray_address: str | None = None, jobs: int | None = None,
              retry_diverged: bool = False, corpus: str | os.PathLike | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> SweepReport:
    """Train every run of a sweep file (or plan) that is not finished; return what was found and done.

    out: run store folder (default runs/<sweep name>). executor: a name in
    scalefit.sweep.executors.EXECUTORS: "local" (one run after another in this process), "parallel"
    (``jobs`` pinned worker processes, one per core when None) or "ray" (one worker per CPU of the Ray
    cluster at ``ray_address``, a local one if None; every worker writes to ``out``, which must be a
    shared filesystem). With more than one slot the longest runs go first (by FLOPs), which ends the
    sweep sooner than plan order; parents still come before their children. corpus: train on this
    corpus instead of the sweep file's own (scalefit.sweep.plan.resolve_corpus).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(map(repr, EXECUTORS))}, got {executor!r}")
    plan = sweep if isinstance(sweep, SweepPlan) else plan_sweep(sweep, corpus=corpus)
    check_sweep_name(plan.name)  # a plan built in code is held to the sweep file's rule
    out = Path(out) if out is not None else Path("runs") / plan.name
    out.mkdir(parents=True, exist_ok=True)
    folder.write_sweep_index(out, SweepIndex(plan.name, plan.design, plan.source,
                                             tuple(r.spec.run_id for r in plan.runs)))
    todo, found = _todo(plan, out, retry_diverged, log)
    for w in plan.warnings:
        log(f"warning: {w}")
    counts = {st: sum(v is st for v in found.values()) for st in RunStatus}
    log(f"{plan.name}: {len(plan.runs)} runs, {counts[RunStatus.COMPLETED]} completed, "
        f"{counts[RunStatus.PARTIAL]} partial (resumed), {counts[RunStatus.DIVERGED]} diverged"
        f"{' (retried)' if retry_diverged else ' (kept; --retry-diverged trains them again)'}, "
        f"{len(todo)} to train -> {out}")
    if todo:
        _check_writable(out, len(todo))
    t0 = time.perf_counter()
    pool = EXECUTORS[executor].open(plan, out, address=ray_address, jobs=jobs, log=log)
    try:
        timings = _drive(plan, todo, out, pool, progress, log)
    finally:
        pool.close()
    return SweepReport(out, found, tuple(timings), timings, time.perf_counter() - t0, pool.slots)


def _drive(plan: SweepPlan, todo: list[PlannedRun], out: Path, pool: Executor, progress: bool,
           log: Callable[[str], None]) -> dict[str, TimingRecord]:
    """Submit each run of ``todo`` once its parent has completed, in plan order and at most
    ``pool.slots`` at a time (longest first when several); log each result. Returns run id -> timing, in
    the order they finished."""
    own = {r.spec.run_id: r.flops_exact * r.own_steps / r.steps for r in todo}  # FLOPs each run computes
    bar = tqdm(total=sum(own.values()), unit="FLOP", unit_scale=True, disable=not progress, dynamic_ncols=True,
               desc=_progress(plan, {}, todo, {}))
    say = bar.write if progress else log
    # One slot: plan order. Several: longest first, so no long run starts last and idles the other slots
    # (a child still waits for its parent, below).
    waiting = list(todo) if pool.slots == 1 else sorted(todo, key=lambda r: -own[r.spec.run_id])
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
                bar.set_description(_progress(plan, timings, todo, running))
            if not running:
                continue  # every run left was skipped
            res = pool.wait()
            r = running.pop(res.run_id)
            timings[res.run_id] = res.timing
            bar.update(own[res.run_id])
            bar.set_description(_progress(plan, timings, todo, running))
            ev = res.summary.final_eval_loss
            say(f"{r.label:24s} {res.summary.status:9s} eval {ev if ev is None else f'{ev:.4f}'}  "
                + res.timing.line())
    finally:
        bar.close()
    return timings


def _progress(plan: SweepPlan, done: Mapping, todo: list, running: Mapping) -> str:
    """The bar's label: runs finished of those to train, and how many are training now."""
    return f"{plan.name} {len(done)}/{len(todo)} runs" + (f", {len(running)} training" if running else "")
