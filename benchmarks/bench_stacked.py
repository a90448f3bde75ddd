"""Same-shape runs trained together under `vmap`, against one run alone, on one core.

For each size: the jitted train step of one run (the reference, same process) and the same step under
`jax.vmap` over k stacked runs (their own parameters, optimizer states, batches and rates), timed as the
median of 40 calls after a warm-up; printed per model and step. Stacking pays only where a step is bound
by per-op overhead; at the quickstart's sizes it is not (docs/training.md). Run it in a process limited
to one core and one XLA thread, as the sweep's workers are:

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        taskset -c 0 python3 benchmarks/bench_stacked.py [--sizes d32-l2,d64-l2] [--stack 2,4]

Ends with one line per size and stack: bench_stacked preset=... k=... ms_per_model_step=... vs_alone=...
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from scalefit.training.config import TrainConfig, get_preset
from scalefit.training.loop import init_state, make_train_step
from scalefit.training.optim import make_optimizer

BATCH, SEQ = 16, 128  # the quickstart's batch


def _median_ms(f, state, x, y, lr, calls: int = 40) -> float:
    state, _ = f(state, x, y, lr)
    jax.block_until_ready(state)
    ts = []
    for _ in range(calls):
        t = time.perf_counter()
        state, _ = f(state, x, y, lr)
        jax.block_until_ready(state)
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="d32-l2,d64-l2", help="model presets, comma-separated")
    ap.add_argument("--stack", default="2,4", help="runs stacked under vmap, comma-separated")
    args = ap.parse_args()
    tx = make_optimizer(TrainConfig(batch_size=BATCH, lr=3e-3, tokens=1e6))
    rng = np.random.default_rng(0)
    lines = []
    for preset in args.sizes.split(","):
        cfg = get_preset(preset).with_overrides(seq_len=SEQ)
        step = make_train_step(cfg, tx)
        stacked = jax.jit(jax.vmap(step))
        ks = [int(k) for k in args.stack.split(",")]
        tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (max(ks), BATCH, SEQ + 1)), jnp.int32)
        x, y = tokens[..., :-1], tokens[..., 1:]  # [k, B, T] each
        alone = _median_ms(step, init_state(cfg, tx, 0), x[0], y[0], jnp.float32(1e-3))
        print(f"{preset}: one run {alone:.2f} ms per step")
        for k in ks:
            states = jax.tree.map(lambda *a: jnp.stack(a), *[init_state(cfg, tx, i) for i in range(k)])
            ms = _median_ms(stacked, states, x[:k], y[:k], jnp.full((k,), 1e-3, jnp.float32)) / k
            print(f"{preset}: {k} stacked {ms:.2f} ms per model and step ({ms / alone:.2f}x alone)")
            lines.append(f"bench_stacked preset={preset} k={k} ms_per_model_step={ms:.2f} vs_alone={ms / alone:.2f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
