"""The Ray executor of `scalefit.sweep.run.run_sweep`: one task per run, each on one worker CPU.

Every task calls `scalefit.sweep.run.execute_run` on the shared run store, exactly what the local executor
does, so a run's folder is the same whichever executor trained it (batches are a pure function of
seed and step). Ladder runs are submitted only once their parent has completed.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

from scalefit.sweep.plan import PlannedRun, SweepPlan

_WORKER_CHARGED = False  # a worker process pays its start-up once, in its first task


def _task(plan: SweepPlan, run: PlannedRun, out: str) -> dict:
    global _WORKER_CHARGED
    from scalefit.sweep import run as sweep

    startup = 0.0 if _WORKER_CHARGED else max(0.0, time.time() - sweep._PROCESS_T0)
    _WORKER_CHARGED = True
    return sweep.execute_run(plan, run, out, startup=startup)


def _runtime_env() -> dict:
    # Workers must import this copy of scalefit even when it is not installed (a source checkout).
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def run_ray(plan: SweepPlan, todo: list[PlannedRun], out: Path, address: str | None, log,
            progress: bool = True) -> dict:
    """Train ``todo`` on the Ray cluster at ``address`` (a new local instance when None)."""
    try:
        import ray
    except ImportError:
        raise ValueError("the ray executor needs Ray: pip install 'ray>=2.9'") from None
    from tqdm.auto import tqdm

    from scalefit.sweep.run import Timing, run_status

    started_here = not ray.is_initialized()
    if started_here:
        with warnings.catch_warnings():
            # Ray forks and immediately execs its processes, which JAX's at-fork warning cannot tell.
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            ray.init(address=address, runtime_env=_runtime_env(), include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
    log(f"ray: {ray.cluster_resources().get('CPU', 0):g} CPUs at {address or 'a local instance'}")
    remote = ray.remote(num_cpus=1, max_retries=0)(_task)
    out = Path(out).resolve()
    waiting = {r.spec.run_id: r for r in todo}
    by_id = plan.by_id()
    running, results = {}, {}
    total = sum(r.flops_exact * r.own_steps / r.steps for r in todo)
    bar = tqdm(total=total, unit="FLOP", unit_scale=True, dynamic_ncols=True, desc=f"{plan.name} (ray)",
               disable=not progress)
    try:
        while waiting or running:
            for rid in [rid for rid, r in waiting.items()
                        if r.parent is None or (r.parent not in waiting and r.parent not in running
                                                and run_status(out / r.parent) == "completed")]:
                running[remote.remote(plan, waiting.pop(rid), str(out))] = rid
            if not running:
                stuck = ", ".join(by_id[r].label for r in waiting)
                raise RuntimeError(f"runs {stuck} wait for parents that did not complete")
            done, _ = ray.wait(list(running), num_returns=1)
            rid = running.pop(done[0])
            res = ray.get(done[0])
            results[rid] = res["timing"]
            r = by_id[rid]
            bar.update(r.flops_exact * r.own_steps / r.steps)
            s = res["summary"]
            ev = s.final_eval_loss
            (bar.write if progress else log)(f"{r.label:24s} {s.status:9s} eval {ev if ev is None else f'{ev:.4f}'}  "
                      + Timing(**res["timing"]).line())
    finally:
        bar.close()
        if started_here:
            ray.shutdown()
    return results
