"""The parallel executor: independent runs at once on this machine, one worker process per core.

Each worker (`scalefit.sweep.worker`) is pinned to its own cores before JAX starts, and a worker that
has one core runs XLA single-threaded, so the workers do not contend for cores: the quickstart's tiny
models use a core far better as one single-threaded run each than as one run over two threads. Every
worker calls `scalefit.sweep.execute.execute_run` on the store, as the local executor does, so a run's
folder is the same whichever executor trained it (batches are a pure function of seed and step), and
each keeps its own `StartupClock`: a worker's start-up is charged to the first run it trains. JAX's
persistent compilation cache is shared, so a shape one worker compiled loads in the others.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Callable

from scalefit.sweep.execute import RunResult
from scalefit.sweep.plan import PlannedRun, SweepPlan
from scalefit.sweep.worker import read_frame, write_frame

# One core per worker: XLA's matmuls and fusions on the calling thread, no thread pool to contend.
_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def available_cpus() -> list[int]:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cpu_groups(jobs: int, cpus: list[int]) -> list[list[int]]:
    """Cores for each of ``jobs`` workers: equal contiguous groups, or one core each round-robin when
    there are more workers than cores."""
    if jobs >= len(cpus):
        return [[cpus[i % len(cpus)]] for i in range(jobs)]
    size = len(cpus) // jobs
    return [cpus[i * size:(i + 1) * size] for i in range(jobs)]


class _Worker:
    """One worker process and the run it is training."""

    def __init__(self, cpus: list[int]) -> None:
        root = str(Path(__file__).resolve().parents[2])  # this copy of scalefit, installed or not
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        if len(cpus) == 1:
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {_ONE_THREAD}".strip()
        cmd = [sys.executable, "-m", "scalefit.sweep.worker", "--cpus", ",".join(map(str, cpus)),
               "--parent", str(os.getpid())]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        self.cpus = cpus
        self.run: PlannedRun | None = None  # the run it trains now

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # the worker ends at the end of its input
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class ParallelExecutor:
    """Trains up to ``jobs`` submitted runs at once, each in its own pinned worker process."""

    def __init__(self, plan: SweepPlan, out: Path, *, jobs: int | None, log: Callable[[str], None]) -> None:
        cpus = available_cpus()
        jobs = len(cpus) if jobs is None else jobs
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}")
        self.slots = jobs  # one run per worker
        self._groups = cpu_groups(jobs, cpus)
        self._plan, self._out = plan, str(Path(out).resolve())
        self._workers: list[_Worker] = []  # started as runs are submitted
        log(f"parallel: {jobs} worker(s) on cores {self._groups}"
            + (", one XLA thread each" if all(len(g) == 1 for g in self._groups) else ""))

    def submit(self, run: PlannedRun) -> None:
        """Send ``run`` to an idle worker, starting one when none is idle."""
        idle = [w for w in self._workers if w.run is None]
        worker = idle[0] if idle else _Worker(self._groups[len(self._workers) % len(self._groups)])
        if not idle:
            self._workers.append(worker)
        try:
            write_frame(worker.proc.stdin, (self._plan, run, self._out))
        except BrokenPipeError:
            self._workers.remove(worker)
            code = worker.proc.wait()
            worker.close()
            raise RuntimeError(f"{run.label}: the worker process (cores {worker.cpus}) had exited with code {code} "
                               "before it was sent the run; its error is above") from None
        worker.run = run

    def wait(self) -> RunResult:
        """The result of the next run to finish (its worker becomes idle); a run's exception is raised here."""
        busy = {w.proc.stdout.fileno(): w for w in self._workers if w.run is not None}
        ready, _, _ = select.select(list(busy), [], [])
        worker = busy[ready[0]]
        run, worker.run = worker.run, None
        answer = read_frame(worker.proc.stdout)
        if answer is None:
            self._workers.remove(worker)
            code = worker.proc.wait()
            worker.close()
            raise RuntimeError(f"{run.label}: its worker process (cores {worker.cpus}) died with exit code {code}")
        kind, value = answer
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        """Stop the workers (a run still training is killed; it resumes from its checkpoint)."""
        for worker in self._workers:
            if worker.run is not None:
                worker.proc.kill()
            worker.close()
        self._workers.clear()
