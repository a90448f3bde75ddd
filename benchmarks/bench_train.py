"""Training-step throughput of scalefit's JAX trainer beside two references measured in the same run.

For each size (batch 16 x 256 tokens, AdamW, f32): tokens/s and model GFLOP/s (exact count:
forward+backward matmuls incl. attention and the output layer, scalefit.training.counting) of one jitted
training step, timed in a child process at each thread count the reference gets (1 and 2 cores: a
child limited to fewer cores than the machine's is pinned to them before XLA sizes its thread pool),
the faster being the figure, beside

  (a) this machine's f32 matmul peak (a 2048^3 jnp.dot; the best of several measurements spread
      through the run, since load from other processes only ever lowers it), and
  (b) a plain PyTorch eager loop of the same model (RMSNorm, RoPE, causal attention, SwiGLU, AdamW,
      f32) when torch is importable. It runs in a child process (in one process the two frameworks'
      thread pools starve each other) with passive OpenMP waits, at 1 and 2 threads; the faster is
      the reference. JAX and torch rounds alternate so a change in load hits both, and each
      framework is given the same thread counts to choose from; the ratio at each thread count
      is printed too.

Then an MoE line: E experts with top-1 routing against the dense model with the same active
parameters, steps alternated (time per token ratio; target <= 1.5x).

Figures are medians over timed steps; on a shared machine expect +-15% or worse (the load average is
printed).

    python3 benchmarks/bench_train.py [--steps 3] [--rounds 2] [--sizes 128:4,256:4,384:6]
                                      [--threads N] [--moe-experts 8] [--bf16] [--torch-bf16]

(b) is benchmarks/torch_ref.py; with --torch-bf16 the same loop also runs under bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scalefit.training import counting
from scalefit.training.config import ModelConfig, TrainConfig, get_preset
from scalefit.training.corpus import get_batch
from scalefit.training.optim import make_optimizer
from scalefit.training.loop import init_state, make_train_step

BATCH, SEQ = 16, 256


def model_cfg(d: int, n_layer: int) -> ModelConfig:
    """The size preset d<d>-l<L> (scalefit.training.config.PRESETS) at batch 16 x 256."""
    cfg = get_preset(f"d{d}-l{n_layer}")
    assert cfg.seq_len == SEQ and cfg.n_kv_head == cfg.n_head and not cfg.tie_embeddings
    return cfg


def _median_time(fn, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """f32 GFLOP/s of one n x n x n jnp.dot (2 n^3 FLOPs), median of reps."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    f = jax.jit(lambda x, y: x @ y)
    t = _median_time(lambda: f(a, a).block_until_ready(), reps)
    return 2 * n**3 / t / 1e9


def jax_stepper(cfg: ModelConfig, tokens: np.ndarray, n_batches: int = 8) -> Callable[[], None]:
    """A closure running one jitted AdamW training step (the step scalefit.training.loop runs) to completion."""
    tcfg = TrainConfig(batch_size=BATCH, tokens=1e12)
    tx = make_optimizer(tcfg, 1000)
    state = init_state(cfg, tx, 0)
    step = make_train_step(cfg, tx)
    batches = [get_batch(tokens, i, BATCH, SEQ, 0) for i in range(n_batches)]
    it = iter(range(10**9))

    def run():
        nonlocal state
        x, y = batches[next(it) % len(batches)]
        state, stats = step(state, x, y)
        stats["loss"].block_until_ready()

    return run


def jax_step_time(cfg: ModelConfig, steps: int, tokens: np.ndarray) -> float:
    """Median seconds of one jitted training step."""
    return _median_time(jax_stepper(cfg, tokens), steps)


