"""Run a `SweepPlan` resumably, one run after another or on a Ray cluster, into one run store.

Run store ``<out>/<run_id>/``: the trainer's run folder (spec.json, metrics.jsonl, summary.json,
ckpt/) plus ``plan.json`` (where the run sits in its sweep: name, design, label, group, role, budget,
parent) and, once finished here, ``timing.json`` (wall time split into training and overhead).

Resume: a run with summary.json "completed" is skipped; one with a checkpoint continues from it (the
trainer cuts metrics.jsonl back to the checkpoint); a "diverged" one is skipped unless
``retry_diverged`` (its folder is then moved aside to ``<run_id>.diverged-<n>`` and trained again).
Ladder runs start from their parent's final checkpoint, copied in before their first step.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from scalefit.atomic import read_json, write_json
from scalefit.store.records import CHECKPOINT_FILE
from scalefit.sweep.plan import PlannedRun, SweepPlan, plan_sweep

def _process_start() -> float:
    """Unix time this process started (Linux: /proc/self/stat field 22 + boot time), else now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


# When the interpreter (this process) started, for the process-start share of the overhead.
_PROCESS_T0 = _process_start()


@dataclass(frozen=True)
class Timing:
    """Where one run's wall time went (seconds); overhead = wall - train."""

    wall: float  # the train call, start to return (plus process start when it was the first run)
    train: float  # steps x mean step time of the plain intervals: the part that trains
    startup: float  # process start and imports charged to this run (first run of a process/worker)
    setup_compile: float  # corpus, init and the first step and evaluation (tracing + XLA compile)
    evaluation: float  # validation passes after the first
    checkpoint: float  # checkpoint writes, metrics and summary files
    steps: int  # steps trained in this call

    @property
    def other(self) -> float:
        """Overhead not attributed above: slower steps than the plain intervals' mean, host work."""
        return max(0.0, self.wall - self.train - self.startup - self.setup_compile - self.evaluation
                   - self.checkpoint)

    @property
    def overhead_frac(self) -> float:
        """Share of wall time not spent training."""
        return 1.0 - self.train / self.wall if self.wall > 0 else 0.0

    def line(self) -> str:
        """One printable line: wall, training, overhead share and its parts."""
        return (f"wall {self.wall:6.1f}s  train {self.train:6.1f}s  overhead {100 * self.overhead_frac:4.1f}% "
                f"(start {self.startup:.1f}s, setup+compile {self.setup_compile:.1f}s, eval "
                f"{self.evaluation:.1f}s, ckpt/io {self.checkpoint:.1f}s, other {self.other:.1f}s)")


def _timing(marks: list[tuple[float, dict]], t_call: float, t_end: float, startup: float,
            start_step: int, checkpoint_every: int) -> Timing:
    """Split a run's wall time using the host clock at each metrics record (see `Timing`).

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


def _seed_from_parent(run: PlannedRun, out: Path) -> None:
    """Copy the parent's final checkpoint and metrics into a ladder run that has not started."""
    child, parent = out / run.spec.run_id, out / run.parent
    if (child / CHECKPOINT_FILE).exists() or (child / "summary.json").exists():
        return  # already seeded (and maybe partly trained): resume from the child's own checkpoint
    ps = read_json(parent / "summary.json") if (parent / "summary.json").exists() else {}
    if ps.get("status") != "completed":
        raise RuntimeError(f"{run.label}: parent run {run.parent} is not completed ({ps.get('status')})")
    (child / "ckpt").mkdir(parents=True, exist_ok=True)
    # Metrics first, checkpoint last (atomically): a kill in between leaves no checkpoint, so the
    # next attempt seeds again instead of training the branch from scratch.
    shutil.copyfile(parent / "metrics.jsonl", child / "metrics.jsonl")
    tmp = child / "ckpt" / "state.npz.seed.tmp"
    shutil.copyfile(parent / CHECKPOINT_FILE, tmp)
    os.replace(tmp, child / CHECKPOINT_FILE)


