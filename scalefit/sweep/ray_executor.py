"""The Ray executor: one worker process per cluster CPU, each training the runs it is given.

Every worker calls `scalefit.sweep.execute.execute_run` on the shared run store, exactly what the local
executor does, so a run's folder is the same whichever executor trained it (batches are a pure
function of seed and step). Workers are Ray actors, so each keeps its own `StartupClock`: a worker's
start-up is charged to the first run it trains. Ray is imported when the executor is opened, not
before: it is an optional dependency (``pip install 'ray>=2.9'``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable

from scalefit.sweep.execute import RunResult, execute_run
from scalefit.sweep.plan import PlannedRun, SweepPlan
from scalefit.sweep.timing import StartupClock


class _Worker:
    """A Ray actor (one process, one CPU) training one run at a time."""

    def __init__(self) -> None:
        self._startup = StartupClock()  # this worker's start-up goes to its first run

    def run(self, plan: SweepPlan, run: PlannedRun, out: str) -> RunResult:
        return execute_run(plan, run, out, startup=self._startup.take())


def _runtime_env() -> dict:
    # Workers must import this copy of scalefit even when it is not installed (a source checkout).
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


class RayExecutor:
    """Trains submitted runs on the Ray cluster at ``address`` (a new local instance when None)."""

    def __init__(self, plan: SweepPlan, out: Path, *, address: str | None,
                 log: Callable[[str], None]) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError("the ray executor needs Ray: pip install 'ray>=2.9'") from None
        self._ray = ray
        self._started_here = not ray.is_initialized()  # a cluster this executor started, and shuts down
        if self._started_here:
            with warnings.catch_warnings():
                # Ray forks and immediately execs its processes, which JAX's at-fork warning cannot tell.
                warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                ray.init(address=address, runtime_env=_runtime_env(), include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
        cpus = ray.cluster_resources().get("CPU", 0)
        log(f"ray: {cpus:g} CPUs at {address or 'a local instance'}")
        self.slots = max(1, int(cpus))  # one worker per CPU, started as runs are submitted
        self._worker = ray.remote(num_cpus=1, max_restarts=0)(_Worker)
        self._plan, self._out = plan, str(Path(out).resolve())
        self._idle: list = []  # workers with no run
        self._workers: list = []  # every worker started, to release on close
        self._running: dict = {}  # Ray object ref of a run's result -> the worker training it

    def submit(self, run: PlannedRun) -> None:
        """Give ``run`` to an idle worker, starting one when none is idle."""
        if self._idle:
            worker = self._idle.pop()
        else:
            worker = self._worker.remote()
            self._workers.append(worker)
        self._running[worker.run.remote(self._plan, run, self._out)] = worker

    def wait(self) -> RunResult:
        """The result of the next run to finish (its worker becomes idle)."""
        done, _ = self._ray.wait(list(self._running), num_returns=1)
        self._idle.append(self._running.pop(done[0]))
        return self._ray.get(done[0])

    def close(self) -> None:
        """Stop the workers, and the cluster when this executor started it."""
        for worker in self._workers:
            self._ray.kill(worker)
        if self._started_here:
            self._ray.shutdown()