def interleaved_ratio(fn_a, fn_b, steps: int) -> tuple[float, float]:
    """Median step times of two closures timed alternately, so load changes hit both alike."""
    for _ in range(2):
        fn_a(), fn_b()
    ta, tb = [], []
    for _ in range(steps):
        for fn, acc in ((fn_a, ta), (fn_b, tb)):
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def _step_times(fn, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def jax_step_times_subprocess(d: int, n_layer: int, steps: int, threads: int) -> list[float]:
    """Step times of the JAX step on ``threads`` cores, in a child process: XLA sizes its thread pool once,
    from the cores the process may use when its backend starts, so a thread count needs its own process."""
    cmd = [sys.executable, os.path.abspath(__file__), "--jax-child", f"{d}:{n_layer}",
           "--steps", str(steps), "--child-threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["times"]


def _jax_child(d: int, n_layer: int, steps: int, threads: int) -> None:
    """The --jax-child mode: pin to ``threads`` cores (when fewer than this process has) before the backend
    starts, then time the step and print the times as JSON."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if 0 < threads < len(cpus):
        os.sched_setaffinity(0, set(cpus[:threads]))
    from scalefit.training.corpus import load_corpus

    run = jax_stepper(model_cfg(d, n_layer), load_corpus().train)
    run(), run()  # compile and warm up
    print(json.dumps({"times": _step_times(run, steps)}))


def torch_step_times_subprocess(d: int, n_layer: int, steps: int, threads: list[int],
                                bf16: bool = False) -> dict[int, list[float]]:
    """Step times of the PyTorch reference at each thread count of ``threads`` (in that order, one
    process: starting a child per thread count cost more than the timing), run in a child process: in one
    process the two frameworks' spinning thread pools starve each other (torch measured 5-10x slower there)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-child", f"{d}:{n_layer}",
           "--steps", str(steps), "--child-threads", ",".join(map(str, threads))] + (["--torch-bf16"] if bf16 else [])
    # Passive OpenMP waits: on a shared machine spinning barriers with a descheduled partner
    # thread made 2-thread torch steps 2-10x slower and erratic.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return {int(th): times for th, times in out["times"].items()}


def torch_batches(tokens: np.ndarray, n_batches: int = 8) -> list:
    """The host batches both frameworks cycle through."""
    return [get_batch(tokens, i, BATCH, SEQ, 0) for i in range(n_batches)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round (median over all)")
    ap.add_argument("--sizes", default="128:4,256:4,384:6", help="d_model:n_layer pairs (presets)")
    ap.add_argument("--threads", type=int, help="threads of both frameworks (default: the faster of 1 and 2)")
    ap.add_argument("--moe-experts", type=int, default=8)
    ap.add_argument("--bf16", action="store_true",
                    help="also time JAX with bf16 matmul inputs (f32 accumulation)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating JAX/torch rounds per size")
    ap.add_argument("--torch-bf16", action="store_true",
                    help="also time the PyTorch loop under bf16 autocast (the stretch reference)")
    ap.add_argument("--torch-child", help=argparse.SUPPRESS)  # internal: d:L, time torch only
    ap.add_argument("--child-threads", help=argparse.SUPPRESS)  # internal: thread counts the child times
    ap.add_argument("--jax-child", help=argparse.SUPPRESS)  # internal: d:L, time the JAX step only
    args = ap.parse_args()
    if args.jax_child:
        d, n_layer = (int(v) for v in args.jax_child.split(":"))
        _jax_child(d, n_layer, args.steps, int(args.child_threads))
        return
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        torch_threads = [args.threads] if args.threads else [1, 2]
        torch_info = (f"torch {torch.__version__} (child process, best of {torch_threads} threads, "
                      "OMP_WAIT_POLICY=PASSIVE)")
        has_torch = True
    except ImportError:
        torch_info, has_torch = "torch not installed", False
    jax_threads = [args.threads] if args.threads else [1, 2]
    if args.torch_child:
        d, n_layer = (int(v) for v in args.torch_child.split(":"))
        from scalefit.training.corpus import load_corpus

        from torch_ref import torch_stepper  # beside this file

        run = torch_stepper(model_cfg(d, n_layer), torch_batches(load_corpus().train), bf16=args.torch_bf16)
        run()  # warm up: AdamW allocates its state on the first step
        times = {}
        for th in (int(v) for v in args.child_threads.split(",")):
            torch.set_num_threads(th)
            run()  # the pool at its new size
            times[th] = _step_times(run, args.steps)
        print(json.dumps({"times": times}))
        return
    from scalefit.training.corpus import load_corpus

    tokens = load_corpus().train
    peaks = [matmul_peak()]
    print(f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} cpus; {torch_info}; "
          f"load average at start {os.getloadavg()[0]:.1f} (above the cpu count, timings are shared)")
    print(f"batch {BATCH} x {SEQ} tokens, AdamW, f32; medians of {args.rounds} x {args.steps} steps, "
          f"JAX and torch rounds alternated so both see the same load; each at its faster of {jax_threads} "
          "threads (shown as (Nt))\n")
    print(f"{'model':>14} {'N_total':>9} {'MFLOP/tok':>9} {'jax tok/s':>11} {'jax GF/s':>9} "
          f"{'peak_frac':>9} {'torch tok/s':>11} {'torch GF/s':>10} {'jax/torch':>9}"
          + (f" {'jax bf16 GF/s':>13}" if args.bf16 else "")
          + (f" {'torch bf16 GF/s':>15} {'jax/torch16':>13}" if args.torch_bf16 else ""))
    rows = []
    for pair in args.sizes.split(","):
        d, n_layer = (int(v) for v in pair.split(":"))
        cfg = model_cfg(d, n_layer)
        fpt = counting.flops_per_token(cfg).exact
        # Alternate JAX and torch rounds so a change in the machine's load hits both.
        jt, tt = {th: [] for th in jax_threads}, {th: [] for th in (torch_threads if has_torch else [])}
        for r in range(args.rounds):
            for th in (jax_threads[::-1] if r % 2 else jax_threads):  # neither count always first
                jt[th] += jax_step_times_subprocess(d, n_layer, args.steps, th)
            if tt:
                order = list(tt)[::-1] if r % 2 else list(tt)
                for th, times in torch_step_times_subprocess(d, n_layer, args.steps, order).items():
                    tt[th] += times
        same = {th: statistics.median(tt[th]) / statistics.median(jt[th]) for th in jt if th in tt}
        # Each framework at its best thread count on this machine right now.
        tj, j_th = min((statistics.median(v), th) for th, v in jt.items())
        tt, t_th = min(((statistics.median(v), th) for th, v in tt.items()), default=(None, None))
        bf16_col, t16 = "", None
        if args.bf16:
            t16 = jax_step_time(cfg.with_overrides(compute_dtype="bfloat16"), args.steps, tokens)
            bf16_col = f" {fpt * BATCH * SEQ / t16 / 1e9:>13.1f}"
        vs_b = "NA"
        if args.torch_bf16 and tt is not None:
            tb = statistics.median(torch_step_times_subprocess(d, n_layer, args.steps * args.rounds, [t_th],
                                                               bf16=True)[t_th])
            vs_b = f"{tb / min(tj, t16 or tj):.2f}"  # the faster JAX step against torch's autocast loop
            bf16_col += f" {fpt * BATCH * SEQ / tb / 1e9:>15.1f} {vs_b:>13}"
        peaks.append(matmul_peak())
        peak = max(peaks)  # the best the machine showed so far: load only ever lowers it
        tps_j = BATCH * SEQ / tj
        gf_j = fpt * tps_j / 1e9
        if tt is None:
            t_cols, vs = f"{'NA':>11} {'NA':>10} {'NA':>9}", "NA"
        else:
            tps_t = BATCH * SEQ / tt
            vs = f"{tps_j / tps_t:.2f}"
            t_cols = f"{f'({t_th}t) {tps_t:.0f}':>11} {fpt * tps_t / 1e9:>10.1f} {vs:>9}"
        print(f"{f'd={d} L={n_layer}':>14} {counting.param_counts(cfg).total:>9d} {fpt / 1e6:>9.2f} "
              f"{f'({j_th}t) {tps_j:.0f}':>11} {gf_j:>9.1f} {gf_j / peak:>9.2f} {t_cols}" + bf16_col, flush=True)
        same_txt = ",".join(f"{th}t:{r:.2f}" for th, r in same.items()) or "NA"
        rows.append((d, n_layer, tps_j, gf_j, vs, vs_b, same_txt))

    # MoE: E experts, top-1, each expert as wide as the dense MLP -> same active parameters.
    dense = model_cfg(128, 4)
    moe = dense.with_overrides(n_expert=args.moe_experts, top_k=1)
    pc_d, pc_m = counting.param_counts(dense), counting.param_counts(moe)
    td, tm = interleaved_ratio(jax_stepper(dense, tokens), jax_stepper(moe, tokens), 2 * args.steps)
    ratio = tm / td
    print(f"\nMoE d=128 L=4 E={args.moe_experts} top-1 (active non-embedding N {pc_m.active}, total "
          f"{pc_m.total}) vs dense (N {pc_d.non_embedding}): time/token ratio {ratio:.2f} "
          f"(target <= 1.5); exact FLOP/token ratio "
          f"{counting.flops_per_token(moe).exact / counting.flops_per_token(dense).exact:.3f}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    peak = max(peaks)
    print(f"f32 matmul peak (2048^3 jnp.dot, best of {len(peaks)} measurements through the run: "
          f"{', '.join(f'{p:.0f}' for p in peaks)}): {peak:.1f} GFLOP/s; the table's peak_frac used "
          "the best so far at its row")
    for d, n_layer, tps_j, gf_j, vs, vs_b, same_txt in rows:
        print(f"bench_train d={d} L={n_layer} tokens_per_s={tps_j:.0f} gflops={gf_j:.1f} "
              f"peak_frac={gf_j / peak:.2f} vs_torch={vs} vs_torch_same_threads={same_txt}"
              + (f" vs_torch_bf16={vs_b}" if args.torch_bf16 else ""))
    print(f"bench_train moe E={args.moe_experts} top1 d=128 L=4 time_per_token_vs_dense={ratio:.2f}")


if __name__ == "__main__":
    main()
