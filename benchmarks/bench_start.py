"""Wall time of a fresh `scalefit fit chinchilla` (default options: fit, then its backtest) with an empty
JAX compilation cache and with a warm one, and of `scalefit --help`.

Each command runs in a new Python process, as a user's shell starts it, with the cache in a temporary
folder (`SCALEFIT_CACHE`, so the user's own cache is untouched). The reference, measured in the same run,
is the floor of a command that compiles anything: a process that only imports JAX and pandas and runs one
jitted op. A power-sum law's fit (Chinchilla's, `scalefit.fitting.varpro`) imports no JAX at all, so its
command can beat it (and writes no cache entries).

    python benchmarks/bench_start.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR = "import jax, jax.numpy as jnp, pandas; jax.jit(lambda x: x + 1)(jnp.ones(3)).block_until_ready()"


def wall(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="warm runs and --help runs (the best is reported)")
    args = ap.parse_args()
    fit = [sys.executable, "-m", "scalefit.cli", "fit", "chinchilla"]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "SCALEFIT_CACHE": cache, "PYTHONPATH": str(ROOT)}
        for k in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
            env.pop(k, None)
        floor = min(wall([sys.executable, "-c", FLOOR], env) for _ in range(args.repeats))
        cold = wall(fit, env)
        entries = sum(1 for _ in Path(cache, "jax").iterdir()) if Path(cache, "jax").is_dir() else 0
        warm = min(wall(fit, env) for _ in range(args.repeats))
        help_ = min(wall([sys.executable, "-m", "scalefit.cli", "--help"], env) for _ in range(args.repeats))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"reference (import jax + pandas, one jitted op): {floor:.2f} s")
    print(f"scalefit fit chinchilla, empty compile cache: {cold:.2f} s ({entries} cache entries written)")
    print(f"scalefit fit chinchilla, warm compile cache: {warm:.2f} s (best of {args.repeats})")
    print(f"scalefit --help: {help_:.2f} s (best of {args.repeats}); load average {load:.2f} on {os.cpu_count()} cores")
    print(f"bench_start cold_seconds={cold:.2f} warm_seconds={warm:.2f} help_seconds={help_:.2f} "
          f"floor_seconds={floor:.2f} load={load:.2f}")


if __name__ == "__main__":
    main()
