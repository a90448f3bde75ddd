"""Where a sweep's wall time goes: each run's split into training and overhead, and this machine's speed.

`split_wall` divides one train call's wall time, from the host clock at each metrics record, into the
steps that train and the overhead around them (process start, setup and compile, evaluation,
checkpoints); the result is the run folder's timing.json (`Timing`, scalefit.store.records.
TimingRecord). `calibrate` times a few steps of a plan's smallest and largest model, so
`estimate_wall` can price every run before it is trained (`scalefit sweep plan`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import jax

from scalefit.store.records import MetricRecord
from scalefit.store.records import TimingRecord as Timing  # one type: the split and the file it is kept in
from scalefit.sweep.plan import PlannedRun, SweepPlan
from scalefit.training.corpus import get_batch, load_corpus
from scalefit.training.loop import init_state, make_train_step
from scalefit.training.optim import make_optimizer


def _process_start() -> float:
    """Unix time this process started (Linux: /proc/self/stat field 22 + boot time), else now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


# When the interpreter (this process) started, for the process-start share of the overhead. A constant
# of the process: a Ray worker importing this module reads its own.
PROCESS_START: float = _process_start()


class StartupClock:
    """Charges this process's start-up (interpreter start and imports, up to its first run) to one run.

    Each executor keeps one: the local executor for the sweep's process, each Ray worker for its own.
    """

    def __init__(self) -> None:
        self._paid = False  # whether a run has been charged the start-up already

    def take(self) -> float:
        """Seconds since the process started the first time it is called, 0.0 afterwards."""
        if self._paid:
            return 0.0
        self._paid = True
        return max(0.0, time.time() - PROCESS_START)


def split_wall(marks: list[tuple[float, MetricRecord]], t_call: float, t_end: float, startup: float,
               start_step: int, checkpoint_every: int) -> Timing:
    """Split a run's wall time using the host clock at each metrics record (see `Timing`).

    ``marks``: (perf_counter time, record) as each record was written; ``t_call`` / ``t_end``: the train
    call's start and return; ``startup``: process start charged to this run.

    Intervals between consecutive records hold (steps between them) training steps, plus an
    evaluation when the later record has one, plus a checkpoint write when one fell inside; the
    mean per-step time of the plain intervals (no evaluation, no checkpoint) is the training speed.
    """
    per_step, prev_t, prev_s = [], None, start_step
    spans = []
    for t, rec in marks:
        if prev_t is not None:
            n = rec.step - prev_s
            ckpt = any(s % checkpoint_every == 0 for s in range(prev_s, rec.step))
            spans.append((t - prev_t, n, rec.eval_loss is not None, ckpt))
            if rec.eval_loss is None and not ckpt and n > 0:
                per_step.append((t - prev_t, n))
        prev_t, prev_s = t, rec.step
    steps = (marks[-1][1].step - start_step) if marks else 0
    # Time-weighted mean over plain intervals: the per-step time that adds up to the training time.
    step_t = sum(d for d, _ in per_step) / sum(n for _, n in per_step) if per_step else (
        (t_end - t_call) / max(steps, 1) if not spans else min(d / max(n, 1) for d, n, _, _ in spans))
    ev = sum(max(0.0, d - n * step_t) for d, n, e, _ in spans if e)
    ck = sum(max(0.0, d - n * step_t) for d, n, e, c in spans if c and not e)
    first = (marks[0][0] - t_call) if marks else (t_end - t_call)
    n_first = (marks[0][1].step - start_step) if marks else 0
    setup = max(0.0, first - n_first * step_t)
    ck += max(0.0, t_end - marks[-1][0]) if marks else 0.0
    train = steps * step_t
    wall = (t_end - t_call) + startup
    return Timing(wall, train, startup, setup, ev, ck, steps)


@dataclass(frozen=True)
class Calibration:
    """Measured speed of this machine: step time = a + b * FLOPs per step, plus a compile time."""

    a: float  # fixed seconds per step (dispatch, host work)
    b: float  # seconds per exact training FLOP
    compile: float  # seconds for the first step (trace + XLA compile), mean of the models timed
    models: tuple[str, ...]  # the shapes timed


def calibrate(plan: SweepPlan, steps: int = 4) -> Calibration:
    """Time ``steps`` training steps of the plan's smallest and largest model (by FLOPs per step)."""
    runs = sorted(plan.runs, key=lambda r: r.flops_exact / r.steps)
    picks = [runs[0]] if runs[0].spec.model == runs[-1].spec.model else [runs[0], runs[-1]]
    corpus = load_corpus(plan.corpus)
    pts, compiles = [], []
    for r in picks:
        m, t = r.spec.model, r.spec.train
        tx = make_optimizer(t, r.steps)
        state, step = init_state(m, tx, t.seed), make_train_step(m, tx)
        x, y = get_batch(corpus.train, 0, t.batch_size, m.seq_len, t.seed)
        t0 = time.perf_counter()
        state, st = step(state, x, y)
        jax.block_until_ready(st)
        compiles.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(steps):
            state, st = step(state, x, y)
            float(st["ce"])  # the trainer syncs once per step too
        pts.append((r.flops_exact / r.steps, (time.perf_counter() - t0) / steps))
    if len(pts) == 1:
        a, b = 0.0, pts[0][1] / pts[0][0]
    else:
        (f0, t0_), (f1, t1) = pts
        b = max((t1 - t0_) / (f1 - f0), 0.0) if f1 > f0 else t1 / f1
        a = max(t0_ - b * f0, 0.0)
    return Calibration(a, b, sum(compiles) / len(compiles), tuple(r.preset for r in picks))


def estimate_wall(run: PlannedRun, cal: Calibration) -> float:
    """Seconds to train ``run`` here: compile + own steps + evaluations (a forward is ~1/3 of a step)."""
    t = run.spec.train
    step_t = cal.a + cal.b * run.flops_exact / run.steps
    evals = min(t.n_evals + 1, run.steps) * t.eval_batches * step_t / 3.0
    return cal.compile + run.own_steps * step_t + evals


def summarize_overhead(timings: Mapping[str, Timing]) -> str:
    """One line: summed wall, training and overhead over the trained runs (run id -> Timing)."""
    if not timings:
        return "no runs trained"
    ts = list(timings.values())
    wall, train = sum(t.wall for t in ts), sum(t.train for t in ts)
    worst = max(t.overhead_frac for t in ts)
    return (f"{len(ts)} runs: wall {wall:.1f}s, training {train:.1f}s, overhead {100 * (1 - train / wall):.1f}% "
            f"(worst run {100 * worst:.1f}%; start {sum(t.startup for t in ts):.1f}s, setup+compile "
            f"{sum(t.setup_compile for t in ts):.1f}s, eval {sum(t.evaluation for t in ts):.1f}s, ckpt/io "
            f"{sum(t.checkpoint for t in ts):.1f}s, other {sum(t.other for t in ts):.1f}s)")
