"""Where a sweep's runs are trained: the registry of executors.

An executor only trains the runs it is given: `scalefit.sweep.run.run_sweep` (the one driver)
decides what is ready, submits at most ``slots`` runs at a time, waits for each result and logs it.
Each runs `scalefit.sweep.execute.execute_run`, so a run's folder is the same whichever executor
trained it. `EXECUTORS` maps a name (`run_sweep(executor=...)`, `scalefit sweep run --executor`) to
its entry; an executor's module is imported only when one is opened, so listing them (the CLI's
choices) imports neither JAX nor Ray. Adding one is a module with a class of the `Executor` shape,
one entry here, and its line in docs/sweeps.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:  # annotations only: the executor modules (and JAX) load when one is opened
    from scalefit.sweep.execute import RunResult
    from scalefit.sweep.plan import PlannedRun, SweepPlan


class Executor(Protocol):
    """Trains submitted runs of one plan into one store."""

    slots: int  # runs it trains at once; the driver keeps no more than this many submitted

    def submit(self, run: PlannedRun) -> None:
        """Start training ``run`` (its parent, if any, has completed)."""

    def wait(self) -> RunResult:
        """Block until a submitted run has finished; its result."""

    def close(self) -> None:
        """Release what the executor holds (processes, a cluster it started)."""


# (plan, store folder, *, address, log) -> an open Executor.
Opener = Callable[..., Executor]


def _open_local(plan: SweepPlan, out: Path, *, address: str | None, log: Callable[[str], None]) -> Executor:
    from scalefit.sweep.local_executor import LocalExecutor

    return LocalExecutor(plan, out)


def _open_ray(plan: SweepPlan, out: Path, *, address: str | None, log: Callable[[str], None]) -> Executor:
    from scalefit.sweep.ray_executor import RayExecutor

    return RayExecutor(plan, out, address=address, log=log)


@dataclass(frozen=True)
class ExecutorEntry:
    """One executor of the registry."""

    open: Opener  # opens it for a plan and a store; ``address`` is where it runs (Ray: a cluster)
    help: str  # one line for the CLI


EXECUTORS: dict[str, ExecutorEntry] = {
    "local": ExecutorEntry(_open_local, "one run after another in this process"),
    "ray": ExecutorEntry(_open_ray, "one run per worker CPU on a Ray cluster (--ray-address; a local one if "
                                    "omitted; the store must be on a shared filesystem)"),
}