def _plan_record(plan: SweepPlan, run: PlannedRun) -> dict:
    return {"sweep": plan.name, "design": plan.design, "sweep_file": plan.source, "label": run.label,
            "preset": run.preset, "group": run.group, "role": run.role, "budget": run.budget,
            "parent": run.parent, "start_step": run.start_step, "planned_tokens": run.tokens}


def run_status(run_dir: Path) -> str:
    """'completed' | 'diverged' | 'partial' (checkpoint, no summary) | 'pending'."""
    if (run_dir / "summary.json").exists():
        try:
            return read_json(run_dir / "summary.json").get("status", "partial")
        except ValueError:
            return "partial"
    return "partial" if (run_dir / CHECKPOINT_FILE).exists() else "pending"


def execute_run(plan: SweepPlan, run: PlannedRun, out: str | os.PathLike, startup: float = 0.0) -> dict:
    """Train one planned run into ``out/<run_id>`` (resuming it) and return {summary, timing}.

    Safe to call in any process that sees ``out`` (this is what each Ray task runs).
    """
    from scalefit.training.loop import train_run

    _compile_cache()
    out = Path(out)
    run_dir = out / run.spec.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "plan.json", _plan_record(plan, run))
    if run.parent is not None:
        _seed_from_parent(run, out)
    resumed_from = _checkpoint_step(run_dir)
    marks: list[tuple[float, dict]] = []
    t_call = time.perf_counter()
    summary = train_run(run.spec, out, progress=False,
                        on_step=lambda rec: marks.append((time.perf_counter(), rec)))
    t_end = time.perf_counter()
    timing = _timing(marks, t_call, t_end, startup, resumed_from, run.spec.train.checkpoint_every)
    write_json(run_dir / "timing.json", {**timing.__dict__, "overhead_frac": timing.overhead_frac})
    return {"run_id": run.spec.run_id, "summary": summary, "timing": timing.__dict__}


def _compile_cache() -> None:
    """Use JAX's persistent compilation cache (under the scalefit cache) unless one is configured:
    a resumed or repeated run then skips its XLA compile."""
    import jax

    from scalefit.training.corpus import default_cache_dir

    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(default_cache_dir() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _checkpoint_step(run_dir: Path) -> int:
    """Step of the run folder's checkpoint (0 when none): the last leaf of the saved TrainState."""
    import numpy as np

    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        return 0
    with np.load(path) as z:
        return int(z[f"leaf_{int(z['n_leaves']) - 1:05d}"])


def _todo(plan: SweepPlan, out: Path, retry_diverged: bool) -> tuple[list[PlannedRun], dict[str, str]]:
    """Runs still to train, and the state every run was found in."""
    found, todo = {}, []
    for r in plan.runs:
        d = out / r.spec.run_id
        st = run_status(d)
        found[r.spec.run_id] = st
        if st == "diverged" and retry_diverged:
            k = 1
            while (out / f"{r.spec.run_id}.diverged-{k}").exists():
                k += 1
            d.rename(out / f"{r.spec.run_id}.diverged-{k}")
            st = "pending"
        if st in ("pending", "partial"):
            todo.append(r)
    return todo, found


def run_sweep(sweep: str | os.PathLike | SweepPlan, out: str | os.PathLike | None = None, *,
              executor: str = "local", ray_address: str | None = None, retry_diverged: bool = False,
              progress: bool = True, log=print) -> dict:
    """Train every run of a sweep file (or plan) that is not finished; return a report dict.

    out: run store folder (default runs/<sweep name>). executor: "local" (one run after another in
    this process) or "ray" (one task per run on a Ray cluster at ``ray_address``, a local one if
    None; every worker writes to ``out``, which must be a shared filesystem). The report holds
    ``out``, ``found`` (run_id -> state before this call), ``trained`` (run ids), ``timings``
    (run_id -> Timing fields) and ``wall`` (seconds).
    """
    plan = sweep if isinstance(sweep, SweepPlan) else plan_sweep(sweep)
    out = Path(out) if out is not None else Path("runs") / plan.name
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"sweep-{plan.name}.json", {"name": plan.name, "design": plan.design,
                                                 "source": plan.source, "runs": [r.spec.run_id for r in plan.runs]})
    todo, found = _todo(plan, out, retry_diverged)
    for w in plan.warnings:
        log(f"warning: {w}")
    log(f"{plan.name}: {len(plan.runs)} runs, {sum(v == 'completed' for v in found.values())} completed, "
        f"{sum(v == 'partial' for v in found.values())} partial (resumed), "
        f"{sum(v == 'diverged' for v in found.values())} diverged"
        f"{' (retried)' if retry_diverged else ' (kept; --retry-diverged trains them again)'}, "
        f"{len(todo)} to train -> {out}")
    t0 = time.perf_counter()
    if executor == "local":
        results = _run_local(plan, todo, out, progress, log)
    elif executor == "ray":
        from scalefit.sweep.ray_executor import run_ray

        results = run_ray(plan, todo, out, ray_address, log, progress)
    else:
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    return {"out": str(out), "found": found, "trained": list(results), "timings": results,
            "wall": time.perf_counter() - t0}


