"""The local executor: one run after another in this process (the default)."""

from __future__ import annotations

from pathlib import Path

from scalefit.sweep.execute import RunResult, execute_run
from scalefit.sweep.plan import PlannedRun, SweepPlan
from scalefit.sweep.timing import StartupClock


class LocalExecutor:
    """Trains each submitted run when the driver waits for it, so runs train in the order submitted."""

    slots = 1  # one run at a time: the driver submits the next when this one is done

    def __init__(self, plan: SweepPlan, out: Path) -> None:
        self._plan, self._out = plan, Path(out)
        self._queued: list[PlannedRun] = []  # submitted, not trained yet
        self._startup = StartupClock()  # this process's start is charged to the sweep's first run

    def submit(self, run: PlannedRun) -> None:
        """Queue ``run``; it trains in `wait`."""
        self._queued.append(run)

    def wait(self) -> RunResult:
        """Train the first queued run and return its result."""
        return execute_run(self._plan, self._queued.pop(0), self._out, startup=self._startup.take())

    def close(self) -> None:
        """Nothing to release."""
