"""The trainer on one accelerator: tokens/s, model FLOP/s and MFU beside PyTorch, one framework per process.

Run by benchmarks/gpu_check.sh, which calls it three times: ``--part jax`` (scalefit's jitted train step,
bf16 matmuls with f32 master weights, attention kernel "auto": cuDNN's fused attention on NVIDIA GPUs),
``--part torch`` (benchmarks/torch_ref.py: the same model under bf16 autocast, `torch.compile`, SDPA
attention, fused AdamW) and ``--part report`` (the table). Each part measures the bf16 matmul peak of the
device in its own process (an 8192^3 matmul, bf16 inputs; the best of several), and the report divides by
the higher of the two: MFU = model FLOP/s / measured peak, model FLOPs = `counting.flops_per_token`'s exact
count (matmuls incl. the full T x T attention scores, forward + backward: 6N + 12 L T d per token).

Each part prints a JSON line after every size (the report reads the last, so a part stopped by its time
limit still reports what it finished); it stops starting sizes when its budget (--budget-s) runs low and
says which it skipped. ``--tiny`` runs a CPU-sized version of everything (logic check, not a benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

# (d_model, n_layer, n_head, seq_len, batch): d=512 to d=2048 at sequence 1024-2048.
SIZES = [(512, 8, 8, 1024, 32), (1024, 8, 16, 2048, 16), (2048, 8, 16, 2048, 8)]
TINY = [(64, 2, 2, 128, 4), (128, 2, 2, 256, 2)]


def model_cfg(d: int, n_layer: int, n_head: int, seq: int):
    from scalefit.training.config import ModelConfig, swiglu_width

    return ModelConfig(seq_len=seq, d_model=d, n_layer=n_layer, n_head=n_head, n_kv_head=n_head,
                       d_ff=swiglu_width(d), compute_dtype="bfloat16")


def batches(seq: int, batch: int, n: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random byte tokens (speed does not depend on the text)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        x = rng.integers(0, 256, (batch, seq + 1), dtype=np.int32)
        out.append((x[:, :-1], x[:, 1:]))
    return out


def timed(run, steps: int, warmup: int) -> tuple[float, float]:
    """(seconds of the first call: compile + step, median seconds per step after ``warmup`` calls)."""
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        run()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def jax_part(sizes, steps: int, budget: float, tiny: bool) -> dict:
    import jax
    import jax.numpy as jnp

    from scalefit.training.config import TrainConfig
    from scalefit.training.loop import init_state, make_train_step
    from scalefit.training.optim import make_optimizer
    from scalefit.training.parallel import single_device

    t_start = time.perf_counter()
    n = 512 if tiny else 8192
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.bfloat16)
    mm = jax.jit(lambda x, y: x @ y)
    peak = max(2 * n**3 / timed(lambda: mm(a, a).block_until_ready(), 10, 3)[1] for _ in range(3))
    res = {"framework": f"jax {jax.__version__}", "device": str(jax.devices()[0]), "peak": peak, "sizes": {}}
    print(json.dumps(res), flush=True)
    for d, n_layer, n_head, seq, batch in sizes:
        key = f"d={d} L={n_layer} T={seq} B={batch}"
        if time.perf_counter() - t_start > 0.55 * budget:
            res["sizes"][key] = {"skipped": "time budget"}
            continue
        cfg = model_cfg(d, n_layer, n_head, seq)
        tx = make_optimizer(TrainConfig(batch_size=batch, tokens=1e12))
        place = single_device(cfg)
        state = init_state(cfg, tx, 0, place)
        step = make_train_step(cfg, tx, place)
        data = [(place.put_batch(x), place.put_batch(y)) for x, y in batches(seq, batch)]
        lr = np.float32(1e-4)
        it = iter(range(10**12))

        def run():
            nonlocal state
            x, y = data[next(it) % len(data)]
            state, stats = step(state, x, y, lr)
            float(stats["ce"])  # the trainer's one host sync per step

        first, t = timed(run, steps, 2)
        res["sizes"][key] = {"step_s": t, "first_s": first, "tokens": batch * seq, "attention": place.attention}
        print(json.dumps(res), flush=True)  # what is done so far, should the part be stopped
        del state, data
    return res


def torch_part(sizes, steps: int, budget: float, tiny: bool) -> dict:
    try:
        import torch
    except ImportError:
        return {"framework": "torch not installed"}
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_ref import torch_stepper

    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = 512 if tiny else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def mm():
        a @ a
        sync()

    peak = max(2 * n**3 / timed(mm, 10, 3)[1] for _ in range(3))
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    res = {"framework": f"torch {torch.__version__}", "device": name, "peak": peak, "sizes": {}}
    print(json.dumps(res), flush=True)
    for d, n_layer, n_head, seq, batch in sizes:
        key = f"d={d} L={n_layer} T={seq} B={batch}"
        if time.perf_counter() - t_start > 0.55 * budget:
            res["sizes"][key] = {"skipped": "time budget"}
            continue
        cfg = model_cfg(d, n_layer, n_head, seq)
        # --tiny checks the logic on a CPU, where torch.compile alone takes minutes: eager there.
        run = torch_stepper(cfg, batches(seq, batch), device=device, bf16=True, compile=not tiny)
        first, t = timed(run, steps, 3)
        res["sizes"][key] = {"step_s": t, "first_s": first, "tokens": batch * seq}
        print(json.dumps(res), flush=True)
        del run
        if device == "cuda":
            torch.cuda.empty_cache()
    return res


def report(files: list[str], sizes) -> None:
    from scalefit.training import counting

    parts = {}
    for f in files:
        try:
            with open(f) as fh:
                r = json.loads(fh.read().strip().splitlines()[-1])
            parts[r["framework"].split()[0]] = r
        except (OSError, ValueError, IndexError, KeyError) as e:
            print(f"{f}: no result ({e})")
    jx, tr = parts.get("jax"), parts.get("torch")
    peaks = [p["peak"] for p in (jx, tr) if p and "peak" in p]
    if not jx or not peaks:
        print("gpu_check: the JAX part gave no result")
        return
    peak = max(peaks)
    print(f"{jx['framework']} on {jx['device']}; {tr['framework'] if tr else 'torch: no result'}")
    print(f"bf16 matmul peak measured here: {peak / 1e12:.1f} TFLOP/s (jax {jx['peak'] / 1e12:.1f}"
          + (f", torch {tr['peak'] / 1e12:.1f}" if tr and "peak" in tr else "") + ")")
    print(f"{'size':>26} {'attention':>9} {'jax tok/s':>11} {'jax TF/s':>9} {'jax MFU':>8} {'compile s':>9} "
          f"{'torch tok/s':>11} {'torch TF/s':>10} {'torch MFU':>9} {'jax/torch':>9}")
    keys = []
    for d, n_layer, n_head, seq, batch in sizes:
        key = f"d={d} L={n_layer} T={seq} B={batch}"
        j = jx["sizes"].get(key, {})
        t = (tr or {}).get("sizes", {}).get(key, {})
        if "step_s" not in j:
            print(f"{key:>26} jax: {j.get('skipped', 'no result')}")
            continue
        fpt = counting.flops_per_token(model_cfg(d, n_layer, n_head, seq)).exact
        tps_j = j["tokens"] / j["step_s"]
        mfu_j = fpt * tps_j / peak
        if "step_s" in t:
            tps_t = t["tokens"] / t["step_s"]
            tcols = f"{tps_t:>11.0f} {fpt * tps_t / 1e12:>10.1f} {fpt * tps_t / peak:>9.1%} {tps_j / tps_t:>9.2f}"
            vs = f"{tps_j / tps_t:.2f}"
        else:
            tcols, vs = f"{t.get('skipped', 'NA'):>11}", "NA"
        print(f"{key:>26} {j['attention']:>9} {tps_j:>11.0f} {fpt * tps_j / 1e12:>9.1f} {mfu_j:>8.1%} "
              f"{j['first_s']:>9.1f} {tcols}")
        keys.append(f"gpu_check d={d} seq={seq} tokens_per_s={tps_j:.0f} tflops={fpt * tps_j / 1e12:.1f} "
                    f"mfu={mfu_j:.3f} vs_torch={vs}")
    print(f"gpu_check peak_bf16_tflops={peak / 1e12:.1f}")
    for line in keys:
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["jax", "torch", "report"], required=True)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per size (median)")
    ap.add_argument("--budget-s", type=float, default=200.0, help="seconds this part may take")
    ap.add_argument("--tiny", action="store_true", help="CPU-sized shapes: check the logic, not the speed")
    ap.add_argument("files", nargs="*", help="report: the parts' outputs")
    args = ap.parse_args()
    sizes = TINY if args.tiny else SIZES
    if args.part == "report":
        report(args.files, sizes)
        return
    part = jax_part if args.part == "jax" else torch_part
    print(json.dumps(part(sizes, 2 if args.tiny else args.steps, args.budget_s, args.tiny)))


if __name__ == "__main__":
    main()