def _run_local(plan: SweepPlan, todo: list[PlannedRun], out: Path, progress: bool, log) -> dict:
    from tqdm.auto import tqdm

    by_id = plan.by_id()
    total = sum(r.flops_exact * r.own_steps / r.steps for r in todo)
    bar = tqdm(total=total, unit="FLOP", unit_scale=True, disable=not progress, dynamic_ncols=True,
               desc=f"{plan.name} 0/{len(todo)} runs")
    results, startup = {}, max(0.0, time.time() - _PROCESS_T0)
    log_fn = bar.write if progress else log
    for i, r in enumerate(todo):
        if r.parent is not None and run_status(out / r.parent) != "completed":
            log_fn(f"{r.label:24s} skipped: its parent {r.parent} is {run_status(out / r.parent)}")
            continue
        res = execute_run(plan, r, out, startup=startup)
        startup = 0.0  # the process start is paid once, by the first run
        t = Timing(**res["timing"])
        results[r.spec.run_id] = res["timing"]
        bar.update(r.flops_exact * r.own_steps / r.steps)
        bar.set_description(f"{plan.name} {i + 1}/{len(todo)} runs")
        s = res["summary"]
        ev = s.final_eval_loss
        log_fn(f"{by_id[r.spec.run_id].label:24s} {s.status:9s} eval {ev if ev is None else f'{ev:.4f}'}  "
               + t.line())
    bar.close()
    return results


@dataclass(frozen=True)
class Calibration:
    """Measured speed of this machine: step time = a + b * FLOPs per step, plus a compile time."""

    a: float  # fixed seconds per step (dispatch, host work)
    b: float  # seconds per exact training FLOP
    compile: float  # seconds for the first step (trace + XLA compile), mean of the models timed
    models: tuple[str, ...]  # the shapes timed


def calibrate(plan: SweepPlan, steps: int = 4) -> Calibration:
    """Time ``steps`` training steps of the plan's smallest and largest model (by FLOPs per step)."""
    import jax

    from scalefit.training.corpus import get_batch, load_corpus
    from scalefit.training.optim import make_optimizer
    from scalefit.training.loop import init_state, make_train_step

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


def summarize_overhead(timings: dict) -> str:
    """One line: summed wall, training and overhead over the trained runs."""
    if not timings:
        return "no runs trained"
    ts = [Timing(**t) for t in timings.values()]
    wall, train = sum(t.wall for t in ts), sum(t.train for t in ts)
    worst = max(t.overhead_frac for t in ts)
    return (f"{len(ts)} runs: wall {wall:.1f}s, training {train:.1f}s, overhead {100 * (1 - train / wall):.1f}% "
            f"(worst run {100 * worst:.1f}%; start {sum(t.startup for t in ts):.1f}s, setup+compile "
            f"{sum(t.setup_compile for t in ts):.1f}s, eval {sum(t.evaluation for t in ts):.1f}s, ckpt/io "
            f"{sum(t.checkpoint for t in ts):.1f}s, other {sum(t.other for t in ts):.1f}s)")
