"""Forecasts of each shipped sweep's natural future: `law="auto"` against the plain fit, and coverage.

For every shipped dataset with a natural future, fit on its past only and forecast the held-out runs:

* chinchilla: Chinchilla/Epoch's 240 runs, the top 15% by C held out;
* cerebras: Cerebras-GPT 6.7B and 13B from 111M-2.7B;
* datablations: Muennighoff et al.'s runs, the top 15% by C held out (the largest-compute runs, most of
  them repeating their unique data);
* porian_isoflop: each of Porian et al.'s 15 configurations separately (their N conventions differ), its
  largest budget held out;
* quickstart: this project's 16 quickstart runs (tests/data/quickstart), the largest budget (4 runs
  above C = 2.7e12, exact FLOPs) held out; non-embedding N is there as a second N column;
* clark_dense: Clark et al. 2022's dense runs, 1.3B from those up to 370M. Every run trained the same
  249,000 steps: D is given as that step count (the same for every run; tokens per step do not enter a
  law in N), so the plain fit is the saturating power law in N.

The plain fit is what a newcomer would run: Chinchilla, Huber delta 1e-3, Hoffmann's grid, the set's own N
(total where it has one); on clark_dense the saturating power law in N. `auto` chooses by leave-future-out
cross-validation on the fitted rows only, with the same settings for every set, and calibrates its
intervals on those rows' errors. Printed: mean and max |relative error| of the forecasts, the share of
held-out runs inside the 90% interval (auto: calibrated; plain: bootstrap + scatter), per set and pooled
over every held-out run; then the cold-start time of `scalefit fit chinchilla --law auto` beside the plain
`scalefit fit chinchilla`, each in a fresh process with an empty compilation cache.

    python benchmarks/bench_extrapolation.py [--bootstrap 100] [--sets chinchilla,cerebras] [--no-timing]

Ends with `bench_extrapolation set=NAME mean_err=... max_err=... plain_mean_err=... plain_max_err=...
coverage90=...` per set, `set=pooled` last (errors as fractions).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtri

from scalefit.analysis.backtest import holdout_split
from scalefit.fitting import datasets
from scalefit.fitting.fitter import fit
from scalefit.fitting.solver import multistart
from scalefit.fitting.table import FitTable, load_table

ROOT = Path(__file__).resolve().parent.parent
LEVEL = 0.9


def _split(table: FitTable, held: np.ndarray, note: str) -> tuple[FitTable, FitTable]:
    return table.subset(~held, f"fitted part: {note}"), table.subset(held, f"held out: {note}")


def chinchilla():
    t = load_table("chinchilla")
    held, rule, _ = holdout_split(t.frame, 0.15)
    yield "chinchilla", *_split(t, held, rule), "chinchilla"


def cerebras():
    t = load_table("cerebras")
    held = t.frame["N"].to_numpy() > 3e9
    yield "cerebras", *_split(t, held, "6.7B and 13B held out"), "chinchilla"


def datablations():
    t = load_table("datablations")
    held, rule, _ = holdout_split(t.frame, 0.15)
    yield "datablations", *_split(t, held, rule), "chinchilla"


def porian_isoflop():
    df = datasets.load("porian_isoflop")
    for cfg, part in df.groupby("cfg_id", sort=True):
        kind = "non-embedding" if part["param_count"].iloc[0] == "kaplan" else "total"
        frame = part[["N", "D", "C", "loss", "run"]].copy()
        frame.attrs = {}
        t = load_table(frame, n_kind=kind, c_kind="6ND")
        top = t.frame["C"].max()
        held = t.frame["C"].to_numpy() >= top / 1.1
        yield f"porian_isoflop:{cfg}", *_split(t, held, f"{cfg}: largest budget held out"), "chinchilla"


def quickstart():
    t = load_table(ROOT / "tests" / "data" / "quickstart" / "runs.csv", n_col="N_total", c_col="C_exact",
                   loss_col="final_eval_loss", run_col="run_id", c_kind="exact", keep=["N_non_embedding"])
    held = t.frame["C"].to_numpy() > 2.7e12
    yield "quickstart", *_split(t, held, "largest budget (C > 2.7e12) held out"), "chinchilla"


def clark_dense():
    df = datasets.load("clark_routing")
    dense = df[df["router_type"] == "Dense"]
    assert dense["step"].nunique() == 1, "every dense run trains the same steps"
    frame = pd.DataFrame({"N": dense["N"], "D": dense["step"].astype(float), "C": dense["C"],
                          "loss": dense["loss"], "run": dense["run"]})
    t = load_table(frame, n_kind="active", c_kind="reported")
    held = t.frame["N"].to_numpy() > 1e9
    yield "clark_dense", *_split(t, held, "1.3B from up to 370M"), "power_n"


SETS = {"chinchilla": chinchilla, "cerebras": cerebras, "datablations": datablations,
        "porian_isoflop": porian_isoflop, "quickstart": quickstart, "clark_dense": clark_dense}


def forecast_rows(result, test: FitTable, train: FitTable | None = None) -> pd.DataFrame:
    """Point forecast and 90% interval of `result` at each held-out row, with its observed loss.

    A plain fit whose reported parameters overflow (Chinchilla on Cerebras' five runs sends B to e^1590)
    predicts NaN from them; its forecast is then taken in the fit space itself, from the same solver on
    `train`, as a plain scipy fit would give it (the interval is then exp(+-z sigma) around it)."""
    frame = test.frame
    if result.n_kind != test.n_kind:  # the chosen candidate read another N column
        col = result.n_kind.store_column
        frame = test.with_n(col, result.n_kind).frame
    iv = result.predict(LEVEL, **{c: frame[c].to_numpy(float) for c in result.law.inputs})
    pred, low, high = iv.loss, iv.low, iv.high
    if train is not None and not np.all(np.isfinite(pred)):
        law, f = result.law, train.frame
        logx = np.log(np.stack([f[c].to_numpy(float) for c in law.inputs]))
        ms = multistart(law, logx, np.log(f["loss"].to_numpy(float)), f["weight"].to_numpy(float))
        pred = np.exp(law.log_loss_many(ms.best, np.log(np.stack([frame[c].to_numpy(float)
                                                                   for c in law.inputs])))[0])
        z = float(ndtri(0.5 + LEVEL / 2))
        low, high = pred * np.exp(-z * result.sigma), pred * np.exp(z * result.sigma)
    obs = frame["loss"].to_numpy(float)
    return pd.DataFrame({"obs": obs, "pred": pred, "low": low, "high": high, "err": np.abs(pred - obs) / obs,
                         "inside": (obs >= low) & (obs <= high)})


def run_set(name, train, test, plain_law, bootstrap: int, seed: int):
    t0 = time.perf_counter()
    plain = fit(train, plain_law, bootstrap_resamples=bootstrap, seed=seed)
    auto = fit(train, "auto", bootstrap_resamples=bootstrap, seed=seed)
    p, a = forecast_rows(plain, test, train), forecast_rows(auto, test)
    return {"name": name, "plain": p, "auto": a, "chosen": auto.selection.chosen, "plain_status": str(plain.status),
            "n_fit": train.frame["run"].nunique(), "n_held": len(test.frame), "seconds": time.perf_counter() - t0}


def cold_seconds(args: list[str]) -> float:
    """Wall time of `python -m scalefit.cli ARGS` in a fresh process with an empty JAX compilation cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_COMPILATION_CACHE_DIR=cache)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "scalefit.cli", *args], cwd=ROOT, env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples of both fits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated subset of " + ", ".join(SETS))
    ap.add_argument("--no-timing", action="store_true", help="skip the cold-start timing of the CLI")
    args = ap.parse_args()

    groups: dict[str, list] = {}
    for key in args.sets.split(","):
        for name, train, test, plain_law in SETS[key]():
            r = run_set(name, train, test, plain_law, args.bootstrap, args.seed)
            groups.setdefault(key, []).append(r)
            print(f"{name}: fit {r['n_fit']} runs, forecast {r['n_held']}; plain ({plain_law}, {r['plain_status']}) "
                  f"mean {r['plain']['err'].mean():.2%} max {r['plain']['err'].max():.2%} cov90 "
                  f"{r['plain']['inside'].mean():.0%}; auto [{r['chosen']}] mean {r['auto']['err'].mean():.2%} "
                  f"max {r['auto']['err'].max():.2%} cov90 {r['auto']['inside'].mean():.0%} ({r['seconds']:.1f} s)",
                  flush=True)

    summary = []
    for key, rs in groups.items():
        plain = pd.concat([r["plain"] for r in rs])
        auto = pd.concat([r["auto"] for r in rs])
        summary.append((key, auto, plain))
    pooled_auto = pd.concat([a for _, a, _ in summary])
    pooled_plain = pd.concat([p for _, _, p in summary])
    summary.append(("pooled", pooled_auto, pooled_plain))

    print(f"\n{'set':<16}{'rows':>5}{'auto mean':>11}{'auto max':>10}{'plain mean':>12}{'plain max':>11}"
          f"{'ratio':>7}{'cov90 auto':>12}{'cov90 plain':>12}")
    for key, a, p in summary:
        print(f"{key:<16}{len(a):>5}{a['err'].mean():>11.2%}{a['err'].max():>10.2%}{p['err'].mean():>12.2%}"
              f"{p['err'].max():>11.2%}{a['err'].mean() / p['err'].mean():>7.2f}{a['inside'].mean():>12.0%}"
              f"{p['inside'].mean():>12.0%}")

    if not args.no_timing:
        load = os.getloadavg()
        plain_s = cold_seconds(["fit", "chinchilla"])
        auto_s = cold_seconds(["fit", "chinchilla", "--law", "auto"])
        print(f"\ncold start (fresh process, empty compilation cache; load average {load[0]:.2f}, {os.cpu_count()} "
              f"CPUs): scalefit fit chinchilla --law auto {auto_s:.1f} s, plain scalefit fit chinchilla "
              f"{plain_s:.1f} s (both with the default backtest)")
    print()
    for key, a, p in summary:
        print(f"bench_extrapolation set={key} mean_err={a['err'].mean():.4f} max_err={a['err'].max():.4f} "
              f"plain_mean_err={p['err'].mean():.4f} plain_max_err={p['err'].max():.4f} "
              f"coverage90={a['inside'].mean():.2f}")


if __name__ == "__main__":
    main()
