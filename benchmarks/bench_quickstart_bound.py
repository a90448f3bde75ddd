"""A floor under the quickstart's wall time: the matmuls of its train steps alone, each at its best, on one core.

For every model shape of experiments/quickstart.toml the real train step is lowered, every
``dot_general`` in it (forward and backward: projections, attention scores and outputs, the output
layer, their gradients) is read off with its shapes, and each is timed alone as a contiguous
``[b, m, k] x [b, k, n]`` matmul, the best of several repeats. A step cannot take less than the sum
of its matmuls, so the sum times each run's steps is a floor on the sweep's training time on one
core, and that over the worker count is a floor on its wall time, before compilation, evaluation,
the optimizer's elementwise passes, softmax, norms and the fits. Beside it, in the same run: the
whole step timed the same way, and the core's matmul peak (2048^3). A matmul's time alone moves with
the machine and with what the process ran before it (docs/training.md has two runs' figures): run it
on a quiet machine and read the floor as good to that.

Run it as the sweep's workers run, one core and one XLA thread:

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        taskset -c 0 python3 benchmarks/bench_quickstart_bound.py [--workers N]

Ends with one line per shape (bench_quickstart_shape ...) and one for the sweep
(bench_quickstart_bound ...).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np

from scalefit.cli.decide import quickstart_file
from scalefit.sweep.plan import plan_sweep
from scalefit.training.loop import init_state, make_train_step
from scalefit.training.optim import make_optimizer

_DOT = re.compile(r"stablehlo\.dot_general .*?(?:batching_dims = \[([\d, ]*)\] x \[[\d, ]*\], )?"
                  r"contracting_dims = \[([\d, ]*)\] x \[([\d, ]*)\].*: \(tensor<([\dx]+)x\w+>, "
                  r"tensor<([\dx]+)x\w+>\)")


def _dims(s: str) -> list[int]:
    return [int(v) for v in s.replace(" ", "").split(",") if v]


def matmuls(lowered_text: str) -> Counter:
    """Every dot_general of a lowered program as (b, m, k, n): batch, lhs-free, contracted and rhs-free
    sizes, with how often each occurs."""
    out: Counter = Counter()
    for m in _DOT.finditer(lowered_text):
        batch, lc, rc = _dims(m.group(1) or ""), _dims(m.group(2)), _dims(m.group(3))
        lhs, rhs = [int(v) for v in m.group(4).split("x")], [int(v) for v in m.group(5).split("x")]
        b = math.prod(lhs[i] for i in batch)
        k = math.prod(lhs[i] for i in lc)
        assert k == math.prod(rhs[i] for i in rc)
        mm = math.prod(lhs) // (b * k)
        n = math.prod(rhs) // (b * k)
        out[(b, mm, k, n)] += 1
    return out


def best_s(f, *args, calls: int = 50, repeats: int = 5) -> float:
    """Seconds per call: the best, over ``repeats``, of the mean of ``calls`` back-to-back calls."""
    jax.block_until_ready(f(*args))
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            r = f(*args)
        jax.block_until_ready(r)
        best = min(best, (time.perf_counter() - t) / calls)
    return best


def matmul_s(b: int, m: int, k: int, n: int) -> float:
    """The best time of one contiguous [b, m, k] x [b, k, n] matmul, f32."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((b, m, k)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((b, k, n)), jnp.float32)
    f = jax.jit(lambda x, y: jnp.einsum("bmk,bkn->bmn", x, y))
    return best_s(f, x, y, calls=max(5, min(200, int(2e7 / (b * m * k * n + 1)))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="parallel workers the sweep runs (default: the machine's cores, the sweep's one per core; "
                         "this process itself is pinned to one)")
    ap.add_argument("--target-s", type=float, default=240.0, help="the wall time to compare the floor with")
    args = ap.parse_args()
    plan = plan_sweep(quickstart_file())
    peak = 2 * 2048 ** 3 / matmul_s(1, 2048, 2048, 2048) / 1e9
    print(f"f32 matmul peak (2048^3, this process): {peak:.1f} GFLOP/s")
    steps_of: Counter = Counter()
    for r in plan.runs:
        steps_of[r.preset] += r.own_steps
    cache: dict[tuple, float] = {}
    lines, mm_total, step_total = [], 0.0, 0.0
    for r in {r.preset: r for r in plan.runs}.values():
        cfg, tcfg = r.spec.model, r.spec.train
        tx = make_optimizer(tcfg)
        step = make_train_step(cfg, tx)
        state = init_state(cfg, tx, 0)
        x = jnp.zeros((tcfg.batch_size, cfg.seq_len), jnp.int32)
        lr = jnp.float32(tcfg.lr)
        whole_s = best_s(lambda s: step(s, x, x, lr)[0], state, calls=20, repeats=3)
        dots = matmuls(step.lower(state, x, x, lr).as_text())
        for shape in dots:
            if shape not in cache:
                cache[shape] = matmul_s(*shape)
        mm_s = sum(c * cache[s] for s, c in dots.items())
        flops = sum(c * 2 * math.prod(s) for s, c in dots.items())
        mm_total += mm_s * steps_of[r.preset]
        step_total += whole_s * steps_of[r.preset]
        exact = r.flops_exact / r.steps  # counting.flops_per_token's exact count: full causal score matrices
        print(f"{r.preset}: {sum(dots.values())} matmuls, {flops / 1e6:.0f} MFLOP per step "
              f"({flops / exact:.2f} of the exact count: the chunked kernel skips masked key blocks); alone "
              f"{1e3 * mm_s:.2f} ms ({flops / mm_s / 1e9:.1f} GFLOP/s), whole step {1e3 * whole_s:.2f} ms "
              f"({flops / whole_s / 1e9:.1f}); {steps_of[r.preset]} steps in the sweep")
        lines.append(f"bench_quickstart_shape preset={r.preset} steps={steps_of[r.preset]} "
                     f"matmul_ms={1e3 * mm_s:.2f} step_ms={1e3 * whole_s:.2f} "
                     f"matmul_gflops={flops / mm_s / 1e9:.1f}")
    floor, steps_wall = mm_total / args.workers, step_total / args.workers
    print(f"\n{len(plan.runs)} runs, {sum(steps_of.values())} steps: their matmuls alone take {mm_total:.0f} core-s, "
          f"their whole steps {step_total:.0f} core-s; over {args.workers} workers that is a floor of {floor:.0f} s of "
          f"wall time for the matmuls and {steps_wall:.0f} s for the steps as they are (target {args.target_s:.0f} s "
          "for the whole quickstart)")
    lines.append(f"bench_quickstart_bound runs={len(plan.runs)} matmul_core_s={mm_total:.0f} "
                 f"step_core_s={step_total:.0f} workers={args.workers} floor_wall_s={floor:.0f} "
                 f"steps_wall_s={steps_wall:.0f} target_wall_s={args.target_s:.0f} peak_gflops={peak:.1f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
