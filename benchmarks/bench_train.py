"""Training-step throughput of scalefit's JAX trainer beside two references measured in the same run.

For each size (batch 16 x 256 tokens, AdamW, f32): tokens/s and model GFLOP/s (exact count:
forward+backward matmuls incl. attention and the output layer, scalefit.counting) of one jitted
training step, as a fraction of

  (a) this machine's f32 matmul peak (a 2048^3 jnp.dot, measured now), and
  (b) a plain PyTorch eager loop of the same model (RMSNorm, RoPE, causal attention, SwiGLU, AdamW),
      when torch is importable.

Then an MoE line: E experts with top-1 routing against the dense model with the same active
parameters (time per token ratio; a well-implemented top-1 MoE should cost <= 1.5x).

Figures are medians over timed steps; the machine may be shared, so expect +-15%.

    python3 benchmarks/bench_train.py [--steps 5] [--sizes 128:4,256:4,384:6] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scalefit import counting
from scalefit.config import ModelConfig, TrainConfig, get_preset
from scalefit.data import get_batch
from scalefit.schedules import make_optimizer
from scalefit.train import init_state, make_train_step

BATCH, SEQ = 16, 256


def model_cfg(d: int, n_layer: int) -> ModelConfig:
    """The size preset d<d>-l<L> (scalefit.config.PRESETS) at batch 16 x 256."""
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
    """A closure running one jitted AdamW training step (the step scalefit.train runs) to completion."""
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


def torch_step_time(cfg: ModelConfig, steps: int, tokens: np.ndarray) -> float | None:
    """Median seconds of the same model and optimizer step in plain PyTorch eager (f32); None
    without torch."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.manual_seed(0)
    d, L, h, f, V = cfg.d_model, cfg.n_layer, cfg.n_head, cfg.d_ff, cfg.vocab_size
    hd = d // h

    def p(*shape, std):
        return torch.nn.Parameter(torch.randn(*shape) * std)

    params = {"embed": p(V, d, std=0.02), "unembed": p(d, V, std=0.02),
              "final_norm": torch.nn.Parameter(torch.ones(d))}
    layers = []
    for _ in range(L):
        lay = {"attn_norm": torch.nn.Parameter(torch.ones(d)), "mlp_norm": torch.nn.Parameter(torch.ones(d)),
               "wqkv": p(d, 3 * d, std=d**-0.5), "wo": p(d, d, std=(2 * L * d) ** -0.5),
               "w_in": p(d, 2 * f, std=d**-0.5), "w_out": p(f, d, std=(2 * L * f) ** -0.5)}
        layers.append(lay)
    all_params = list(params.values()) + [v for lay in layers for v in lay.values()]
    inv = cfg.rope_base ** (-torch.arange(0, hd // 2, dtype=torch.float64) * 2 / hd)
    ang = torch.arange(SEQ, dtype=torch.float64)[:, None] * inv[None]  # [T, hd/2]
    cos, sin = ang.cos().float()[None, None], ang.sin().float()[None, None]  # [1, 1, T, hd/2]

    def rms(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * g

    def rope(x):  # x [B, H, T, hd], rotate-half layout
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)

    def loss_fn(x, y):
        b, t = x.shape
        z = F.embedding(x.reshape(-1), params["embed"])  # [B*T, d]
        for lay in layers:
            qkv = (rms(z, lay["attn_norm"]) @ lay["wqkv"]).view(b, t, 3, h, hd).permute(2, 0, 3, 1, 4)
            q, k, v = rope(qkv[0]), rope(qkv[1]), qkv[2]  # each [B, H, T, hd]
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, hd]
            z = z + a.transpose(1, 2).reshape(b * t, d) @ lay["wo"]
            hid = rms(z, lay["mlp_norm"]) @ lay["w_in"]  # [B*T, 2F]
            z = z + (F.silu(hid[:, :f]) * hid[:, f:]) @ lay["w_out"]
        logits = rms(z, params["final_norm"]) @ params["unembed"]  # [B*T, V]
        return F.cross_entropy(logits, y.reshape(-1))

    opt = torch.optim.AdamW(all_params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    batches = [tuple(torch.from_numpy(a.astype(np.int64)) for a in get_batch(tokens, i, BATCH, SEQ, 0))
               for i in range(steps + 2)]
    it = iter(range(10**9))

    def run():
        x, y = batches[next(it) % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(all_params, 1.0)
        opt.step()

    return _median_time(run, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median)")
    ap.add_argument("--sizes", default="128:4,256:4,384:6", help="d_model:n_layer pairs (presets)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--moe-experts", type=int, default=8)
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(args.threads)
        torch_info = f"torch {torch.__version__} ({args.threads} threads)"
    except ImportError:
        torch_info = "torch not installed"
    from scalefit.data import load_corpus

    tokens = load_corpus().train
    peak = matmul_peak()
    print(f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} cpus; {torch_info}; "
          f"load average at start {os.getloadavg()[0]:.1f} (above the cpu count, timings are shared)")
    print(f"f32 matmul peak (2048^3 jnp.dot): {peak:.1f} GFLOP/s")
    print(f"batch {BATCH} x {SEQ} tokens, AdamW, f32; medians of {args.steps} steps\n")
    print(f"{'model':>14} {'N_total':>9} {'MFLOP/tok':>9} {'jax tok/s':>10} {'jax GF/s':>9} "
          f"{'peak_frac':>9} {'torch tok/s':>11} {'torch GF/s':>10} {'jax/torch':>9}")
    finals = []
    for pair in args.sizes.split(","):
        d, n_layer = (int(v) for v in pair.split(":"))
        cfg = model_cfg(d, n_layer)
        fpt = counting.flops_per_token(cfg).exact
        tj = jax_step_time(cfg, args.steps, tokens)
        tt = torch_step_time(cfg, args.steps, tokens)
        tps_j = BATCH * SEQ / tj
        gf_j = fpt * tps_j / 1e9
        if tt is None:
            t_cols, vs = f"{'NA':>11} {'NA':>10} {'NA':>9}", "NA"
        else:
            tps_t = BATCH * SEQ / tt
            vs = f"{tps_j / tps_t:.2f}"
            t_cols = f"{tps_t:>11.0f} {fpt * tps_t / 1e9:>10.1f} {vs:>9}"
        print(f"{f'd={d} L={n_layer}':>14} {counting.param_counts(cfg).total:>9d} {fpt / 1e6:>9.2f} "
              f"{tps_j:>10.0f} {gf_j:>9.1f} {gf_j / peak:>9.2f} {t_cols}", flush=True)
        finals.append(f"bench_train d={d} L={n_layer} tokens_per_s={tps_j:.0f} gflops={gf_j:.1f} "
                      f"peak_frac={gf_j / peak:.2f} vs_torch={vs}")

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
    for line in finals:
        print(line)
    print(f"bench_train moe E={args.moe_experts} top1 d=128 L=4 time_per_token_vs_dense={ratio:.2f}")


if __name__ == "__main__":
    main()
